import { describe, expect, it } from "vitest";
import { HwptNested, IommufdObjectType, NO_PASID, Perm, unwrap } from "@viommu/core";
import { encodeInvDesc, PasidCacheGranularity } from "../../src/format/inv-desc.js";
import { decodePasidEntry, encodePasidEntry } from "../../src/format/pasid-entry.js";
import { decodeSmContextEntry } from "../../src/format/sm-context-entry.js";
import { VtdNestedDomain } from "../../src/hw/vtd-nested-domain.js";
import type { VtdUnit } from "../../src/hw/vtd-unit.js";
import { MAX_PASID_SLOTS } from "../../src/vmm/device-bindings.js";
import { DATA_GPA, IOVA, vtdBed, type VtdBed } from "../support.js";

const PAGE = 4096;
const pasidDevice = [{ rid: 0x100, guestRid: 0x10, pasidBits: 20 }];
const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

/** A nested-mode bed whose device has 20-bit PASIDs, with `count` guest domains mapping IOVA to consecutive pages. */
function setup(count: number): { b: VtdBed; domains: number[] } {
  const b = vtdBed("nested", undefined, {}, pasidDevice);
  const domains = Array.from({ length: count }, (_, i) => {
    const d = unwrap(b.driver.createDomain());
    unwrap(b.driver.map(d, IOVA, DATA_GPA + i * PAGE, PAGE, Perm.ReadWrite));
    b.bed.vms[0]!.vm.memory.writeBytes(DATA_GPA + i * PAGE, pattern(16, i));
    return d;
  });
  return { b, domains };
}

function dev(b: VtdBed) {
  return b.bed.vms[0]!.devices[0]!.device;
}

/** The guest's scalable context entry of `rid` and the address of its PASID `pasid`'s entry (0 when absent). */
function guestEntries(b: VtdBed, rid: number, pasid: number) {
  const mem = b.bed.vms[0]!.vm.memory;
  const ctp = (mem.read32(b.device.translator.rootTable + (rid >>> 8) * 16) & ~0xfff) >>> 0;
  const ctx = decodeSmContextEntry(mem.readWords(ctp + (rid & 0x7f) * 32, new Uint32Array(8)));
  const dirEntry = mem.readWords(Number(ctx.PASIDDIRPTR) + 8 * (pasid >>> 6), new Uint32Array(2));
  const at = dirEntry[0]! & 1 ? ((dirEntry[0]! & ~0xfff) >>> 0) + dirEntry[1]! * 2 ** 32 + 64 * (pasid & 63) : 0;
  return { ctx, at, entry: at === 0 ? undefined : decodePasidEntry(mem.readWords(at, new Uint32Array(16))) };
}

describe("VT-d PASIDs: the reference driver", () => {
  it("enables PASIDs on first use: PASIDE set, the directory sized for 20-bit PASIDs (PDTS 7, as Linux sizes it), RID_PASID kept", () => {
    const { b, domains } = setup(2);
    unwrap(b.driver.attach(0x10, domains[0]!));
    expect(guestEntries(b, 0x10, 0).ctx).toMatchObject({ PASIDE: 0, PDTS: 2 });
    unwrap(b.driver.attachPasid(0x10, 0x8_0001, domains[1]!));
    const { ctx, entry } = guestEntries(b, 0x10, 0x8_0001);
    expect(ctx).toMatchObject({ P: 1, PASIDE: 1, PDTS: 7, RID_PASID: 0 });
    expect(entry).toMatchObject({ P: 1, PGTT: 1, DID: 3, FLPM: 0, NXE: 1, AW: 2, SRE: 0, WPE: 0 });
    expect(guestEntries(b, 0x10, 0).entry).toMatchObject({ P: 1, PGTT: 1, DID: 2 });
    expect(dev(b).read(IOVA, 16).ok && dev(b).read(IOVA, 16, 0x8_0001).ok).toBe(true);
  });

  it("refuses PASIDs in legacy mode and PASID 0 (RID_PASID) or beyond 20 bits", () => {
    const l = vtdBed("shadow", "legacy", {}, pasidDevice);
    const d = unwrap(l.driver.createDomain());
    expect(l.driver.attachPasid(0x10, 1, d)).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    const { b, domains } = setup(1);
    expect(b.driver.attachPasid(0x10, 0, domains[0]!)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(b.driver.attachPasid(0x10, 2 ** 20, domains[0]!)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(b.driver.detachPasid(0x10, 7)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
  });
});

describe("VT-d PASIDs: the VMM attaches each guest PASID on the host", () => {
  it("nests each PASID's first-level table in its own HWPT (allocated with IOMMU_HWPT_ALLOC_PASID) attached at that PASID", () => {
    const { b, domains } = setup(3);
    unwrap(b.driver.attach(0x10, domains[0]!));
    unwrap(b.driver.attachPasid(0x10, 1, domains[1]!));
    unwrap(b.driver.attachPasid(0x10, 0x8_0001, domains[2]!));
    const unit = b.bed.units[0] as VtdUnit;
    const roots = [NO_PASID, 1, 0x8_0001].map((p) => (unit.domainOf(0x100, p) as VtdNestedDomain).s1.root);
    expect(roots).toEqual([0, 1, 0x8_0001].map((p) => Number(guestEntries(b, 0x10, p).entry!.FLPTPTR)));
    const hwpts = b.bed.vms[0]!.iommufd.list(IommufdObjectType.HWPT_NESTED) as HwptNested[];
    expect(hwpts.length).toBe(3);
    expect(hwpts.every((h) => h.pasidCompat)).toBe(true);
    for (const [i, p] of [NO_PASID, 1, 0x8_0001].entries()) {
      const r = dev(b).read(IOVA, 16, p);
      expect(r.ok && [...r.data]).toEqual([...pattern(16, i)]);
    }
    expect(dev(b).read(IOVA, 16, 2).ok).toBe(false);
  });

  it("forwards a PASID-selective IOTLB invalidation to that PASID's HWPT only", () => {
    const { b, domains } = setup(2);
    unwrap(b.driver.attach(0x10, domains[0]!));
    unwrap(b.driver.attachPasid(0x10, 5, domains[1]!));
    expect(dev(b).read(IOVA, 4, 5).ok && dev(b).read(IOVA, 4).ok).toBe(true);
    unwrap(b.driver.unmap(domains[1]!, IOVA, PAGE));
    expect(dev(b).read(IOVA, 4, 5).ok).toBe(false);
    expect(dev(b).read(IOVA, 4).ok).toBe(true);
  });

  it("detaches the host PASID when the guest tears its entry down, and records the guest's fault for DMA there (0x59, PASID 5)", () => {
    const { b, domains } = setup(2);
    unwrap(b.driver.attach(0x10, domains[0]!));
    unwrap(b.driver.attachPasid(0x10, 5, domains[1]!));
    unwrap(b.driver.detachPasid(0x10, 5));
    expect((b.bed.units[0] as VtdUnit).domainOf(0x100, 5)).toBeUndefined();
    expect(b.bed.vms[0]!.iommufd.list(IommufdObjectType.HWPT_NESTED).length).toBe(1);
    expect(dev(b).read(IOVA, 4, 5).ok).toBe(false);
    b.bed.poll();
    const evs = b.driver.readEvents().filter((e) => e.kind === "dma-fault");
    expect(evs.map((e) => [e.code, e.rid, e.pasid, e.address])).toEqual([[0x59, 0x10, 5, IOVA]]);
  });

  it("picks up a PASID entry made present behind a domain-selective PASID-cache invalidation", () => {
    const { b, domains } = setup(2);
    unwrap(b.driver.attach(0x10, domains[0]!));
    unwrap(b.driver.attachPasid(0x10, 5, domains[1]!));
    // Copy PASID 5's entry to PASID 9 without the driver, then flush the PASID cache of its domain.
    const mem = b.bed.vms[0]!.vm.memory;
    const five = guestEntries(b, 0x10, 5);
    mem.writeWords(five.at + 4 * 64, mem.readWords(five.at, new Uint32Array(16)));
    expect(dev(b).read(IOVA, 4, 9).ok).toBe(false);
    const submit = (b.driver as unknown as { submit(d: Uint32Array[]): { ok: boolean } }).submit.bind(b.driver);
    expect(submit([encodeInvDesc("PC_INV", { G: PasidCacheGranularity.DOMAIN, DID: 3 }, 256)]).ok).toBe(true);
    const r = dev(b).read(IOVA, 16, 9);
    expect(r.ok && [...r.data]).toEqual([...pattern(16, 1)]);
  });

  it("answers hostile PASID entries with the architecture's faults, never an exception: reserved bits 0x5A, a nested PGTT 0x5B", () => {
    const { b, domains } = setup(2);
    unwrap(b.driver.attach(0x10, domains[0]!));
    unwrap(b.driver.attachPasid(0x10, 5, domains[1]!));
    const mem = b.bed.vms[0]!.vm.memory;
    const five = guestEntries(b, 0x10, 5);
    const submit = (b.driver as unknown as { submit(d: Uint32Array[]): { ok: boolean } }).submit.bind(b.driver);
    const cases: [Uint32Array, number][] = [
      [encodePasidEntry({ P: 1, PGTT: 1, DID: 3, FLPTPTR: 2n ** 51n }), 0x5a],
      [encodePasidEntry({ P: 1, PGTT: 3, DID: 3 }), 0x5b],
      [Uint32Array.from({ length: 16 }, (_, i) => (i === 0 ? 0xffff_ffff : 0xdead_beef)), 0x5a],
    ];
    for (const [entry, reason] of cases) {
      mem.writeWords(five.at, entry);
      expect(submit([encodeInvDesc("PC_INV", { G: PasidCacheGranularity.PASID, DID: 3, PASID: 5 }, 256)]).ok).toBe(true);
      expect(dev(b).read(IOVA, 4, 5).ok).toBe(false);
      b.bed.poll();
      expect(b.driver.readEvents().filter((e) => e.kind === "dma-fault").map((e) => e.code)).toEqual([reason]);
    }
    expect(dev(b).read(IOVA, 4).ok).toBe(true);
    expect(b.bed.platform.host.memory.violations).toEqual([]);
  });

  it(`binds at most ${MAX_PASID_SLOTS} PASIDs per device: the rest are refused in the host log and fault 0x5B`, () => {
    const { b, domains } = setup(1);
    unwrap(b.driver.attach(0x10, domains[0]!));
    // PASIDs 1 to 65: the driver attaches 1 and 64 and 65 (a second PASID table), the rest are copies of 1.
    for (const p of [1, 64, 65]) unwrap(b.driver.attachPasid(0x10, p, domains[0]!));
    expect(MAX_PASID_SLOTS).toBe(64);
    const mem = b.bed.vms[0]!.vm.memory;
    const one = guestEntries(b, 0x10, 1);
    const entry = mem.readWords(one.at, new Uint32Array(16));
    for (let p = 2; p < 64; p++) mem.writeWords(one.at + 64 * (p - 1), entry);
    const submit = (b.driver as unknown as { submit(d: Uint32Array[]): { ok: boolean } }).submit.bind(b.driver);
    expect(submit([encodeInvDesc("PC_INV", { G: PasidCacheGranularity.GLOBAL }, 256)]).ok).toBe(true);
    const log = b.bed.platform.host.log.entries({ kind: "configuration-refused" });
    expect(log.some((e) => e.errno === "ENOSPC")).toBe(true);
    const refused = Array.from({ length: 65 }, (_, i) => i + 1).filter((p) => !dev(b).read(IOVA, 4, p).ok);
    expect(refused.length).toBe(1);
    b.bed.poll();
    expect(b.driver.readEvents().filter((e) => e.kind === "dma-fault").map((e) => e.code)).toEqual([0x5b]);
    expect(b.bed.vms[0]!.iommufd.list(IommufdObjectType.HWPT_NESTED).length).toBe(MAX_PASID_SLOTS + 1);
  });

  it("drops every host PASID attachment when the guest turns translation off, and leaves nothing behind on teardown", () => {
    const { b, domains } = setup(2);
    unwrap(b.driver.attach(0x10, domains[0]!));
    unwrap(b.driver.attachPasid(0x10, 5, domains[1]!));
    const vm = b.bed.vms[0]!.vm;
    vm.mmioWrite(b.device.mmioBase + 0x18, 4, 0n);
    expect((b.bed.units[0] as VtdUnit).domainOf(0x100, 5)).toBeUndefined();
    expect(b.bed.dispose()).toEqual([]);
  });
});
