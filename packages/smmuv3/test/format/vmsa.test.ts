import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { EntryKind, Perm, WalkFault, decodeLayout, fromWords64, newEntryDecode, type EntryDecode, type PageTableFormat } from "@viommu/core";
import {
  GRANULE_16K,
  GRANULE_4K,
  GRANULE_64K,
  decodeCd,
  decodeSte,
  granuleFromTg0,
  granuleFromTg1,
  granuleFromTlbiTg,
  l1StdLayout,
  stage1Geometry,
  stage2Geometry,
  stage2Sl0,
  stage1LeafLayout,
  stage2LeafLayout,
  stage2StartLevel,
  startTableCount,
  strtabBaseCfgLayout,
  strtabBaseLayout,
  strtabL1Index,
  strtabL2Index,
  vmsaStage1Encoder,
  vmsaStage1Format,
  vmsaStage2Encoder,
  vmsaStage2Format,
  type GranuleShift,
} from "../../src/format/index.js";
import { fixtureJson, type FixtureTranslations } from "./fixtures.js";

const fixture = fixtureJson<FixtureTranslations>("translations.json");
const vmsaLayouts = { s1leaf: stage1LeafLayout, s2leaf: stage2LeafLayout };

function halves(hex: string): [number, number] {
  const v = BigInt(hex);
  return [Number(v & 0xffffffffn), Number(v >> 32n)];
}

function decode(format: PageTableFormat, hex: string, level: number): EntryDecode {
  const out = newEntryDecode();
  const [lo, hi] = halves(hex);
  format.decodeEntry(lo, hi, level, out);
  return out;
}

function encoded(out: Uint32Array): string {
  return `0x${((BigInt(out[1]!) << 32n) | BigInt(out[0]!)).toString(16).padStart(16, "0")}`;
}

describe("granule encodings (IHI0070 §5.2, §5.4, §4.4.1.1)", () => {
  it("maps TG0/S2TG, TG1 and the TLBI TG to granules, reserved codes to undefined", () => {
    expect([0, 1, 2, 3].map(granuleFromTg0)).toEqual([12, 16, 14, undefined]);
    expect([0, 1, 2, 3].map(granuleFromTg1)).toEqual([undefined, 14, 12, 16]);
    expect([0, 1, 2, 3].map(granuleFromTlbiTg)).toEqual([undefined, 12, 14, 16]);
  });
});

describe("stage-1 geometry from (granule, T0SZ) (DDI0487 D8.2, spec §2.2; our level = 4 − ARM level)", () => {
  it.each([
    // granule, T0SZ, start level (ours), index bits at the start level, level shifts
    [GRANULE_4K, 16, 4, 9, [0, 12, 21, 30, 39]],
    [GRANULE_4K, 25, 3, 9, [0, 12, 21, 30]],
    [GRANULE_4K, 24, 4, 1, [0, 12, 21, 30, 39]],
    [GRANULE_4K, 34, 2, 9, [0, 12, 21]],
    [GRANULE_4K, 39, 2, 4, [0, 12, 21]],
    [GRANULE_16K, 16, 4, 1, [0, 14, 25, 36, 47]],
    [GRANULE_16K, 17, 3, 11, [0, 14, 25, 36]],
    [GRANULE_16K, 28, 2, 11, [0, 14, 25]],
    [GRANULE_16K, 39, 1, 11, [0, 14]],
    [GRANULE_64K, 16, 3, 6, [0, 16, 29, 42]],
    [GRANULE_64K, 22, 2, 13, [0, 16, 29]],
    [GRANULE_64K, 35, 1, 13, [0, 16]],
  ] as const)("%i-bit granule, T0SZ %i starts at level %i with %i index bits", (g, t0sz, start, bits, shifts) => {
    const r = stage1Geometry(g, t0sz);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.geometry.startLevel).toBe(start);
    expect(r.geometry.inputBits).toBe(64 - t0sz);
    expect(r.geometry.indexBits[start]).toBe(bits);
    expect(r.geometry.levelShift).toEqual(shifts);
    for (let l = 1; l < start; l++) expect(r.geometry.indexBits[l]).toBe(g - 3);
  });

  it("allows T0SZ 12 only with 52-bit VAs and the 64K granule, and up to 48/47 only with STT", () => {
    expect(stage1Geometry(GRANULE_64K, 12, { vax52: true })).toMatchObject({ ok: true, geometry: { startLevel: 3, indexBits: [0, 13, 13, 10] } });
    expect(stage1Geometry(GRANULE_4K, 48, { stt: true })).toMatchObject({ ok: true, geometry: { startLevel: 1, indexBits: [0, 4] } });
    expect(stage1Geometry(GRANULE_64K, 47, { stt: true })).toMatchObject({ ok: true, geometry: { startLevel: 1, indexBits: [0, 1] } });
  });

  it.each([
    [GRANULE_4K, 15, {}],
    [GRANULE_4K, 40, {}],
    [GRANULE_4K, 12, { vax52: true }],
    [GRANULE_64K, 12, {}],
    [GRANULE_64K, 48, { stt: true }],
    [GRANULE_16K, 0, {}],
    [GRANULE_16K, 63, {}],
    [GRANULE_4K, 20.5, {}],
  ] as const)("makes the CD ILLEGAL (C_BAD_CD) for granule %i, T0SZ %s %o", (g, t0sz, limits) => {
    expect(stage1Geometry(g, t0sz, limits)).toMatchObject({ ok: false, fault: "C_BAD_CD" });
  });
});

describe("stage-2 geometry from (granule, S2T0SZ, S2SL0) with concatenated start tables (DDI0487 D8.2.7, spec §2.3)", () => {
  it.each([
    // granule, S2T0SZ, SL0, start level (ours), start index bits, concatenated tables
    [GRANULE_4K, 16, 2, 4, 9, 1],
    [GRANULE_4K, 24, 1, 3, 10, 2],
    [GRANULE_4K, 22, 1, 3, 12, 8],
    [GRANULE_4K, 21, 1, 3, 13, 16],
    [GRANULE_4K, 25, 1, 3, 9, 1],
    [GRANULE_4K, 25, 0, 2, 18, 0],
    [GRANULE_4K, 34, 0, 2, 9, 1],
    [GRANULE_4K, 39, 0, 2, 4, 1],
    [GRANULE_16K, 17, 2, 3, 11, 1],
    [GRANULE_16K, 16, 2, 3, 12, 2],
    [GRANULE_16K, 28, 1, 2, 11, 1],
    [GRANULE_16K, 25, 1, 2, 14, 8],
    [GRANULE_64K, 16, 2, 3, 6, 1],
    [GRANULE_64K, 22, 1, 2, 13, 1],
    [GRANULE_64K, 18, 1, 2, 17, 16],
    [GRANULE_64K, 35, 0, 1, 13, 1],
  ] as const)("%i-bit granule, S2T0SZ %i, SL0 %i", (g, t0sz, sl0, start, bits, tables) => {
    const r = stage2Geometry(g, t0sz, sl0);
    if (tables === 0) {
      // 18 bits left for ARM level 2 of a 4K table: more than 16 concatenated tables.
      expect(r).toMatchObject({ ok: false, fault: "C_BAD_STE" });
      return;
    }
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.geometry.startLevel).toBe(start);
    expect(r.geometry.indexBits[start]).toBe(bits);
    expect(r.geometry.inputBits).toBe(64 - t0sz);
    expect(startTableCount(r.geometry, g)).toBe(tables);
    expect(stage2Sl0(g, start)).toBe(sl0);
  });

  it.each([
    ["SL0 too deep for the IPA size (4K, 30-bit IPA from ARM level 0)", GRANULE_4K, 34, 2, {}],
    ["more than 16 concatenated tables (4K, 44-bit IPA from ARM level 1)", GRANULE_4K, 20, 1, {}],
    ["SL0 = 3 without STT", GRANULE_4K, 24, 3, {}],
    ["SL0 = 3 for the 64K granule", GRANULE_64K, 24, 3, { stt: true }],
    ["S2T0SZ above 39 without STT", GRANULE_4K, 40, 0, {}],
    ["a 52-bit IPA without IAS 52", GRANULE_64K, 12, 2, {}],
    ["a 52-bit IPA with the 4K granule", GRANULE_4K, 12, 2, { ias: 52 }],
    ["an IPA wider than the IAS", GRANULE_4K, 16, 2, { ias: 44 }],
  ] as const)("makes the STE ILLEGAL (C_BAD_STE): %s", (_why, g, t0sz, sl0, limits) => {
    expect(stage2Geometry(g, t0sz, sl0, limits)).toMatchObject({ ok: false, fault: "C_BAD_STE" });
  });

  it("starts a 4K walk at ARM level 3 for SL0 = 3 with STT, and 52-bit IPAs with the 64K granule and IAS 52", () => {
    expect(stage2Geometry(GRANULE_4K, 48, 3, { stt: true })).toMatchObject({ ok: true, geometry: { startLevel: 1, indexBits: [0, 4] } });
    expect(stage2Geometry(GRANULE_64K, 12, 2, { ias: 52 })).toMatchObject({ ok: true, geometry: { startLevel: 3, indexBits: [0, 13, 13, 10] } });
  });

  it("carries the effective output size in the geometry for the walker", () => {
    expect(stage1Geometry(GRANULE_4K, 16, { outputBits: 44 })).toMatchObject({ ok: true, geometry: { outputBits: 44 } });
    expect(stage2Geometry(GRANULE_4K, 24, 1, { outputBits: 40 })).toMatchObject({ ok: true, geometry: { outputBits: 40 } });
    const r = stage1Geometry(GRANULE_4K, 16);
    expect(r.ok && "outputBits" in r.geometry).toBe(false);
  });

  it("maps SL0 to start levels per granule", () => {
    expect([0, 1, 2, 3].map((s) => stage2StartLevel(GRANULE_4K, s))).toEqual([2, 3, 4, undefined]);
    expect([0, 1, 2, 3].map((s) => stage2StartLevel(GRANULE_64K, s))).toEqual([1, 2, 3, undefined]);
    expect([0, 1, 2, 3].map((s) => stage2StartLevel(GRANULE_16K, s))).toEqual([1, 2, 3, undefined]);
  });

  it("never throws for any register values", () => {
    fc.assert(
      fc.property(fc.constantFrom<GranuleShift>(12, 14, 16), fc.integer({ min: -5, max: 70 }), fc.integer({ min: -1, max: 5 }), fc.boolean(), (g, t0sz, sl0, stt) => {
        const r2 = stage2Geometry(g, t0sz, sl0, { stt });
        const r1 = stage1Geometry(g, t0sz, { stt });
        for (const r of [r1, r2]) {
          if (!r.ok) continue;
          const top = r.geometry.startLevel;
          expect(r.geometry.levelShift[top]! + r.geometry.indexBits[top]!).toBe(r.geometry.inputBits);
          expect(r.geometry.indexBits[top]).toBeGreaterThan(0);
        }
      }),
    );
  });
});

describe("stage-1 descriptors (DDI0487 D8.3, spec §2.4)", () => {
  const s1 = vmsaStage1Format({ granuleShift: GRANULE_4K, outputBits: 44 });

  it("decodes the table entries a Linux guest wrote", () => {
    expect(decode(s1, "0x0000000040d34003", 4)).toMatchObject({ kind: EntryKind.Table, address: 0x40d34000, nextLevel: 3, perms: Perm.All });
    expect(decode(s1, "0x000000004117b003", 2)).toMatchObject({ kind: EntryKind.Table, address: 0x4117b000, nextLevel: 1 });
  });

  it.each([
    // leaf, perms: normal RW page (AttrIndx 1, ISH, AF, nG, EL0 RW, so never privileged-executable),
    // read-only page, MSI doorbell page (Device, OSH, XN)
    ["0x000000005a12cf47", 0x5a12c000, Perm.Read | Perm.Write | Perm.User],
    ["0x0000000040e84fc7", 0x40e84000, Perm.Read | Perm.User | Perm.Exec],
    ["0x0060000008090e4b", 0x08090000, Perm.Read | Perm.Write | Perm.User],
  ])("decodes the level-3 page %s a Linux guest wrote", (hex, address, perms) => {
    expect(decode(s1, hex, 1)).toEqual({ kind: EntryKind.Leaf, address, pageShift: 12, nextLevel: 0, perms, fault: WalkFault.None });
  });

  it.each([
    ["invalid (bit 0 clear)", "0x0000000040200f46", 2],
    ["zero", "0x0000000000000000", 1],
    ["block at ARM level 3 (reserved)", "0x0000000040200f45", 1],
    ["block at ARM level 0 (4K has none)", "0x0000000040200f45", 4],
    ["a level the granule does not have", "0x0000000040200f47", 5],
    ["level 0", "0x0000000040200f47", 0],
  ])("treats %s as a translation fault", (_what, hex, level) => {
    expect(decode(s1, hex, level)).toMatchObject({ kind: EntryKind.Invalid, fault: WalkFault.Translation });
  });

  it.each([
    [GRANULE_4K, 2, 21, "0x0000000040200f45", 0x40200000],
    [GRANULE_4K, 3, 30, "0x0000000080000f45", 0x80000000],
    [GRANULE_16K, 2, 25, "0x0000000042000f45", 0x42000000],
    [GRANULE_64K, 2, 29, "0x0000000060000f45", 0x60000000],
  ] as const)("decodes a %i-bit-granule block at level %i as a 2^%i leaf", (g, level, shift, hex, address) => {
    const f = vmsaStage1Format({ granuleShift: g });
    expect(decode(f, hex, level)).toMatchObject({ kind: EntryKind.Leaf, address, pageShift: shift });
  });

  it("ignores the low output-address bits of a block below its size", () => {
    expect(decode(s1, "0x00000000403ff745", 2)).toMatchObject({ kind: EntryKind.Leaf, address: 0x40200000, pageShift: 21 });
  });

  it("allows no 16K level-1 block and a 64K level-1 (4 TB) block only with 52-bit OAS", () => {
    expect(decode(vmsaStage1Format({ granuleShift: GRANULE_16K }), "0x0000001000000f45", 3).kind).toBe(EntryKind.Invalid);
    expect(decode(vmsaStage1Format({ granuleShift: GRANULE_64K }), "0x0000040000000f45", 3).kind).toBe(EntryKind.Invalid);
    const f52 = vmsaStage1Format({ granuleShift: GRANULE_64K, oa52: true, outputBits: 52 });
    expect(decode(f52, "0x0000040000000f45", 3)).toMatchObject({ kind: EntryKind.Leaf, address: 2 ** 42, pageShift: 42 });
  });

  it("reads OA[51:48] from bits [15:12] with the 64K granule on a 52-bit SMMU", () => {
    const f52 = vmsaStage1Format({ granuleShift: GRANULE_64K, oa52: true, outputBits: 52 });
    expect(decode(f52, "0x0000000040013003", 2)).toMatchObject({ kind: EntryKind.Table, address: 0x3_0000_4001_0000 });
    expect(decode(f52, "0x000000004001ff47", 1)).toMatchObject({ kind: EntryKind.Leaf, address: 0xf_0000_4001_0000 });
    // Without 52-bit OAS those bits are not address bits.
    expect(decode(vmsaStage1Format({ granuleShift: GRANULE_64K }), "0x0000000040013003", 2)).toMatchObject({ address: 0x40010000 });
  });

  it("faults with AddressSize for a table or output address at or above 2^outputBits", () => {
    expect(decode(s1, "0x0000100000000f47", 1)).toMatchObject({ kind: EntryKind.Fault, fault: WalkFault.AddressSize, address: 2 ** 44 });
    expect(decode(s1, "0x0000100000000003", 3)).toMatchObject({ kind: EntryKind.Fault, fault: WalkFault.AddressSize });
    expect(decode(s1, "0x00000fffffff0f47", 1)).toMatchObject({ kind: EntryKind.Leaf });
  });

  it("faults with AccessFlag for AF = 0 unless AFFD/HA, and reports AddressSize first", () => {
    expect(decode(s1, "0x000000005a12cb47", 1)).toMatchObject({ kind: EntryKind.Fault, fault: WalkFault.AccessFlag });
    expect(decode(vmsaStage1Format({ granuleShift: GRANULE_4K, accessFlagFaultDisabled: true }), "0x000000005a12cb47", 1)).toMatchObject({ kind: EntryKind.Leaf });
    expect(decode(s1, "0x0000100000000b47", 1)).toMatchObject({ fault: WalkFault.AddressSize });
  });

  it.each([
    // AP[2:1], PXN, UXN → perms
    ["AP=00 (privileged RW)", "0x0000000040000707", Perm.Read | Perm.Write | Perm.Exec],
    ["AP=01 (RW at EL0 too: never privileged-executable)", "0x0000000040000747", Perm.Read | Perm.Write | Perm.User],
    ["AP=10 (privileged RO)", "0x0000000040000787", Perm.Read | Perm.Exec],
    ["AP=11 (RO at EL0 too)", "0x00000000400007c7", Perm.Read | Perm.User | Perm.Exec],
    ["PXN", "0x00200000400007c7", Perm.Read | Perm.User],
    ["UXN only", "0x00400000400007c7", Perm.Read | Perm.User | Perm.Exec],
  ])("derives permissions for %s", (_what, hex, perms) => {
    expect(decode(s1, hex, 1).perms).toBe(perms);
  });

  it("grants write to a writable-clean (DBM) page only with hardware dirty management", () => {
    expect(decode(s1, "0x0008000040e84fc7", 1).perms & Perm.Write).toBe(0);
    expect(decode(vmsaStage1Format({ granuleShift: GRANULE_4K, hardwareDirty: true }), "0x0008000040e84fc7", 1).perms & Perm.Write).toBe(Perm.Write);
  });

  it("restricts later levels through APTable and PXNTable unless hierarchical attributes are disabled", () => {
    expect(decode(s1, "0x2000000040d34003", 4).perms).toBe(Perm.Read | Perm.Write | Perm.Exec);
    expect(decode(s1, "0x4000000040d34003", 4).perms).toBe(Perm.Read | Perm.User | Perm.Exec);
    expect(decode(s1, "0x0800000040d34003", 4).perms).toBe(Perm.Read | Perm.Write | Perm.User);
    expect(decode(s1, "0x1000000040d34003", 4).perms).toBe(Perm.All);
    expect(decode(vmsaStage1Format({ granuleShift: GRANULE_4K, hierarchicalAttributesDisabled: true }), "0x6800000040d34003", 4).perms).toBe(Perm.All);
  });

  it("decodes any bits at any level without throwing, into a consistent kind", () => {
    const formats = [GRANULE_4K, GRANULE_16K, GRANULE_64K].flatMap((g) => [vmsaStage1Format({ granuleShift: g, oa52: true, outputBits: 52 }), vmsaStage2Format({ granuleShift: g, xnx: true })]);
    const out = newEntryDecode();
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: -1, max: 6 }), fc.nat(formats.length - 1), (lo, hi, level, which) => {
        formats[which]!.decodeEntry(lo, hi, level, out);
        expect([EntryKind.Invalid, EntryKind.Table, EntryKind.Leaf, EntryKind.Fault]).toContain(out.kind);
        expect(Number.isSafeInteger(out.address)).toBe(true);
        if (out.kind === EntryKind.Leaf) expect(out.address % 2 ** out.pageShift).toBe(0);
        if (out.kind === EntryKind.Table) expect(out.nextLevel).toBe(level - 1);
      }),
    );
  });
});

describe("stage-2 descriptors (DDI0487 D8.3, spec §2.4)", () => {
  const s2 = vmsaStage2Format({ granuleShift: GRANULE_4K, outputBits: 48 });

  it.each([
    // Linux io-pgtable-arm stage 2: MemAttr 0xF, S2AP, SH=ISH, AF; XN is bit 54.
    ["RW page", "0x00000000400007ff", Perm.Read | Perm.Write | Perm.User | Perm.Exec],
    ["RW no-exec page", "0x00400000400007ff", Perm.Read | Perm.Write | Perm.User],
    ["read-only page", "0x000000004000077f", Perm.Read | Perm.User | Perm.Exec],
    ["write-only page", "0x00000000400007bf", Perm.Write | Perm.User | Perm.Exec],
    ["no-access page", "0x000000004000073f", Perm.User | Perm.Exec],
  ])("decodes a %s", (_what, hex, perms) => {
    expect(decode(s2, hex, 1)).toEqual({ kind: EntryKind.Leaf, address: 0x40000000, pageShift: 12, nextLevel: 0, perms, fault: WalkFault.None });
  });

  it("grants every permission through table descriptors, which carry no attributes", () => {
    expect(decode(s2, "0x7800000041000003", 3)).toMatchObject({ kind: EntryKind.Table, address: 0x41000000, perms: Perm.All });
  });

  it.each([
    // XN[1:0] with IDR3.XNX: 00 exec, 01 privileged XN, 10 XN, 11 unprivileged XN only.
    ["0x00000000400007ff", true, true],
    ["0x00200000400007ff", false, true],
    ["0x00400000400007ff", false, false],
    ["0x00600000400007ff", true, false],
  ])("reads XN of %s with XNX (privileged exec %s) and without (%s)", (hex, withXnx, without) => {
    expect((decode(vmsaStage2Format({ granuleShift: GRANULE_4K, xnx: true }), hex, 1).perms & Perm.Exec) !== 0).toBe(withXnx);
    expect((decode(s2, hex, 1).perms & Perm.Exec) !== 0).toBe(without);
  });

  it("applies S2AFFD and S2HD", () => {
    expect(decode(s2, "0x00000000400003ff", 1)).toMatchObject({ kind: EntryKind.Fault, fault: WalkFault.AccessFlag });
    expect(decode(vmsaStage2Format({ granuleShift: GRANULE_4K, accessFlagFaultDisabled: true }), "0x00000000400003ff", 1).kind).toBe(EntryKind.Leaf);
    expect(decode(vmsaStage2Format({ granuleShift: GRANULE_4K, hardwareDirty: true }), "0x000800004000077f", 1).perms & Perm.Write).toBe(Perm.Write);
  });

  it("decodes the CLI layouts of both stages", () => {
    expect(decodeLayout(vmsaLayouts.s2leaf, fromWords64(["0x00400000400007ff"]))).toEqual({
      Valid: 1,
      Type: 1,
      MemAttr: 0xf,
      S2AP: 3,
      SH: 3,
      AF: 1,
      OutputAddress: 0x40000000,
      DBM: 0,
      Contiguous: 0,
      XN: 2,
      Software: 0,
    });
    expect(decodeLayout(vmsaLayouts.s1leaf, fromWords64(["0x0060000008090e4b"]))).toEqual({
      Valid: 1,
      Type: 1,
      AttrIndx: 2,
      NS: 0,
      AP: 1,
      SH: 2,
      AF: 1,
      nG: 1,
      OutputAddress: 0x08090000,
      DBM: 0,
      Contiguous: 0,
      PXN: 1,
      UXN: 1,
      Software: 0,
    });
  });
});

describe("table writers (PageTableEncoder)", () => {
  const g4 = stage1Geometry(GRANULE_4K, 16);
  if (!g4.ok) throw new Error("geometry");
  const e1 = vmsaStage1Encoder({ granuleShift: GRANULE_4K, geometry: g4.geometry });
  const out = new Uint32Array(2);

  it("writes the stage-1 entries a Linux guest wrote", () => {
    e1.encodeTable(0x40d34000, 4, out);
    expect(encoded(out)).toBe("0x0000000040d34003");
    e1.encodeLeaf(0x5a12c000, 12, Perm.All, 1, out);
    expect(encoded(out)).toBe("0x000000005a12cf47");
    e1.encodeLeaf(0x40e84000, 12, Perm.Read | Perm.User | Perm.Exec, 1, out);
    expect(encoded(out)).toBe("0x0000000040e84fc7");
    e1.encodeLeaf(0x40200000, 21, Perm.ReadWrite | Perm.User, 2, out);
    expect(encoded(out)).toBe("0x0060000040200f45");
  });

  it("writes Linux's stage-2 leaves", () => {
    const g = stage2Geometry(GRANULE_4K, 24, 1);
    if (!g.ok) throw new Error("geometry");
    const e2 = vmsaStage2Encoder({ granuleShift: GRANULE_4K, geometry: g.geometry });
    e2.encodeLeaf(0x40000000, 12, Perm.ReadWrite | Perm.Exec, 1, out);
    expect(encoded(out)).toBe("0x00000000400007ff");
    e2.encodeLeaf(0x40000000, 30, Perm.Read, 3, out);
    expect(encoded(out)).toBe("0x004000004000077d");
    e2.encodeTable(0x41000000, 3, out);
    expect(encoded(out)).toBe("0x0000000041000003");
    // Two concatenated 4 KiB tables at the start level.
    expect(e2.tableBytes(3)).toBe(8192);
    expect(e2.tableBytes(2)).toBe(4096);
  });

  it("sizes tables by granule and start-level width", () => {
    expect(e1.tableBytes(4)).toBe(4096);
    const g16 = stage1Geometry(GRANULE_16K, 16);
    if (!g16.ok) throw new Error("geometry");
    const e16 = vmsaStage1Encoder({ granuleShift: GRANULE_16K, geometry: g16.geometry });
    expect(e16.tableBytes(4)).toBe(16);
    expect(e16.tableBytes(3)).toBe(16384);
  });

  it("says where leaves may go", () => {
    expect([1, 2, 3, 4].map((l) => e1.leafAllowed(12 + 9 * (l - 1), l))).toEqual([true, true, true, false]);
    expect(e1.leafAllowed(21, 1)).toBe(false);
    const g64 = stage1Geometry(GRANULE_64K, 16);
    if (!g64.ok) throw new Error("geometry");
    const e64 = vmsaStage1Encoder({ granuleShift: GRANULE_64K, geometry: g64.geometry });
    expect([1, 2, 3].map((l) => e64.leafAllowed(16 + 13 * (l - 1), l))).toEqual([true, true, false]);
    const e64x = vmsaStage1Encoder({ granuleShift: GRANULE_64K, geometry: g64.geometry, oa52: true });
    expect(e64x.leafAllowed(42, 3)).toBe(true);
  });

  it("writes OA[51:48] into bits [15:12] with the 64K granule on a 52-bit SMMU", () => {
    const g64 = stage1Geometry(GRANULE_64K, 16);
    if (!g64.ok) throw new Error("geometry");
    vmsaStage1Encoder({ granuleShift: GRANULE_64K, geometry: g64.geometry, oa52: true }).encodeTable(0x3_0000_4001_0000, 2, out);
    expect(encoded(out)).toBe("0x0000000040013003");
  });

  it("refuses misaligned or unencodable addresses and misplaced leaves (caller bugs)", () => {
    expect(() => e1.encodeLeaf(0x40201000, 21, Perm.All, 2, out)).toThrow(RangeError);
    expect(() => e1.encodeTable(2 ** 48, 3, out)).toThrow(RangeError);
    expect(() => e1.encodeLeaf(0, 39, Perm.All, 4, out)).toThrow(RangeError);
  });

  it("round-trips every leaf and table the writers can place through the decoders", () => {
    const cases = [GRANULE_4K, GRANULE_16K, GRANULE_64K].map((g) => {
      const geo = stage1Geometry(g, 16);
      if (!geo.ok) throw new Error("geometry");
      return {
        g,
        pairs: [
          [vmsaStage1Encoder({ granuleShift: g, geometry: geo.geometry }), vmsaStage1Format({ granuleShift: g })],
          [vmsaStage2Encoder({ granuleShift: g, geometry: geo.geometry }), vmsaStage2Format({ granuleShift: g })],
        ] as const,
      };
    });
    const dec = newEntryDecode();
    fc.assert(
      fc.property(fc.nat(2), fc.nat(1), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 2 ** 36 - 1 }), fc.integer({ min: 0, max: 15 }), (gi, si, level, frame, perms) => {
        const { g, pairs } = cases[gi]!;
        const [enc, fmt] = pairs[si]!;
        const shift = g + (level - 1) * (g - 3);
        const address = (frame * 2 ** shift) % 2 ** 48;
        const aligned = address - (address % 2 ** shift);
        if (enc.leafAllowed(shift, level)) {
          enc.encodeLeaf(aligned, shift, perms | Perm.Read, level, out);
          fmt.decodeEntry(out[0]!, out[1]!, level, dec);
          expect(dec).toMatchObject({ kind: EntryKind.Leaf, address: aligned, pageShift: shift });
          expect(dec.perms & Perm.Write).toBe(perms & Perm.Write);
        }
        if (level > 1 && level <= (g === 16 ? 3 : 4)) {
          const table = aligned - (aligned % 2 ** g);
          enc.encodeTable(table, level, out);
          fmt.decodeEntry(out[0]!, out[1]!, level, dec);
          expect(dec).toMatchObject({ kind: EntryKind.Table, address: table, nextLevel: level - 1 });
        }
      }),
    );
  });
});

describe("walking a real Linux guest's stage-1 tables with these decoders", () => {
  it("reproduces every translation QEMU performed that is still mapped in the dump", () => {
    const base = decodeLayout(strtabBaseLayout, fromWords64([fixture.strtab_base])).ADDR;
    const cfg = decodeLayout(strtabBaseCfgLayout, Uint32Array.of(Number(fixture.strtab_base_cfg)));
    expect(cfg.FMT).toBe(1);
    const split = cfg.SPLIT;
    for (const t of fixture.translations) {
      const sid = Number(t.sid);
      const iova = Number(t.iova);
      const walk = t.at_dump.walk;
      const l1 = walk.find((s) => s.what === "l1_std")!;
      expect(Number(l1.addr)).toBe(base + strtabL1Index(sid, split) * 8);
      const l1std = decodeLayout(l1StdLayout, fromWords64([l1.val as string]));
      const steStep = walk.find((s) => s.what === "ste")!;
      expect(Number(steStep.addr)).toBe(l1std.L2Ptr + strtabL2Index(sid, split) * 64);
      const ste = decodeSte(fromWords64(steStep.val as string[]));
      const cdStep = walk.find((s) => s.what === "cd")!;
      expect(Number(cdStep.addr)).toBe(ste.S1ContextPtr);
      const cd = decodeCd(fromWords64(cdStep.val as string[]));
      const granule = granuleFromTg0(cd.TG0)!;
      const geo = stage1Geometry(granule, cd.T0SZ);
      if (!geo.ok) throw new Error(geo.reason);
      const format = vmsaStage1Format({ granuleShift: granule, outputBits: 44 });
      let table = cd.TTB0;
      let perms: number = Perm.All;
      let level = geo.geometry.startLevel;
      const out = newEntryDecode();
      for (const step of walk.filter((s) => s.what === "pte")) {
        expect(4 - step.level!).toBe(level);
        const index = Math.floor(iova / 2 ** geo.geometry.levelShift[level]!) % 2 ** geo.geometry.indexBits[level]!;
        expect(Number(step.addr)).toBe(table + index * 8);
        const [lo, hi] = halves(step.val as string);
        format.decodeEntry(lo, hi, level, out);
        perms &= out.perms;
        if (out.kind === EntryKind.Table) {
          table = out.address;
          level = out.nextLevel;
          continue;
        }
        expect(out.kind).toBe(EntryKind.Leaf);
        expect(out.pageShift).toBe(Math.log2(t.at_dump.page_size));
        expect(out.address + (iova % 2 ** out.pageShift)).toBe(Number(t.at_dump.translated));
        expect((perms & Perm.Write) !== 0).toBe(t.at_dump.write);
        expect((perms & Perm.Read) !== 0).toBe(t.at_dump.read);
        level = 0;
      }
      expect(level).toBe(0);
    }
  });
});
