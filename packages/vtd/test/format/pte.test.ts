import fc from "fast-check";
import { checkProperty } from "../support.js";
import { describe, expect, it } from "vitest";
import { EntryKind, Perm, WalkFault, fromWords64, newEntryDecode, toWords64 } from "@viommu/core";
import {
  decodeFlPte,
  decodeSlPte,
  encodeFlPte,
  encodeSlPte,
  FlPteFormat,
  flPteReservedMasks,
  SlPteFormat,
  slPteReservedMasks,
  SLLPS_2M,
  VTD_GEOMETRY_39,
  VTD_GEOMETRY_48,
  VTD_GEOMETRY_57,
  vtdStructures,
  vtdTableGeometry,
} from "../../src/format/index.js";

const hex = (v: bigint | undefined): string | undefined => (v === undefined ? undefined : `0x${v.toString(16).padStart(16, "0")}`);
const halves = (v: bigint): [number, number] => [Number(v & 0xffffffffn), Number(v >> 32n)];

describe("VT-d table geometry", () => {
  it("indexes 9 bits per level over 4 KiB pages: 39-, 48- and 57-bit inputs", () => {
    expect(VTD_GEOMETRY_39).toEqual({ startLevel: 3, levelShift: [0, 12, 21, 30], indexBits: [0, 9, 9, 9], inputBits: 39 });
    expect(VTD_GEOMETRY_48).toEqual({ startLevel: 4, levelShift: [0, 12, 21, 30, 39], indexBits: [0, 9, 9, 9, 9], inputBits: 48 });
    expect(VTD_GEOMETRY_57).toEqual({ startLevel: 5, levelShift: [0, 12, 21, 30, 39, 48], indexBits: [0, 9, 9, 9, 9, 9], inputBits: 57 });
    expect(vtdTableGeometry(4, 39).inputBits).toBe(39);
  });
});

describe("second-level entries (VT-d §9.8)", () => {
  /**
   * QEMU's vtd_spte_rsvd / vtd_spte_rsvd_large for aw-bits = 48 (hw/i386/intel_iommu_internal.h,
   * ../shared/spec/x86.md A5.1): VTD_SL_IGN_COM = 0xBFF0_0000_0000_0000, so bits 48–51 and 62 are reserved above HAW.
   */
  const cases = [
    {
      name: "QEMU legacy mode, aw-bits 48",
      options: { haw: 48 },
      entry: [0x400f_0000_0000_0800n, 0x400f_0000_0000_0800n, 0x400f_0000_0000_0800n, 0x400f_0000_0000_0880n, 0x400f_0000_0000_0880n],
      large: [undefined, 0x400f_0000_001f_f800n, 0x400f_0000_3fff_f800n, undefined, undefined],
    },
    {
      name: "scalable mode or snoop control (SNP allowed in leaves)",
      options: { haw: 48, snoop: true },
      entry: [0x400f_0000_0000_0000n, 0x400f_0000_0000_0800n, 0x400f_0000_0000_0800n, 0x400f_0000_0000_0880n, 0x400f_0000_0000_0880n],
      large: [undefined, 0x400f_0000_001f_f000n, 0x400f_0000_3fff_f000n, undefined, undefined],
    },
    {
      name: "stale-tm with device-TLB (TM allowed in leaves)",
      options: { haw: 48, staleTm: true },
      entry: [0x000f_0000_0000_0800n, 0x400f_0000_0000_0800n, 0x400f_0000_0000_0800n, 0x400f_0000_0000_0880n, 0x400f_0000_0000_0880n],
      large: [undefined, 0x000f_0000_001f_f800n, 0x000f_0000_3fff_f800n, undefined, undefined],
    },
    {
      name: "HAW 39 and SLLPS = 2 MiB only (PS reserved at level 3)",
      options: { haw: 39, sllps: SLLPS_2M },
      entry: [0x400f_ff80_0000_0800n, 0x400f_ff80_0000_0800n, 0x400f_ff80_0000_0880n, 0x400f_ff80_0000_0880n, 0x400f_ff80_0000_0880n],
      large: [undefined, 0x400f_ff80_001f_f800n, undefined, undefined, undefined],
    },
  ];
  for (const c of cases) {
    it(`has the reserved-bit masks of ${c.name}`, () => {
      const masks = slPteReservedMasks(c.options);
      expect(masks.entry.slice(1).map(hex)).toEqual(c.entry.map(hex));
      expect(masks.largeLeaf.slice(1).map(hex)).toEqual(c.large.map(hex));
    });
  }

  const sl = new SlPteFormat({ haw: 48 });
  const vectors: { name: string; value: bigint; level: number; format?: SlPteFormat; kind: number; address?: number; pageShift?: number; perms?: number; fault?: number }[] = [
    { name: "the real guest's 4 KiB leaf 0x3BBD003", value: 0x03bb_d003n, level: 1, kind: EntryKind.Leaf, address: 0x03bb_d000, pageShift: 12, perms: Perm.ReadWrite | Perm.User },
    { name: "the real guest's level-4 table entry 0x3BBF003", value: 0x03bb_f003n, level: 4, kind: EntryKind.Table, address: 0x03bb_f000 },
    { name: "a read-only leaf", value: 0x5001n, level: 1, kind: EntryKind.Leaf, address: 0x5000, pageShift: 12, perms: Perm.Read | Perm.User },
    { name: "a write-only leaf (present: W is set)", value: 0x5002n, level: 1, kind: EntryKind.Leaf, address: 0x5000, pageShift: 12, perms: Perm.Write | Perm.User },
    { name: "a leaf with X", value: 0x5007n, level: 1, kind: EntryKind.Leaf, address: 0x5000, pageShift: 12, perms: Perm.All },
    { name: "R = W = 0 (not present)", value: 0x5000n, level: 1, kind: EntryKind.Invalid, fault: WalkFault.Translation },
    { name: "X alone (not present)", value: 0x5004n, level: 2, kind: EntryKind.Invalid, fault: WalkFault.Translation },
    { name: "a 2 MiB leaf", value: 0x4020_0083n, level: 2, kind: EntryKind.Leaf, address: 0x4020_0000, pageShift: 21, perms: Perm.ReadWrite | Perm.User },
    { name: "a 2 MiB leaf with bit 12 set", value: 0x4020_1083n, level: 2, kind: EntryKind.Fault, fault: WalkFault.Reserved },
    { name: "a 1 GiB leaf", value: 0x8000_0083n, level: 3, kind: EntryKind.Leaf, address: 0x8000_0000, pageShift: 30, perms: Perm.ReadWrite | Perm.User },
    { name: "a 1 GiB leaf with bit 21 set", value: 0x8020_0083n, level: 3, kind: EntryKind.Fault, fault: WalkFault.Reserved },
    { name: "PS at level 4", value: 0x8000_0083n, level: 4, kind: EntryKind.Fault, fault: WalkFault.Reserved },
    { name: "PS at level 5", value: 0x8000_0083n, level: 5, kind: EntryKind.Fault, fault: WalkFault.Reserved },
    { name: "bit 7 in a 4 KiB leaf (ignored)", value: 0x1083n, level: 1, kind: EntryKind.Leaf, address: 0x1000, pageShift: 12, perms: Perm.ReadWrite | Perm.User },
    { name: "SNP without snoop control", value: 0x1803n, level: 1, kind: EntryKind.Fault, fault: WalkFault.Reserved },
    { name: "SNP in scalable mode", value: 0x1803n, level: 1, format: new SlPteFormat({ haw: 48, snoop: true }), kind: EntryKind.Leaf, address: 0x1000, pageShift: 12, perms: Perm.ReadWrite | Perm.User },
    { name: "SNP in a table entry even in scalable mode", value: 0x1803n, level: 2, format: new SlPteFormat({ haw: 48, snoop: true }), kind: EntryKind.Fault, fault: WalkFault.Reserved },
    { name: "TM", value: 0x4000_0000_0000_1003n, level: 1, kind: EntryKind.Fault, fault: WalkFault.Reserved },
    { name: "TM under stale-tm", value: 0x4000_0000_0000_1003n, level: 1, format: new SlPteFormat({ haw: 48, staleTm: true }), kind: EntryKind.Leaf, address: 0x1000, pageShift: 12, perms: Perm.ReadWrite | Perm.User },
    { name: "ignored bits [61:52] and 63", value: 0xbff0_0000_0000_1003n, level: 1, kind: EntryKind.Leaf, address: 0x1000, pageShift: 12, perms: Perm.ReadWrite | Perm.User },
    { name: "an address bit at HAW", value: 0x0001_0000_0000_1003n, level: 1, kind: EntryKind.Fault, fault: WalkFault.Reserved },
    { name: "an address bit below HAW 52", value: 0x000f_ffff_ffff_f003n, level: 1, format: new SlPteFormat({ haw: 52 }), kind: EntryKind.Leaf, address: 0x000f_ffff_ffff_f000, pageShift: 12, perms: Perm.ReadWrite | Perm.User },
    { name: "PS at level 2 when SLLPS lacks 2 MiB", value: 0x4020_0083n, level: 2, format: new SlPteFormat({ haw: 48, sllps: 0 }), kind: EntryKind.Fault, fault: WalkFault.Reserved },
    { name: "a level outside 1..5", value: 0x1003n, level: 6, kind: EntryKind.Fault, fault: WalkFault.Reserved },
  ];
  for (const v of vectors) {
    it(`decodes ${v.name}`, () => {
      const out = newEntryDecode();
      (v.format ?? sl).decodeEntry(...halves(v.value), v.level, out);
      expect(out.kind).toBe(v.kind);
      if (v.fault !== undefined) expect(out.fault).toBe(v.fault);
      if (v.kind === EntryKind.Leaf) expect([out.address, out.pageShift, out.perms, out.fault]).toEqual([v.address, v.pageShift, v.perms, WalkFault.None]);
      if (v.kind === EntryKind.Table) expect([out.address, out.nextLevel, out.perms]).toEqual([v.address, v.level - 1, Perm.ReadWrite | Perm.User]);
    });
  }

  it("encodes table entries and leaves as Linux writes them (the fixture's 0x3BBF003 and 0x3BBD003)", () => {
    const out = new Uint32Array(2);
    sl.encodeTable(0x03bb_f000, 4, out);
    expect([...out]).toEqual([0x03bb_f003, 0]);
    sl.encodeLeaf(0x03bb_d000, 12, Perm.ReadWrite, 1, out);
    expect([...out]).toEqual([0x03bb_d003, 0]);
    sl.encodeLeaf(0x8_4020_0000, 21, Perm.Read, 2, out);
    expect([...out]).toEqual([0x4020_0081, 0x8]);
    expect(() => sl.encodeLeaf(0x4020_1000, 21, Perm.Read, 2, out)).toThrow(RangeError);
    expect(() => sl.encodeLeaf(0x1000, 12, Perm.None, 1, out)).toThrow(RangeError);
    expect(sl.leafAllowed(30, 3)).toBe(true);
    expect(sl.leafAllowed(30, 4)).toBe(false);
    expect(new SlPteFormat({ haw: 48, sllps: SLLPS_2M }).leafAllowed(30, 3)).toBe(false);
    expect(sl.tableBytes(4)).toBe(4096);
  });

  it("lays out the SL-PTE fields for the sl-pte structure decoder", () => {
    expect(decodeSlPte(fromWords64([0x4000_0000_4020_0b87n]))).toEqual({ R: 1, W: 1, X: 1, PS: 1, A: 1, D: 1, SNP: 1, ADDR: 0x4020_0000, TM: 1 });
    expect(toWords64(encodeSlPte({ R: 1, W: 1, X: 1, PS: 1, A: 1, D: 1, SNP: 1, ADDR: 0x4020_0000, TM: 1 }))).toEqual([0x4000_0000_4020_0b87n]);
    expect(vtdStructures.find((s) => s.id === "sl-pte")!.decode(fromWords64([0x03bb_d003n])).fields).toMatchObject({ R: 1, W: 1, ADDR: 0x03bb_d000 });
  });
});

describe("first-level entries (VT-d §9.7)", () => {
  it("has QEMU's first-level reserved masks for aw-bits 48 (VTD_FS_UPPER_IGNORED = 0xFFF0_0000_0000_0000)", () => {
    const m = flPteReservedMasks({ haw: 48, fl1gp: true });
    expect(m.entry.slice(1).map(hex)).toEqual(
      [0x000f_0000_0000_0000n, 0x000f_0000_0000_0000n, 0x000f_0000_0000_0000n, 0x000f_0000_0000_0080n, 0x000f_0000_0000_0080n].map(hex),
    );
    expect(m.largeLeaf.slice(1).map(hex)).toEqual([undefined, 0x000f_0000_001f_e000n, 0x000f_0000_3fff_e000n, undefined, undefined].map(hex));
    const no1g = flPteReservedMasks({ haw: 48 });
    expect(hex(no1g.entry[3])).toBe(hex(0x000f_0000_0000_0080n));
    expect(no1g.largeLeaf[3]).toBeUndefined();
  });

  const fl = new FlPteFormat({ haw: 48, fl1gp: true });
  const vectors: { name: string; value: bigint; level: number; format?: FlPteFormat; kind: number; address?: number; pageShift?: number; perms?: number }[] = [
    { name: "a Linux table entry (P, R/W, U/S, A)", value: 0x1234_5027n, level: 4, kind: EntryKind.Table, address: 0x1234_5000, perms: Perm.All },
    { name: "a user writable non-executable 4 KiB leaf", value: 0x8000_0000_1234_5067n, level: 1, kind: EntryKind.Leaf, address: 0x1234_5000, pageShift: 12, perms: Perm.ReadWrite | Perm.User },
    { name: "a supervisor read-only leaf", value: 0x5001n, level: 1, kind: EntryKind.Leaf, address: 0x5000, pageShift: 12, perms: Perm.Read | Perm.Exec },
    { name: "P = 0", value: 0x5066n, level: 1, kind: EntryKind.Invalid },
    { name: "a 2 MiB leaf with PAT (bit 12)", value: 0x4020_10a7n, level: 2, kind: EntryKind.Leaf, address: 0x4020_0000, pageShift: 21, perms: Perm.All },
    { name: "a 2 MiB leaf with bit 13 set", value: 0x4020_20a7n, level: 2, kind: EntryKind.Fault },
    { name: "a 1 GiB leaf", value: 0x4000_00a7n, level: 3, kind: EntryKind.Leaf, address: 0x4000_0000, pageShift: 30, perms: Perm.All },
    { name: "a 1 GiB leaf without FL1GP", value: 0x4000_00a7n, level: 3, format: new FlPteFormat({ haw: 48 }), kind: EntryKind.Fault },
    { name: "PS in a PML4E", value: 0x4000_00a7n, level: 4, kind: EntryKind.Fault },
    { name: "PS in a PML5E", value: 0x4000_00a7n, level: 5, kind: EntryKind.Fault },
    { name: "PAT (bit 7) in a 4 KiB leaf", value: 0x1087n, level: 1, kind: EntryKind.Leaf, address: 0x1000, pageShift: 12, perms: Perm.All },
    { name: "ignored bits [62:52]", value: 0x7ff0_0000_0000_1007n, level: 1, kind: EntryKind.Leaf, address: 0x1000, pageShift: 12, perms: Perm.All },
    { name: "an address bit at HAW", value: 0x0001_0000_0000_1007n, level: 1, kind: EntryKind.Fault },
    { name: "level 0", value: 0x1007n, level: 0, kind: EntryKind.Fault },
  ];
  for (const v of vectors) {
    it(`decodes ${v.name}`, () => {
      const out = newEntryDecode();
      (v.format ?? fl).decodeEntry(...halves(v.value), v.level, out);
      expect(out.kind).toBe(v.kind);
      if (v.kind === EntryKind.Invalid) expect(out.fault).toBe(WalkFault.Translation);
      if (v.kind === EntryKind.Fault) expect(out.fault).toBe(WalkFault.Reserved);
      if (v.kind === EntryKind.Leaf) expect([out.address, out.pageShift, out.perms]).toEqual([v.address, v.pageShift, v.perms]);
      if (v.kind === EntryKind.Table) expect([out.address, out.nextLevel, out.perms]).toEqual([v.address, v.level - 1, v.perms]);
    });
  }

  it("encodes table entries as 0x27 and leaves with A, D for writes, U/S for user and XD unless executable", () => {
    const out = new Uint32Array(2);
    fl.encodeTable(0x1234_5000, 4, out);
    expect([...out]).toEqual([0x1234_5027, 0]);
    fl.encodeLeaf(0x1234_5000, 12, Perm.ReadWrite | Perm.User, 1, out);
    expect([...out]).toEqual([0x1234_5067, 0x8000_0000]);
    fl.encodeLeaf(0x4000_0000, 30, Perm.Read | Perm.Exec, 3, out);
    expect([...out]).toEqual([0x4000_00a1, 0]);
    expect(new FlPteFormat({ haw: 48 }).leafAllowed(30, 3)).toBe(false);
  });

  it("lays out the FL-PTE fields", () => {
    const all = { P: 1, "R/W": 1, "U/S": 1, PWT: 1, PCD: 1, A: 1, D: 1, PS: 1, G: 1, EA: 1, ADDR: 0x4020_0000, XD: 1 };
    expect(decodeFlPte(fromWords64([0x8000_0000_4020_05ffn]))).toEqual(all);
    expect(toWords64(encodeFlPte(all))).toEqual([0x8000_0000_4020_05ffn]);
  });
});

describe("page-table decoders on hostile input", () => {
  const formats = [new SlPteFormat({ haw: 48 }), new SlPteFormat({ haw: 39, sllps: 0, snoop: true }), new FlPteFormat({ haw: 48 }), new FlPteFormat({ haw: 52, fl1gp: true })];

  it("never throw, and report a well-formed result for any bits at any level", () => {
    const out = newEntryDecode();
    checkProperty(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: -1, max: 7 }), (lo, hi, level) => {
        for (const f of formats) {
          f.decodeEntry(lo, hi, level, out);
          if (out.kind === EntryKind.Leaf) {
            expect(out.address % 2 ** out.pageShift).toBe(0);
            expect(out.address).toBeLessThan(2 ** f.options.haw);
          } else if (out.kind === EntryKind.Table) {
            expect(out.nextLevel).toBe(level - 1);
            expect(out.address % 4096).toBe(0);
          } else {
            expect(out.fault).not.toBe(WalkFault.None);
          }
        }
      }),
    );
  });

  it("decode what they encode, for every leaf size each allows", () => {
    const out = newEntryDecode();
    const raw = new Uint32Array(2);
    checkProperty(
      fc.property(fc.integer({ min: 0, max: 2 ** 36 - 1 }), fc.integer({ min: 1, max: 15 }), fc.constantFrom(1, 2, 3), (page, perms, level) => {
        for (const f of formats) {
          const shift = 12 + 9 * (level - 1);
          if (!f.leafAllowed(shift, level)) continue;
          const address = (page * 4096) % 2 ** Math.min(f.options.haw, 48);
          const aligned = address - (address % 2 ** shift);
          const p = perms | Perm.Read;
          f.encodeLeaf(aligned, shift, p, level, raw);
          f.decodeEntry(raw[0]!, raw[1]!, level, out);
          expect([out.kind, out.address, out.pageShift]).toEqual([EntryKind.Leaf, aligned, shift]);
          expect(out.perms & p & Perm.ReadWrite).toBe(p & Perm.ReadWrite);
        }
      }),
    );
  });
});
