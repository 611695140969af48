import { describe, expect, it } from "vitest";
import {
  DIRTY_BITMAP_NO_CLEAR,
  DIRTY_TRACKING_ENABLE,
  errnoOf,
  HwCapability,
  HwptAllocFlag,
  newWalkResult,
  Perm,
  unwrap,
  type PagingDomain,
} from "@viommu/core";
import { decodeLayout, encodeLayout } from "@viommu/core";
import { decodeSte } from "../../src/format/stream-table-entry.js";
import { idr0Layout } from "../../src/format/id-registers.js";
import { stage2DirtyBits } from "../../src/format/vmsa-stage2.js";
import { DEFAULT_SMMUV3_HW, type Smmuv3HwConfig } from "../../src/hw/smmuv3-hw-config.js";
import { hostSetup } from "../support.js";

const PAGE = 4096;
const GPA = 0x20_0000;

/** The default host with IDR0 fields changed. */
function withIdr0(fields: Record<string, number>): Smmuv3HwConfig {
  const idr0 = encodeLayout(idr0Layout, { ...decodeLayout(idr0Layout, Uint32Array.of(DEFAULT_SMMUV3_HW.idr[0]!)), ...fields })[0]!;
  return { ...DEFAULT_SMMUV3_HW, idr: [idr0, ...DEFAULT_SMMUV3_HW.idr.slice(1)] };
}

/** A host whose device is attached to a stage-2 HWPT allocated with `flags` (IOVA = GPA over all of RAM). */
function attached(flags: number, backingPageShift = 12) {
  const h = hostSetup({}, { memoryBytes: 2 ** 26, backingPageShift, parentFlags: flags });
  unwrap(h.ctx.attach(h.devId, h.parentId));
  const domain = (unwrap(h.ctx.objects.get(h.parentId)) as unknown as { domain: PagingDomain }).domain;
  const walk = newWalkResult();
  /** The stage-2 leaf mapping `iova`, as the 64-bit value in host memory, and its level. */
  const leaf = (iova: number): { value: bigint; level: number } => {
    domain.table.walk(iova, Perm.Read, walk);
    const halves = new Uint32Array(2);
    h.platform.host.memory.read64Halves(walk.entryAddress, halves);
    return { value: (BigInt(halves[1]!) << 32n) | BigInt(halves[0]!), level: walk.level };
  };
  const dirty = (iova: number, length: number, flags = 0): number[] => {
    let bitmap = new Uint8Array(0);
    unwrap(h.ctx.hwptGetDirtyBitmap({ hwptId: h.parentId, flags, iova, length, pageSize: PAGE, bitmap: (n) => (bitmap = new Uint8Array(n)) }));
    const out: number[] = [];
    bitmap.forEach((byte, i) => {
      for (let b = 0; b < 8; b++) if (byte & (1 << b)) out.push(iova + (i * 8 + b) * PAGE);
    });
    return out;
  };
  return { ...h, domain, leaf, dirty };
}

/** Bits of a stage-2 leaf (IHI0070 §3.13.3.1; spec §2.4): S2AP[1] is bit 7, DBM bit 51, AF bit 10. */
const S2AP_WRITE = 1n << 7n;
const DBM = 1n << 51n;
const LOW_ATTRS = 0xfffn;
const HIGH_ATTRS = 0xfff8_0000_0000_0000n;

describe("SMMUv3 dirty tracking: HTTU with S2HA/S2HD and DBM in the stage-2 leaves", () => {
  it("sets S2HA and S2HD in the STEs of a dirty-tracking domain only", () => {
    const plain = hostSetup({}, { parentFlags: HwptAllocFlag.NEST_PARENT });
    unwrap(plain.ctx.attach(plain.devId, plain.parentId));
    expect(decodeSte(plain.unit.steOf(0x100)!)).toMatchObject({ Config: 6, S2HA: 0, S2HD: 0 });
    const tracked = attached(HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING);
    expect(decodeSte(tracked.unit.steOf(0x100)!)).toMatchObject({ Config: 6, S2HA: 1, S2HD: 1, S2R: 1, S2AA64: 1 });
  });

  it("writes writable leaves writable-dirty with DBM, as io-pgtable does under IO_PGTABLE_QUIRK_ARM_HD; a plain domain's have no DBM", () => {
    const tracked = attached(HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING);
    const t = tracked.leaf(GPA);
    // Page (0b11), MemAttr 0xF, S2AP 0b11, SH inner, AF; XN (bit 54, no exec) and DBM (bit 51).
    expect({ low: t.value & LOW_ATTRS, high: t.value & HIGH_ATTRS, level: t.level }).toEqual({ low: 0x7ffn, high: 0x0048_0000_0000_0000n, level: 1 });
    const plain = attached(HwptAllocFlag.NEST_PARENT);
    expect(plain.leaf(GPA).value & HIGH_ATTRS).toBe(0x0040_0000_0000_0000n);
  });

  it("cleans every leaf when tracking is enabled (S2AP[1] cleared, DBM kept), and a DMA write sets S2AP[1] of that leaf alone", () => {
    const h = attached(HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING);
    unwrap(h.ctx.hwptSetDirtyTracking(h.parentId, DIRTY_TRACKING_ENABLE));
    const clean = h.leaf(GPA).value;
    expect(clean & (S2AP_WRITE | DBM)).toBe(DBM);
    expect(clean & LOW_ATTRS).toBe(0x77fn);
    expect(h.device.write(GPA + 0x10, Uint8Array.of(1, 2, 3)).ok).toBe(true);
    expect(h.leaf(GPA).value).toBe(clean | S2AP_WRITE);
    expect(h.leaf(GPA + PAGE).value & S2AP_WRITE).toBe(0n);
    expect(h.dirty(GPA, 4 * PAGE)).toEqual([GPA]);
  });

  it("marks on writes only: a DMA read leaves the leaf clean, and a write after a cached read still walks and marks", () => {
    const h = attached(HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING);
    unwrap(h.ctx.hwptSetDirtyTracking(h.parentId, DIRTY_TRACKING_ENABLE));
    expect(h.device.read(GPA + 2 * PAGE, 64).ok).toBe(true);
    expect(h.leaf(GPA + 2 * PAGE).value & S2AP_WRITE).toBe(0n);
    expect(h.dirty(GPA, 4 * PAGE, DIRTY_BITMAP_NO_CLEAR)).toEqual([]);
    // The read cached the translation; the write must not be satisfied from the cache without marking.
    expect(h.device.write(GPA + 2 * PAGE, Uint8Array.of(9)).ok).toBe(true);
    expect(h.leaf(GPA + 2 * PAGE).value & S2AP_WRITE).toBe(S2AP_WRITE);
    expect(h.dirty(GPA, 4 * PAGE)).toEqual([GPA + 2 * PAGE]);
    // Cleared by that read: the next write through the same (cached) translation marks again.
    expect(h.device.write(GPA + 2 * PAGE, Uint8Array.of(9)).ok).toBe(true);
    expect(h.dirty(GPA, 4 * PAGE)).toEqual([GPA + 2 * PAGE]);
  });

  it("marks a 2 MiB block descriptor as a whole", () => {
    const h = attached(HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING, 21);
    unwrap(h.ctx.hwptSetDirtyTracking(h.parentId, DIRTY_TRACKING_ENABLE));
    const block = h.leaf(GPA);
    expect(block.level).toBe(2);
    expect(block.value & (LOW_ATTRS | S2AP_WRITE | DBM)).toBe(DBM | 0x77dn);
    expect(h.device.write(GPA + 0x12_3456, Uint8Array.of(1)).ok).toBe(true);
    expect(h.leaf(GPA).value & S2AP_WRITE).toBe(S2AP_WRITE);
    expect(h.dirty(GPA, 2 ** 21).length).toBe(512);
  });

  it("marks a write while iommufd's tracking is off too (S2HD is in the STE), and enabling cleans it first", () => {
    const h = attached(HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING);
    unwrap(h.ctx.hwptSetDirtyTracking(h.parentId, DIRTY_TRACKING_ENABLE));
    unwrap(h.ctx.hwptSetDirtyTracking(h.parentId, 0));
    expect(h.device.write(GPA + 3 * PAGE, Uint8Array.of(1)).ok).toBe(true);
    expect(h.leaf(GPA + 3 * PAGE).value & S2AP_WRITE).toBe(S2AP_WRITE);
    unwrap(h.ctx.hwptSetDirtyTracking(h.parentId, DIRTY_TRACKING_ENABLE));
    expect(h.dirty(GPA, 4 * PAGE)).toEqual([]);
  });

  it("never makes a leaf without DBM writable, and cleaning clears S2AP[1] alone", () => {
    const leafWords = new Uint32Array(2);
    // A read-only page (S2AP 0b01, no DBM): never dirty, and marking it changes nothing.
    stage2DirtyBits.withDirty(0x4000_077f, 0x0040_0000, 1, true, leafWords);
    expect([...leafWords]).toEqual([0x4000_077f, 0x0040_0000]);
    expect(stage2DirtyBits.isDirty(0x4000_07ff, 0x0040_0000, 1)).toBe(false);
    // Writable-clean with DBM: a write sets S2AP[1] and AF; cleaning clears S2AP[1] only.
    stage2DirtyBits.withDirty(0x4000_037f, 0x0048_0000, 1, true, leafWords);
    expect([...leafWords]).toEqual([0x4000_07ff, 0x0048_0000]);
    expect(stage2DirtyBits.isDirty(leafWords[0]!, leafWords[1]!, 1)).toBe(true);
    stage2DirtyBits.withDirty(0x4000_07ff, 0x0048_0000, 1, false, leafWords);
    expect([...leafWords]).toEqual([0x4000_077f, 0x0048_0000]);
  });
});

describe("SMMUv3 dirty tracking capability (arm_smmu_dbm_capable: HTTU dirty on a coherent SMMU)", () => {
  it.each([
    ["the modelled SMMU (HTTU access and dirty, coherent)", DEFAULT_SMMUV3_HW, true],
    ["an SMMU with the access flag update only", withIdr0({ HTTU: 1 }), false],
    ["an SMMU without HTTU", withIdr0({ HTTU: 0 }), false],
    ["a non-coherent SMMU with HTTU", withIdr0({ COHACC: 0 }), false],
  ])("%s: GET_HW_INFO's IOMMU_HW_CAP_DIRTY_TRACKING as the SMMU can, IOMMU_HWPT_ALLOC_DIRTY_TRACKING EOPNOTSUPP where it cannot", (_what, config, capable) => {
    const h = hostSetup({ config });
    const info = unwrap(h.ctx.getHwInfo({ flags: 0, devId: h.devId, dataLen: 64 }));
    expect((info.capabilities & HwCapability.DIRTY_TRACKING) !== 0).toBe(capable);
    for (const flags of [HwptAllocFlag.DIRTY_TRACKING, HwptAllocFlag.DIRTY_TRACKING | HwptAllocFlag.NEST_PARENT]) {
      expect(errnoOf(h.ctx.hwptAlloc({ flags, devId: h.devId, ptId: h.ioasId }))).toBe(capable ? undefined : "EOPNOTSUPP");
    }
  });

  it("gives a domain allocated without the flag no dirty ops: SET_DIRTY_TRACKING and GET_DIRTY_BITMAP answer EOPNOTSUPP", () => {
    const h = hostSetup();
    expect(errnoOf(h.ctx.hwptSetDirtyTracking(h.parentId, DIRTY_TRACKING_ENABLE))).toBe("EOPNOTSUPP");
  });
});
