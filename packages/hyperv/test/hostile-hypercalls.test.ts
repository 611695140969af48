import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { newWalkResult, NO_PASID, Perm, unwrap } from "@viommu/core";
import { caseSupport, Testbed, type TestVm } from "@viommu/conformance";
import { HV_DEVICE_DOMAIN_ID_NULL, HvDeviceDomainType } from "../src/format/device-domain.js";
import { ioapicDeviceId, logicalDeviceId, pciDeviceId } from "../src/format/device-id.js";
import { vpSetVariableHeader } from "../src/format/device-interrupt-target.js";
import { HvStatus, hvStatusName } from "../src/format/hv-status.js";
import { decodeHypercallInput, encodeHypercallInput } from "../src/format/hypercall-input.js";
import { decodeHypercallResult } from "../src/format/hypercall-result.js";
import { encodeHypercall, HV_PARTITION_ID_SELF, hvAttachDeviceDomain, hvCreateDeviceDomain, hvMapDeviceGpaPages, hypercallByCode, hypervHypercalls, type HypercallSpec } from "../src/format/hypercalls.js";
import type { HypervGuestDriver } from "../src/guest/hyperv-driver.js";
import { hypervPlugin } from "../src/plugin.js";
import type { HypervDevice } from "../src/vmm/hyperv-device.js";
import { assertProperty } from "./fuzz-seed.js";
import { dd, rawCall } from "./support.js";

const { memoryDigest } = caseSupport;
const RAM = 2 ** 30;
const IOVA = 0x10_0000;
const DATA = 0x1000_0000;
const S2_DOMAIN = 300;
const S2_IOVA = 0x4000_0000;
const U64 = (1n << 64n) - 1n;
const S2 = HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2;

interface World {
  readonly bed: Testbed;
  readonly a: TestVm;
  readonly b: TestVm;
  /** Ids a hostile guest aims at: its own domains, the predefined ones. */
  readonly domains: readonly number[];
  readonly root: number;
  /** A's pvIOMMU state, its guest memory and its iommufd objects (without a pvIOMMU) after the setup. */
  readonly saved: Uint8Array;
  readonly memory: ReadonlyMap<number, Uint8Array>;
  readonly objects: string;
}

/**
 * VM A (80 vCPUs, two passthrough devices, a paging domain, a stage-2 domain with an emulated device, an interrupt
 * entry) is the hostile guest; VM B (its own domain and data) must not change whatever A's hypercalls say.
 */
function world(): World {
  const bed = unwrap(
    Testbed.create({
      plugin: hypervPlugin,
      vms: [
        { devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x208, guestRid: 0x18 }], memoryBytes: RAM, vcpus: 80 },
        { devices: [{ rid: 0x300, guestRid: 0x10 }], memoryBytes: RAM },
      ],
    }),
  );
  const [a, b] = [bed.vms[0]!, bed.vms[1]!];
  const da = (a.drivers[0] as HypervGuestDriver);
  const d = unwrap(da.createDomain());
  unwrap(da.attach(0x10, d));
  unwrap(da.map(d, IOVA, DATA, 0x4000, Perm.ReadWrite));
  unwrap(da.mapInterrupt(0x18, 0x40, 7));
  expect(rawCall(a, hvCreateDeviceDomain, { input: { device_domain: dd(S2_DOMAIN, S2) } }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
  const reps = [0, 1, 5].map((i) => ({ gpa_page_number: BigInt(DATA / 4096 + i) }));
  expect(rawCall(a, hvMapDeviceGpaPages, { input: { device_domain: dd(S2_DOMAIN, S2), map_flags: { READABLE: 1 }, target_device_va_base: BigInt(S2_IOVA) }, reps }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
  expect(rawCall(a, hvAttachDeviceDomain, { input: { device_domain: dd(S2_DOMAIN, S2), device_id: logicalDeviceId(0x22) } }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
  const db = b.drivers[0] as HypervGuestDriver;
  const own = unwrap(db.createDomain());
  unwrap(db.attach(0x10, own));
  unwrap(db.map(own, IOVA, DATA, 0x2000, Perm.ReadWrite));
  b.vm.memory.writeBytes(DATA, Uint8Array.from({ length: 64 }, (_, i) => i ^ 0x5a));
  const iommu = a.iommus[0] as HypervDevice;
  const paging = iommu.partition.domains!.get(d)!.config;
  const statics = da.staticDomains();
  const saved = iommu.save();
  const memory = new Map([...a.vm.memory.writtenPages()].map((page) => [page, a.vm.memory.readBytes(page, 4096)]));
  iommu.destroy();
  const objects = objectsOf(a);
  const w = { bed, a, b, domains: [d, S2_DOMAIN, statics.identity!, statics.blocking!, 0, HV_DEVICE_DOMAIN_ID_NULL], root: paging.kind === "paging" ? paging.root : 0, saved, memory, objects };
  reset(w);
  return w;
}

function objectsOf(v: TestVm): string {
  return v.iommufd.list().map((o) => `${o.type} ${o.id}`).join();
}

/**
 * Puts VM A back as the setup left it, cheaply: its pvIOMMU destroyed (which must free every iommufd object the
 * hostile calls made the host create) and restored from the setup's save, its guest memory rewritten.
 */
function reset(w: World): void {
  const a = w.a;
  const options = a.iommus[0]!.options;
  for (const iommu of a.iommus) iommu.destroy();
  expect(objectsOf(a)).toBe(w.objects);
  const zero = new Uint8Array(4096);
  for (const page of a.vm.memory.writtenPages()) a.vm.memory.writeBytes(page, w.memory.get(page) ?? zero);
  const fresh = unwrap(hypervPlugin.createDevice(options)) as HypervDevice;
  for (const d of a.devices) unwrap(fresh.assignDevice(d.device, d.devId, d.guestRid));
  unwrap(fresh.restore(w.saved));
  a.iommus[0] = fresh;
  a.vm.interrupts.take();
}

/** What B's device translates, and what it reads there. */
function seenByB(b: TestVm): string {
  const out = newWalkResult();
  const dev = b.devices[0]!.device;
  const walks = [IOVA, IOVA + 0x1000, IOVA + 0x2000, DATA].map((iova) => (dev.translate(iova, true, NO_PASID, out).ok ? `${out.output}/${out.perms}` : "fault"));
  const r = dev.read(IOVA, 64);
  return `${walks.join()} ${r.ok ? [...r.data].join(".") : "fault"}`;
}

const u64 = fc.bigInt({ min: 0n, max: U64 });
/** GPAs at the edges: inside, at the last bytes and page of RAM, at its end, beyond 2^53, negative, misaligned. */
const gpa = fc.oneof(
  { weight: 24, arbitrary: fc.constant(0x8000) },
  fc.constantFrom(RAM - 8, RAM - 24, RAM - 0x1000, RAM - 0xff8, RAM, RAM + 8, 2 ** 53 - 8, 2 ** 53, 2 ** 53 + 2, 2 ** 53 + 8, 2 ** 60, 2 ** 64, -8, 4, 0, 0x8ffc),
  fc.nat(RAM / 8 - 1).map((x) => x * 8),
);
/** Frame numbers and addresses a MAP/UNMAP or CONFIGURE names: real pages, the edges of RAM, 2^41/2^52/2^53 and any u64. */
const frame = fc.oneof(
  { weight: 3, arbitrary: fc.bigInt({ min: BigInt(DATA / 4096 - 64), max: BigInt(DATA / 4096 + 64) }) },
  fc.constantFrom(BigInt(DATA / 4096), BigInt(RAM / 4096 - 1), BigInt(RAM / 4096), 2n ** 41n - 1n, 2n ** 41n, 2n ** 52n - 1n, 2n ** 52n, 2n ** 53n, U64),
  fc.bigInt({ min: 0n, max: BigInt(RAM / 4096 + 16) }),
  u64,
);
const address = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(BigInt(IOVA), BigInt(S2_IOVA)).chain((base) => fc.nat(64).map((p) => base + BigInt(p) * 4096n)) },
  fc.constantFrom(BigInt(IOVA), BigInt(S2_IOVA), 0n, BigInt(RAM - 4096), BigInt(RAM), 2n ** 52n - 4096n, 2n ** 53n - 4096n, 2n ** 53n, 2n ** 53n + 4096n, 2n ** 64n - 4096n),
  fc.bigInt({ min: 0n, max: 2n ** 40n }).map((x) => x * 4096n),
  u64,
);
const fields = fc.record({
  domain: fc.oneof({ weight: 6, arbitrary: fc.nat(5) }, fc.integer({ min: 0, max: 0xffffffff }).map((x) => -1 - x)),
  /** -1: the type the named domain has. */
  type: fc.oneof({ weight: 6, arbitrary: fc.constant(-1) }, fc.constantFrom(0, 1), fc.nat(15)),
  device: fc.oneof(
    fc.constantFrom(0x10, 0x18, 0x22, 0x11).map((r) => logicalDeviceId(r)),
    fc.constantFrom(pciDeviceId({ bus: 0, device: 2, function: 0 }), pciDeviceId({ bus: 0, device: 3, function: 0 }), ioapicDeviceId(1)),
    u64,
  ),
  partition: fc.oneof({ weight: 8, arbitrary: fc.constant(HV_PARTITION_ID_SELF) }, fc.constant(-1n), fc.constant(0n), u64),
  frame,
  base: address,
  /** -1: the setup's own table; -2: 8 bytes into it; then roots just outside RAM, and any address. */
  root: fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(-1n, -2n) },
    { weight: 3, arbitrary: fc.constantFrom(BigInt(RAM), BigInt(RAM + 4096), 2n ** 40n, 2n ** 52n - 4096n, 2n ** 52n, 2n ** 53n) },
    address,
  ),
  flags: fc.nat(0xffff),
  reps: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.constant(500)),
  vector: fc.nat(0xff),
  vps: fc.array(fc.nat(100), { minLength: 0, maxLength: 4 }),
  page: fc.nat(2 ** 52 - 1),
  shift: fc.nat(4095),
  /** The MSI an unmap or retarget names: the setup's entry (host CPU 0, vector 0x30) or any. */
  msi: fc.oneof({ weight: 2, arbitrary: fc.constant([0, 0x30] as const) }, fc.tuple(fc.nat(0xff), fc.nat(0xff))),
  /** Rare hostile bits in otherwise valid flags. */
  odd: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.nat(7)),
});
type Fields = fc.Arbitrary<typeof fields extends fc.Arbitrary<infer F> ? F : never> extends fc.Arbitrary<infer G> ? G : never;
/** How the control word deviates from the one the call's encoding gives: none, its rep fields, its other bits, or any value. */
const controlEdit = fc.oneof(
  { weight: 12, arbitrary: fc.constant(undefined) },
  fc.record({ repCount: fc.nat(4095), repStart: fc.nat(4095), varHeader: fc.nat(3) }),
  fc.record({ xor: u64.map((x) => x & ~0xffffn) }),
  fc.record({ any: u64 }),
);
const call = fc.record({
  spec: fc.nat(hypervHypercalls.length - 1),
  fields,
  control: controlEdit,
  corrupt: fc.oneof({ weight: 6, arbitrary: fc.constant([]) }, fc.array(fc.tuple(fc.nat(4095), fc.nat(255)), { minLength: 1, maxLength: 3 })),
  inputGpa: gpa,
  outputGpa: gpa,
});

describe("hostile hypercalls, harder", () => {
  it("random calls aimed at real domains and devices, with edge GPAs, 64-bit frames and roots, end as defined statuses; VM B never changes", () => {
    let calls = 0;
    const w = world();
    const { a, b } = w;
    const digestB = memoryDigest(b);
    const viewB = seenByB(b);
    assertProperty(
      fc.property(fc.array(call, { minLength: 1, maxLength: 8 }), (steps) => {
        reset(w);
        {
          for (const step of steps) {
            const spec = hypervHypercalls[step.spec]!;
            const encoded = encodeFor(spec, step.fields, w);
            let control = encoded.control;
            const e = step.control;
            if (e !== undefined && "repCount" in e) {
              const c = decodeHypercallInput(control);
              control = encodeHypercallInput({ ...c, rep_count: e.repCount, rep_start_index: e.repStart, variable_header_size: e.varHeader });
            } else if (e !== undefined && "xor" in e) control ^= e.xor;
            else if (e !== undefined) control = e.any;
            const bytes = encoded.bytes;
            for (const [at, value] of step.corrupt) if (at < bytes.length) bytes[at] = value;
            const memory = a.vm.memory;
            if (memory.contains(step.inputGpa, 1)) memory.writeBytes(step.inputGpa, bytes.subarray(0, Math.min(bytes.length, memory.end - step.inputGpa)));
            const before = partitionView(w);
            const value = a.vm.hypercall(control, step.inputGpa, step.outputGpa);
            calls++;
            const r = decodeHypercallResult(value);
            expect(hvStatusName(r.status)).not.toBe("UNKNOWN");
            const c = decodeHypercallInput(control);
            if (hypercallByCode(c.call_code)?.rep) expect(r.reps_completed).toBeLessThanOrEqual(c.rep_count);
            else expect(r.reps_completed).toBe(0);
            if (e === undefined && step.corrupt.length === 0) beyondTheVm(spec, step.fields, w, r.status, before);
            expect(memoryDigest(b)).toBe(digestB);
            expect(seenByB(b)).toBe(viewB);
            expect(w.bed.platform.host.memory.violations).toEqual([]);
          }
          for (const d of a.devices) {
            for (const iova of [IOVA, IOVA + 0x3000, S2_IOVA, S2_IOVA + 0x5000, DATA, 0xfee00000, RAM - 8]) {
              d.device.write(iova, Uint8Array.of(0xee));
              d.device.read(iova, 8);
            }
            d.device.signalMsi({ address: 0xfee00000, data: 0x30 });
          }
          // Every entry the hostile calls left (its slot names the host CPU and vector of its MSI) reaches a VP A has.
          const partition = (a.iommus[0] as HypervDevice).partition;
          for (const e of partition.interrupts.list()) partition.deliverMsi(e.rid, { address: 0xfee00000 + Math.floor(e.slot / 192) * 0x1000, data: 0x30 + (e.slot % 192) });
          for (const irq of a.vm.interrupts.take()) expect(irq.destination).toBeLessThan(a.vm.vcpus);
          expect(w.bed.platform.host.memory.violations).toEqual([]);
          expect(memoryDigest(b)).toBe(digestB);
          expect(seenByB(b)).toBe(viewB);
        }
      }),
      { numRuns: 1200 },
    );
    reset(w);
    expect(w.bed.dispose()).toEqual([]);
    expect(calls).toBeGreaterThan(3000);
  }, 600_000);
});

/** What a refused call must leave as it was: the domains' settings and stage-2 pages. */
function partitionView(w: World): string {
  const domains = (w.a.iommus[0] as HypervDevice).partition.domains!;
  return JSON.stringify([...domains.all()].map((d) => [d.id, d.config, d.s2?.runs()]));
}

/**
 * 64-bit inputs the guest's RAM cannot hold: a MAP whose device address or first frame is at or beyond 2^53 (or
 * whose frames leave RAM), an UNMAP beyond 2^53, a paging CONFIGURE whose root is outside RAM. Each is refused
 * before it changes anything.
 */
function beyondTheVm(s: HypercallSpec, f: Fields, w: World, status: number, before: string): void {
  const ram = BigInt(RAM);
  let outside = false;
  if (s.name === "HVCALL_MAP_DEVICE_GPA_PAGES") outside = f.base >= 2n ** 53n || (f.frame + 1n) * 4096n > ram;
  else if (s.name === "HVCALL_UNMAP_DEVICE_GPA_PAGES") outside = f.base >= 2n ** 53n;
  else if (s.name === "HVCALL_CONFIGURE_DEVICE_DOMAIN") {
    const root = rootOf(f, w);
    outside = (f.flags & 3) === 1 && (root + 4096n > ram || root % 4096n !== 0n);
  }
  if (!outside) return;
  expect(status).not.toBe(HvStatus.HV_STATUS_SUCCESS);
  expect(partitionView(w)).toBe(before);
}

function rootOf(f: Fields, w: World): bigint {
  return f.root === -1n ? BigInt(w.root) : f.root === -2n ? BigInt(w.root + 8) : f.root;
}

/** The call's input page from the random fields, encoded as a guest would (every value within its field's width). */
function encodeFor(s: HypercallSpec, f: Fields, w: World): { control: bigint; bytes: Uint8Array } {
  const domainId = f.domain >= 0 ? w.domains[f.domain]! : -1 - f.domain;
  const type = f.type >= 0 ? f.type : domainId === S2_DOMAIN ? S2 : HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1;
  const device_domain = { partition_id: f.partition < 0n ? BigInt(w.a.vm.id) : f.partition, domain_id: { type, id: domainId } };
  const partition_id = device_domain.partition_id;
  const device_id = f.device;
  const root = rootOf(f, w);
  const vps = f.vps.length > 0 ? f.vps : [0];
  const target = f.flags & 1 ? { vector: f.vector, flags: { processor_set: 1, multicast: (f.flags >> 1) & 1 }, vp_set: { format: 0n } } : { vector: f.vector, vp_mask: 1n << BigInt(vps[0]! % 64) };
  const varHeader = f.flags & 1 ? vpSetVariableHeader([...new Set(vps)].sort((x, y) => x - y)) : [];
  const msiEntry = { source: 1, msi_entry: { address: { msi_base: 0xfee, destination_id: f.msi[0] }, data: { vector: f.msi[1] } } };
  const frames = Array.from({ length: Math.min(f.reps, 500) }, (_, i) => ({ gpa_page_number: (f.frame + BigInt(i)) & U64 }));
  let options: object;
  switch (s.name) {
    case "HVCALL_GET_IOMMU_CAPABILITIES":
      options = { input: { partition_id } };
      break;
    case "HVCALL_GET_LOGICAL_DEVICE_PROPERTY":
      options = { input: { partition_id, logical_device_id: device_id, code: f.flags & 0xf } };
      break;
    case "HVCALL_CREATE_DEVICE_DOMAIN":
    case "HVCALL_DELETE_DEVICE_DOMAIN":
      options = { input: { device_domain } };
      break;
    case "HVCALL_CONFIGURE_DEVICE_DOMAIN":
      options = { input: { device_domain, settings: { flags: { translation_enabled: f.flags & 1, blocked: (f.flags >> 1) & 1, first_stage_paging_mode: f.odd === 3 ? 1 : 0 }, page_table_root: root } } };
      break;
    case "HVCALL_ATTACH_DEVICE_DOMAIN":
      options = { input: { device_domain, device_id } };
      break;
    case "HVCALL_DETACH_DEVICE_DOMAIN":
      options = { input: { partition_id, device_id } };
      break;
    case "HVCALL_FLUSH_DEVICE_DOMAIN":
      options = { input: { device_domain, flags: f.odd === 1 ? f.flags : 0 } };
      break;
    case "HVCALL_FLUSH_DEVICE_DOMAIN_LIST":
      options = {
        input: { device_domain, flags: { iommu_format: f.odd === 1 ? 0 : 1 } },
        reps: Array.from({ length: f.reps }, (_, i) => ({ iova: { page_number: (f.page + i) % 2 ** 52, page_mask_shift: (f.shift + i) % 4096 } })),
      };
      break;
    case "HVCALL_MAP_DEVICE_GPA_PAGES":
      options = { input: { device_domain, map_flags: { READABLE: f.odd === 1 ? 0 : 1, WRITABLE: f.flags & 1, LARGE_PAGE: f.odd === 2 ? 1 : 0 }, target_device_va_base: f.base }, reps: frames };
      break;
    case "HVCALL_UNMAP_DEVICE_GPA_PAGES":
      options = { input: { device_domain, target_device_va_base: f.base }, repCount: f.reps };
      break;
    case "HVCALL_ATTACH_DEVICE":
      options = { input: { partition_id, device_id, attdev_flags: { logical_id: f.odd === 1 ? 0 : 1 }, logical_devid: f.frame } };
      break;
    case "HVCALL_DETACH_DEVICE":
      options = { input: { partition_id, logical_devid: f.frame } };
      break;
    case "HVCALL_MAP_DEVICE_INTERRUPT":
      options = { input: { partition_id, device_id, interrupt_descriptor: { interrupt_type: f.odd === 1 ? 1 : 0, trigger_mode: f.flags & 1, vector_count: f.odd === 2 ? 2 : 1, target } }, varHeader };
      break;
    case "HVCALL_UNMAP_DEVICE_INTERRUPT":
      options = { input: { partition_id, device_id, interrupt_entry: msiEntry } };
      break;
    case "HVCALL_RETARGET_INTERRUPT":
      options = { input: { partition_id, device_id, int_entry: msiEntry, int_target: target }, varHeader };
      break;
    default:
      throw new Error(`no encoding for ${s.name}`);
  }
  return encodeHypercall(s, options as never);
}
