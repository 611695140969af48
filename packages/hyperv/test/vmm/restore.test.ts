import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { decodeState, encodeState, newWalkResult, NO_PASID, Perm, unwrap, type StateValue } from "@viommu/core";
import { caseSupport, Testbed, type TestVm } from "@viommu/conformance";
import { HvDeviceDomainType } from "../../src/format/device-domain.js";
import { logicalDeviceId } from "../../src/format/device-id.js";
import { HvStatus } from "../../src/format/hv-status.js";
import { HV_PARTITION_ID_SELF, hvAttachDevice, hvAttachDeviceDomain, hvCreateDeviceDomain, hvFlushDeviceDomain, hvMapDeviceGpaPages } from "../../src/format/hypercalls.js";
import type { HypervGuestDriver } from "../../src/guest/hyperv-driver.js";
import { hypervPlugin } from "../../src/plugin.js";
import type { HypervDevice } from "../../src/vmm/hyperv-device.js";
import { PARTITION_STATE_VERSION } from "../../src/vmm/partition-state.js";
import { refuse } from "../refusing-iommufd.js";
import { assertProperty } from "../fuzz-seed.js";
import { DATA_GPA, dd, IOVA, rawCall } from "../support.js";

const { memoryDigest } = caseSupport;
const KIND = "hyperv-pviommu";
const S2 = HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2;
const S2_IOVA = 0x4000_0000;

/** VM A (the one saved and restored: two passthrough devices, 80 vCPUs) and VM B, whose state must never change. */
function twoVms(): Testbed {
  return unwrap(
    Testbed.create({
      plugin: hypervPlugin,
      vms: [
        { devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x208, guestRid: 0x18 }], memoryBytes: 2 ** 31, vcpus: 80 },
        { devices: [{ rid: 0x300, guestRid: 0x10 }], memoryBytes: 2 ** 28 },
      ],
    }),
  );
}

/**
 * A partition with one of everything the state holds: a paging domain with a device, the driver's identity and
 * blocking domains, a stage-2 domain with two runs and an emulated device, a directly attached device and
 * interrupt entries (one multicast to several VPs).
 */
function richSave(): StateValue {
  const bed = twoVms();
  const v = bed.vms[0]!;
  const driver = v.drivers[0] as HypervGuestDriver;
  const d = unwrap(driver.createDomain());
  unwrap(driver.attach(0x10, d));
  unwrap(driver.map(d, IOVA, DATA_GPA, 0x3000, Perm.ReadWrite));
  expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: dd(300, S2) } }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
  const page = DATA_GPA / 4096;
  const reps = [page, page + 1, page + 7].map((p) => ({ gpa_page_number: BigInt(p) }));
  expect(rawCall(v, hvMapDeviceGpaPages, { input: { device_domain: dd(300, S2), map_flags: { READABLE: 1, WRITABLE: 1 }, target_device_va_base: BigInt(S2_IOVA) }, reps }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
  expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(300, S2), device_id: logicalDeviceId(0x22) } }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
  expect(
    rawCall(v, hvAttachDevice, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(0x18), attdev_flags: { logical_id: 1 }, logical_devid: 0x18n } }).status,
  ).toBe(HvStatus.HV_STATUS_SUCCESS);
  unwrap(driver.mapInterrupt(0x10, 0x40, 3));
  unwrap(driver.mapInterrupt(0x18, 0x51, 70));
  unwrap(driver.mapInterrupt(0x22, 0x60, 0));
  const value = unwrap(decodeState(v.iommus[0]!.save!(), KIND, [PARTITION_STATE_VERSION])).value;
  bed.dispose();
  // One multicast entry to three VPs, as a guest's retarget with a VP set leaves it.
  const irqs = (value as { interrupts: { vps: number[]; multicast: boolean }[] }).interrupts;
  irqs[0]!.vps = [1, 3, 79];
  irqs[0]!.multicast = true;
  return value;
}

/** Replaces VM A's pvIOMMU with a fresh one (same configuration, devices assigned), as a migration target is. */
function freshDevice(bed: Testbed): HypervDevice {
  const v = bed.vms[0]!;
  for (const iommu of v.iommus) iommu.destroy();
  const fresh = unwrap(hypervPlugin.createDevice(v.iommus[0]!.options)) as HypervDevice;
  for (const d of v.devices) unwrap(fresh.assignDevice(d.device, d.devId, d.guestRid));
  v.iommus[0] = fresh;
  return fresh;
}

/** Everything a refused restore must leave as it was: the saved state, the host objects, the devices' DMA. */
function snapshot(v: TestVm, iommu: HypervDevice): string {
  const out = newWalkResult();
  const dma = [IOVA, IOVA + 0x1008, S2_IOVA, DATA_GPA, 0x10_0000].flatMap((iova) =>
    v.devices.map((d) => {
      const r = d.device.translate(iova, true, NO_PASID, out);
      return r.ok ? `${r.output.toString(16)}/${r.perms}` : "fault";
    }),
  );
  const objects = v.iommufd.list().map((o) => `${o.type} ${o.id}`);
  return JSON.stringify({ save: [...iommu.save()], objects, dma });
}

function translations(v: TestVm): string {
  const out = newWalkResult();
  return [0x10_0000, 0x20_0000, IOVA].map((iova) => v.devices.map((d) => (d.device.translate(iova, true, NO_PASID, out).ok ? out.output : "fault")).join()).join(";");
}

const FIELD_MESSAGE = /^hyperv-pviommu state: (the stream|domains|devices|interrupts)\b/;

describe("restore checks what a state means, field by field", () => {
  const good = richSave();
  const withField = (edit: (s: Record<string, unknown[]>) => void): StateValue => {
    const s = structuredClone(good) as Record<string, unknown[]>;
    edit(s);
    return s as StateValue;
  };
  const domain = (s: Record<string, unknown[]>, i: number): Record<string, unknown> => s.domains![i] as Record<string, unknown>;
  const s2Index = (good as { domains: { type: number }[] }).domains.findIndex((d) => d.type === S2);
  const pagingIndex = (good as { domains: { config: string }[] }).domains.findIndex((d) => d.config === "paging");

  it.each([
    ["a domain id the hypervisor reserves", (s: Record<string, unknown[]>) => (domain(s, 0).id = 0xffffffff), "domains[0].id is 4294967295, outside [1, 4294967294]"],
    ["a domain saved twice", (s: Record<string, unknown[]>) => s.domains!.push(s.domains![0]), /^domains\[\d\]\.id is \d+, a domain saved twice/],
    ["an unknown domain type", (s: Record<string, unknown[]>) => (domain(s, 0).type = 2), "domains[0].type is 2, neither S1 (1) nor S2 (0)"],
    ["a stage-1 root outside guest RAM", (s: Record<string, unknown[]>) => (domain(s, pagingIndex).root = 2 ** 31), `domains[${pagingIndex}].root is 0x80000000, not a 4 KiB page of guest RAM`],
    ["an unaligned stage-1 root", (s: Record<string, unknown[]>) => (domain(s, pagingIndex).root = 0x1008), `domains[${pagingIndex}].root is 0x1008, not a 4 KiB page of guest RAM`],
    ["5-level on a 4-level host", (s: Record<string, unknown[]>) => (domain(s, pagingIndex).levels = 5), `domains[${pagingIndex}].levels is 5, and the host units walk 4-level tables only`],
    ["a configured stage-2 domain", (s: Record<string, unknown[]>) => (domain(s, s2Index).config = "identity"), `domains[${s2Index}].config is "identity": a stage-2 domain is never configured`],
    ["pages in a stage-1 domain", (s: Record<string, unknown[]>) => (domain(s, pagingIndex).runs = [{ iovaPage: 0, gpaPage: 0, pages: 1, writable: true }]), `domains[${pagingIndex}].runs has 1 elements, more than 0`],
    ["a run outside guest RAM", (s: Record<string, unknown[]>) => ((domain(s, s2Index).runs as Record<string, unknown>[])[0]!.gpaPage = 2 ** 31 / 4096 - 1), /^domains\[\d\]\.runs\[0\]\.gpaPage is 0x7ffff: 2 pages from it are not all guest RAM/],
    ["a run beyond IOVA 2^53", (s: Record<string, unknown[]>) => ((domain(s, s2Index).runs as Record<string, unknown>[])[0]!.iovaPage = 2 ** 41 - 1), /^domains\[\d\]\.runs\[0\]\.pages is 2: the run ends beyond IOVA 2\^53/],
    ["overlapping runs", (s: Record<string, unknown[]>) => ((domain(s, s2Index).runs as Record<string, unknown>[])[1]!.iovaPage = S2_IOVA / 4096 + 1), /^domains\[\d\]\.runs\[1\]\.iovaPage is 0x40001, inside another run of the domain/],
    ["a device in a domain the state does not have", (s: Record<string, unknown[]>) => ((s.devices![0] as Record<string, unknown>).domain = 77), "devices[0].domain is 77, a domain the state does not have"],
    ["a device saved twice", (s: Record<string, unknown[]>) => s.devices!.push(s.devices![0]), /^devices\[\d\]\.rid is 0x\w+, a device saved twice/],
    ["a 17-bit device id", (s: Record<string, unknown[]>) => ((s.devices![0] as Record<string, unknown>).rid = 0x10000), "devices[0].rid is 65536, outside [0, 65535]"],
    ["a direct logical id above 64 bits", (s: Record<string, unknown[]>) => ((s.devices!.find((d) => "direct" in (d as object)) as Record<string, unknown>).direct = "0x10000000000000000"), /^devices\[\d\]\.direct is not a 64-bit value/],
    [
      "a device given to the partition and in a device domain",
      (s: Record<string, unknown[]>) => ((s.devices!.find((d) => "direct" in (d as object)) as Record<string, unknown>).domain = (s.domains![pagingIndex] as { id: number }).id),
      /^devices\[\d\]\.domain is \d+: a device given to the partition is in no device domain \(4294967295\)/,
    ],
    ["an interrupt slot beyond the table", (s: Record<string, unknown[]>) => ((s.interrupts![0] as Record<string, unknown>).slot = 192 * 256), "interrupts[0].slot is 49152, outside [0, 49151]"],
    ["an interrupt slot saved twice", (s: Record<string, unknown[]>) => s.interrupts!.push(s.interrupts![0]), /^interrupts\[\d\]\.slot is \d+, an entry saved twice/],
    ["a VP the partition does not have", (s: Record<string, unknown[]>) => ((s.interrupts![0] as Record<string, unknown>).vps = [80]), "interrupts[0].vps[0] is 80, outside [0, 79]"],
    ["no VP at all", (s: Record<string, unknown[]>) => ((s.interrupts![0] as Record<string, unknown>).vps = []), "interrupts[0].vps is empty"],
    [
      "more stage-2 pages than the partition may map",
      (s: Record<string, unknown[]>) => (domain(s, s2Index).runs = Array.from({ length: 9 }, (_, i) => ({ iovaPage: i * 2 ** 19, gpaPage: 0, pages: 2 ** 19, writable: false }))),
      /^domains\[\d\]\.runs\[8\]\.pages brings the partition's stage-2 pages to 4718592, above 4194304/,
    ],
    [
      "more emulated devices than the partition tracks",
      (s: Record<string, unknown[]>) => s.devices!.push(...Array.from({ length: 4097 }, (_, i) => ({ rid: 0x1000 + i, domain: 0xffffffff }))),
      /^devices\[\d+\]\.rid is 0x\w+, emulated device 4097 of at most 4096/,
    ],
    ["a vector a fixed interrupt cannot use", (s: Record<string, unknown[]>) => ((s.interrupts![0] as Record<string, unknown>).vector = 3), "interrupts[0].vector is 3, outside [16, 255]"],
  ] as [string, (s: Record<string, unknown[]>) => void, string | RegExp][])("refuses %s, naming the field, and changes nothing", (_what, edit, message) => {
    const bed = twoVms();
    const fresh = freshDevice(bed);
    const before = snapshot(bed.vms[0]!, fresh);
    const r = fresh.restore(encodeState(KIND, PARTITION_STATE_VERSION, withField(edit)));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.errno).toBe("EINVAL");
      const field = r.error.message.replace(/^hyperv-pviommu state: /, "");
      if (typeof message === "string") expect(field).toBe(message);
      else expect(field).toMatch(message);
    }
    expect(snapshot(bed.vms[0]!, fresh)).toBe(before);
    expect(bed.platform.host.log.entries({ kind: "other" }).at(-1)?.message).toMatch(/^restore refused/);
    expect(bed.dispose()).toEqual([]);
  });

  it("refuses a partition the guest has used (EBUSY): restore needs a fresh one", () => {
    const bed = twoVms();
    const v = bed.vms[0]!;
    const fresh = freshDevice(bed);
    // Naming a device the VMM never assigned (into the NULL domain) creates no domain and no entry, but a record.
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(0xffffffff), device_id: logicalDeviceId(0x33) } }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
    const r = fresh.restore(encodeState(KIND, PARTITION_STATE_VERSION, good));
    expect(r.ok ? undefined : r.error.errno).toBe("EBUSY");
    expect(bed.dispose()).toEqual([]);
  });

  it("accepts the real save and brings the partition back", () => {
    const bed = twoVms();
    const fresh = freshDevice(bed);
    unwrap(fresh.restore(encodeState(KIND, PARTITION_STATE_VERSION, good)));
    expect(unwrap(decodeState(fresh.save(), KIND, [PARTITION_STATE_VERSION])).value).toEqual(good);
    expect(bed.dispose()).toEqual([]);
  });

  it("a restore the host refuses part way (out of ids) leaves the partition fresh", () => {
    const bed = twoVms();
    const v = bed.vms[0]!;
    const fresh = freshDevice(bed);
    const before = snapshot(v, fresh);
    refuse(v.iommufd, "hwptAlloc", "ENOSPC");
    const r = fresh.restore(encodeState(KIND, PARTITION_STATE_VERSION, good));
    expect(r.ok ? undefined : r.error.errno).toBe("ENOSPC");
    expect(snapshot(v, fresh)).toBe(before);
    bed.dispose();
  });

  it("forged streams with valid checksums are refused naming a field and change nothing, or are accepted and work", () => {
    const paths = (value: unknown, at: (string | number)[] = []): (string | number)[][] => {
      const out: (string | number)[][] = [at];
      if (Array.isArray(value)) value.forEach((x, i) => out.push(...paths(x, [...at, i])));
      else if (value !== null && typeof value === "object") for (const [k, x] of Object.entries(value)) out.push(...paths(x, [...at, k]));
      return out;
    };
    const all = paths(good);
    const interesting: StateValue[] = [-1, 0, 1, 4, 5, 15, 16, 255, 256, 0xffff, 0x10000, 0xffffffff, 2 ** 32, 2 ** 41, 2 ** 52, 2 ** 53, 2 ** 53 + 2, 1.5, "paging", "identity", "0x10", "abc", "", true, false, null, [], {}];
    const edit = fc.record({
      path: fc.nat(all.length - 1),
      op: fc.constantFrom("set", "set", "set", "nudge", "delete", "duplicate", "add-key"),
      value: fc.oneof(fc.constantFrom(...interesting), fc.integer({ min: -5, max: 2 ** 32 }), fc.nat(2 ** 20).map((p) => p * 4096)),
      delta: fc.constantFrom(-4096, -1, 1, 2, 4096, 2 ** 20, 2 ** 31),
    });
    const mutate = (edits: readonly { path: number; op: string; value: StateValue; delta: number }[]): StateValue => {
      const s = structuredClone(good) as StateValue;
      for (const e of edits) {
        const path = all[e.path]!;
        if (path.length === 0) {
          if (e.op === "set") return e.value;
          continue;
        }
        let parent = s as Record<string | number, StateValue>;
        for (const k of path.slice(0, -1)) {
          const next = parent?.[k];
          if (next === null || typeof next !== "object") {
            parent = undefined as never;
            break;
          }
          parent = next as Record<string | number, StateValue>;
        }
        if (parent === undefined) continue;
        const key = path[path.length - 1]!;
        if (!(key in parent)) continue;
        const old = parent[key];
        if (e.op === "set") parent[key] = structuredClone(e.value);
        else if (e.op === "nudge" && typeof old === "number") parent[key] = old + e.delta;
        else if (e.op === "delete") {
          if (Array.isArray(parent)) parent.splice(key as number, 1);
          else delete parent[key];
        } else if (e.op === "duplicate" && Array.isArray(parent)) parent.push(structuredClone(old!));
        else if (e.op === "add-key" && old !== null && typeof old === "object" && !Array.isArray(old)) (old as Record<string, StateValue>).extra = e.value;
      }
      return s;
    };
    let accepted = 0;
    let refused = 0;
    assertProperty(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 3 }), (edits) => {
        const bed = twoVms();
        try {
          const [a, b] = [bed.vms[0]!, bed.vms[1]!];
          const digestB = memoryDigest(b);
          const seenB = translations(b);
          const fresh = freshDevice(bed);
          const before = snapshot(a, fresh);
          const r = fresh.restore(encodeState(KIND, PARTITION_STATE_VERSION, mutate(edits)));
          if (!r.ok) {
            refused++;
            expect(r.error.errno).toBe("EINVAL");
            expect(r.error.message).toMatch(FIELD_MESSAGE);
            expect(snapshot(a, fresh)).toBe(before);
          } else {
            accepted++;
            // Working: DMA translates or faults inside the VM, flushes succeed, and the state saves and restores again.
            for (const d of a.devices) for (const iova of [IOVA, S2_IOVA, DATA_GPA]) d.device.read(iova, 8);
            for (const dom of fresh.partition.domains!.all()) {
              if (dom.type === HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1) expect(rawCall(a, hvFlushDeviceDomain, { input: { device_domain: dd(dom.id) } }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
            }
            // Every restored entry's MSI (the slot names its host CPU and vector) reaches VPs the VM has.
            for (const e of fresh.partition.interrupts.list()) {
              fresh.partition.deliverMsi(e.rid, { address: 0xfee00000 + Math.floor(e.slot / 192) * 0x1000, data: 0x30 + (e.slot % 192) });
            }
            for (const irq of a.vm.interrupts.take()) expect(irq.destination).toBeLessThan(a.vm.vcpus);
            const again = fresh.save();
            const next = freshDevice(bed);
            unwrap(next.restore(again));
            expect([...next.save()]).toEqual([...again]);
          }
          expect(bed.platform.host.memory.violations).toEqual([]);
          expect(memoryDigest(b)).toBe(digestB);
          expect(translations(b)).toBe(seenB);
        } finally {
          expect(bed.dispose()).toEqual([]);
        }
      }),
      { numRuns: 600 },
    );
    console.log(`restore fuzz: ${refused} refused, ${accepted} accepted`);
    // The mutations reach both outcomes, not only the first check.
    expect(refused).toBeGreaterThan(300);
    expect(accepted).toBeGreaterThan(20);
  }, 300_000);
});
