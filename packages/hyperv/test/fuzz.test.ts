import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Perm, unwrap } from "@viommu/core";
import { caseSupport, Testbed } from "@viommu/conformance";
import { vpSetVariableHeader } from "../src/format/device-interrupt-target.js";
import { hvStatusName } from "../src/format/hv-status.js";
import { decodeHypercallInput } from "../src/format/hypercall-input.js";
import { decodeHypercallResult } from "../src/format/hypercall-result.js";
import { encodeHypercall, HvCallCode, hypercallByCode, hypervHypercalls, type HypercallSpec } from "../src/format/hypercalls.js";
import type { HypervGuestDriver } from "../src/guest/hyperv-driver.js";
import type { HypervNestedDomain } from "../src/hw/hyperv-nested-domain.js";
import type { HypervUnit } from "../src/hw/hyperv-unit.js";
import { hypervPlugin } from "../src/plugin.js";
import { assertProperty } from "./fuzz-seed.js";
import { DATA_GPA, IOVA } from "./support.js";

const { memoryDigest } = caseSupport;

function twoVms(): Testbed {
  return unwrap(
    Testbed.create({
      plugin: hypervPlugin,
      vms: [
        { devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x208, guestRid: 0x18 }], memoryBytes: 2 ** 28, vcpus: 80 },
        { devices: [{ rid: 0x300, guestRid: 0x10 }], memoryBytes: 2 ** 28 },
      ],
    }),
  );
}

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const knownCodes = Object.values(HvCallCode);
/** Control words: a known call code (or any) with random other bits, or one with only plausible rep fields. */
const control = fc.oneof(
  fc.tuple(fc.constantFrom(...knownCodes), u64).map(([code, rest]) => (rest & ~0xffffn) | BigInt(code)),
  fc.tuple(fc.constantFrom(...knownCodes), fc.nat(40), fc.nat(40), fc.nat(3)).map(
    ([code, count, start, vh]) => BigInt(code) | (BigInt(vh) << 17n) | (BigInt(count) << 32n) | (BigInt(Math.min(start, count)) << 48n),
  ),
  u64,
);
const gpa = fc.oneof(fc.nat(2 ** 28 / 8 - 1).map((x) => x * 8), fc.integer({ min: -16, max: 2 ** 40 }), fc.constantFrom(0x8000, 0x8ff8, 2 ** 28 - 8, 2 ** 28, 2 ** 53));

/** Checks a result value as the guest sees it: a status the hypervisor defines, reps within the count. */
function checkResult(value: bigint, controlWord: bigint): void {
  const r = decodeHypercallResult(value);
  expect(hvStatusName(r.status)).not.toBe("UNKNOWN");
  const c = decodeHypercallInput(controlWord);
  if (hypercallByCode(c.call_code)?.rep) expect(r.reps_completed).toBeLessThanOrEqual(Math.max(c.rep_count, c.rep_start_index));
}

describe("hostile hypercalls", () => {
  it("random control words, input pages and GPAs end as statuses: nothing escapes, nothing outside the VM changes", () => {
    assertProperty(
      fc.property(fc.array(fc.tuple(control, fc.uint8Array({ minLength: 0, maxLength: 256 }), gpa, gpa), { minLength: 1, maxLength: 30 }), (calls) => {
        const bed = twoVms();
        try {
          const [a, b] = [bed.vms[0]!, bed.vms[1]!];
          const digestB = memoryDigest(b);
          for (const [c, page, inputGpa, outputGpa] of calls) {
            if (page.length > 0 && a.vm.memory.contains(inputGpa, page.length)) a.vm.memory.writeBytes(inputGpa, page);
            checkResult(a.vm.hypercall(c, inputGpa, outputGpa), c);
          }
          a.devices[0]!.device.write(IOVA, Uint8Array.of(1, 2, 3));
          a.devices[1]!.device.read(DATA_GPA, 16);
          expect(bed.platform.host.memory.violations).toEqual([]);
          expect(memoryDigest(b)).toBe(digestB);
        } finally {
          bed.dispose();
        }
      }),
      { numRuns: 80 },
    );
  });

  it("well-formed calls with random values (domain ids, devices, frames, targets) keep the partition consistent and isolated", () => {
    const pool = { domain: fc.constantFrom(0, 1, 2, 3, 4, 5, 0xffffffff, 77), type: fc.constantFrom(0, 0, 1, 1, 2), rid: fc.constantFrom(0x10, 0x18, 0x11, 0xffff) };
    const spec = fc.nat(hypervHypercalls.length - 1);
    const fields = fc.record({
      domain: pool.domain,
      type: pool.type,
      rid: pool.rid,
      frame: fc.oneof(fc.nat(2 ** 16), fc.constant(2 ** 28 / 4096 - 1), fc.nat(2 ** 40)),
      iovaPage: fc.nat(2 ** 20),
      flags: fc.nat(3),
      root: fc.oneof(fc.nat(2 ** 16).map((p) => p * 4096), fc.nat(2 ** 40)),
      reps: fc.integer({ min: 1, max: 20 }),
      vector: fc.nat(255),
      vp: fc.nat(90),
    });
    assertProperty(
      fc.property(fc.array(fc.tuple(spec, fields), { minLength: 1, maxLength: 40 }), (steps) => {
        const bed = twoVms();
        try {
          const [a, b] = [bed.vms[0]!, bed.vms[1]!];
          const digestB = memoryDigest(b);
          const driver = a.drivers[0] as HypervGuestDriver;
          const own = unwrap(driver.createDomain());
          unwrap(driver.attach(0x10, own));
          unwrap(driver.map(own, IOVA, DATA_GPA, 0x2000, Perm.ReadWrite));
          for (const [which, f] of steps) {
            const s = hypervHypercalls[which]!;
            const options = optionsFor(s, f);
            if (options === undefined) continue;
            const { control: c, bytes } = encodeHypercall(s, options as never);
            a.vm.memory.writeBytes(0x8000, bytes);
            checkResult(a.vm.hypercall(c, 0x8000, 0x9000), c);
          }
          for (const d of a.devices) {
            d.device.write(IOVA, Uint8Array.of(1));
            d.device.read(DATA_GPA, 8);
            d.device.signalMsi({ address: 0xfee00000, data: 0x30 });
          }
          driver.flush(own);
          expect(bed.platform.host.memory.violations).toEqual([]);
          expect(memoryDigest(b)).toBe(digestB);
          expect(b.devices[0]!.device.read(0x10_0000, 4).ok).toBe(true);
        } finally {
          bed.dispose();
        }
      }),
      { numRuns: 120 },
    );
  });

  it("random guest stage-1 table entries fault or translate inside the VM, never outside it", () => {
    assertProperty(
      fc.property(fc.array(fc.tuple(fc.nat(511), fc.nat(2), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff })), { minLength: 1, maxLength: 30 }), (writes) => {
        const bed = twoVms();
        try {
          const [a, b] = [bed.vms[0]!, bed.vms[1]!];
          const digestB = memoryDigest(b);
          const driver = a.drivers[0] as HypervGuestDriver;
          const d = unwrap(driver.createDomain());
          unwrap(driver.attach(0x10, d));
          unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
          const unit = bed.units[0] as HypervUnit;
          const root = (unit.domainOf(0x100) as HypervNestedDomain).s1Root;
          // Level 4 root, then whichever tables the random entries point at (inside or outside RAM).
          for (const [index, level, lo, hi] of writes) {
            const table = level === 0 ? root : root + level * 0x1000;
            if (a.vm.memory.contains(table + index * 8, 8)) a.vm.memory.write64Halves(table + index * 8, lo, hi);
          }
          driver.flush(d);
          for (let i = 0; i < 8; i++) a.devices[0]!.device.write(IOVA + i * 0x20_0000 + 0x10, Uint8Array.of(0xaa));
          expect(bed.platform.host.memory.violations).toEqual([]);
          expect(memoryDigest(b)).toBe(digestB);
        } finally {
          bed.dispose();
        }
      }),
      { numRuns: 60 },
    );
  });
});

/** Input values for a call from the random fields (undefined when the spec takes none the fuzzer builds). */
function optionsFor(s: HypercallSpec, f: { domain: number; type: number; rid: number; frame: number; iovaPage: number; flags: number; root: number; reps: number; vector: number; vp: number }): object | undefined {
  const device_domain = { partition_id: (1n << 64n) - 1n, domain_id: { type: f.type, id: f.domain } };
  const device_id = BigInt(f.rid);
  const target = { vector: f.vector, flags: { processor_set: 1 }, vp_set: { format: 0n } };
  const varHeader = vpSetVariableHeader([f.vp]);
  switch (s.name) {
    case "HVCALL_GET_IOMMU_CAPABILITIES":
      return { input: { partition_id: device_domain.partition_id } };
    case "HVCALL_GET_LOGICAL_DEVICE_PROPERTY":
      return { input: { partition_id: device_domain.partition_id, logical_device_id: device_id, code: 10 } };
    case "HVCALL_CREATE_DEVICE_DOMAIN":
    case "HVCALL_DELETE_DEVICE_DOMAIN":
      return { input: { device_domain } };
    case "HVCALL_CONFIGURE_DEVICE_DOMAIN":
      return { input: { device_domain, settings: { flags: { translation_enabled: f.flags & 1, blocked: (f.flags >> 1) & 1 }, page_table_root: BigInt(f.root) } } };
    case "HVCALL_ATTACH_DEVICE_DOMAIN":
      return { input: { device_domain, device_id } };
    case "HVCALL_DETACH_DEVICE_DOMAIN":
      return { input: { partition_id: device_domain.partition_id, device_id } };
    case "HVCALL_FLUSH_DEVICE_DOMAIN":
      return { input: { device_domain } };
    case "HVCALL_FLUSH_DEVICE_DOMAIN_LIST":
      return { input: { device_domain, flags: { iommu_format: 1 } }, reps: Array.from({ length: f.reps }, (_, i) => ({ iova: { page_number: f.iovaPage + i, page_mask_shift: f.flags } })) };
    case "HVCALL_MAP_DEVICE_GPA_PAGES":
      return { input: { device_domain, map_flags: { READABLE: 1, WRITABLE: f.flags & 1 }, target_device_va_base: BigInt(f.iovaPage * 4096) }, reps: Array.from({ length: f.reps }, (_, i) => ({ gpa_page_number: BigInt(f.frame + i) })) };
    case "HVCALL_UNMAP_DEVICE_GPA_PAGES":
      return { input: { device_domain, target_device_va_base: BigInt(f.iovaPage * 4096) }, repCount: f.reps };
    case "HVCALL_ATTACH_DEVICE":
      return { input: { partition_id: device_domain.partition_id, device_id, attdev_flags: { logical_id: 1 }, logical_devid: BigInt(f.frame) } };
    case "HVCALL_DETACH_DEVICE":
      return { input: { partition_id: device_domain.partition_id, logical_devid: BigInt(f.frame) } };
    case "HVCALL_MAP_DEVICE_INTERRUPT":
      return { input: { partition_id: device_domain.partition_id, device_id, interrupt_descriptor: { interrupt_type: 0, trigger_mode: f.flags & 1, vector_count: 1, target } }, varHeader };
    case "HVCALL_UNMAP_DEVICE_INTERRUPT":
      return { input: { partition_id: device_domain.partition_id, device_id, interrupt_entry: { source: 1, msi_entry: { address: { msi_base: 0xfee, destination_id: f.vp & 0xff }, data: { vector: f.vector } } } } };
    case "HVCALL_RETARGET_INTERRUPT":
      return {
        input: { partition_id: device_domain.partition_id, device_id, int_entry: { source: 1, msi_entry: { address: { msi_base: 0xfee, destination_id: 0 }, data: { vector: f.vector } } }, int_target: target },
        varHeader,
      };
    default:
      return undefined;
  }
}
