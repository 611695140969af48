import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { EntryKind, Perm, PageWalker, WalkFault, fromWords64, newEntryDecode, newWalkResult, toHex64, type EntryReader } from "@viommu/core";
import {
  V1_PAGE_SHIFTS,
  amdV1Geometry,
  amdV1PageTableEncoder,
  amdV1PageTableFormat,
  v1ContiguousEntries,
  v1LeafShifts,
} from "../../src/format/index.js";

/** A sparse memory of 64-bit entries for the walker. */
class EntryMemory implements EntryReader {
  readonly words = new Map<number, bigint>();
  set(address: number, word: bigint): this {
    this.words.set(address, word);
    return this;
  }
  readEntry(address: number, out: Uint32Array): boolean {
    const w = this.words.get(address) ?? 0n;
    out[0] = Number(w & 0xffffffffn);
    out[1] = Number(w >> 32n);
    return true;
  }
}

function decode(word: string, level: number): ReturnType<typeof newEntryDecode> {
  const raw = fromWords64([word]);
  const out = newEntryDecode();
  amdV1PageTableFormat.decodeEntry(raw[0]!, raw[1]!, level, out);
  return out;
}

function encodeLeaf(address: number, pageShift: number, perms: number, level: number): string {
  const out = new Uint32Array(2);
  amdV1PageTableEncoder.encodeLeaf(address, pageShift, perms, level, out);
  return toHex64(out)[0]!;
}

const RW = Perm.Read | Perm.Write | Perm.Exec | Perm.User;

describe("v1 leaves with every NextLevel=7 page size (spec x86.md B4.1; Linux amdv1.h install/entry_oa)", () => {
  // Each word is worked out from the bit positions: PR = 1, NextLevel [11:9], address [51:12] with the
  // size run of 1s from bit 12 (2^(size−13) − 1 in the address field), IR (61) | IW (62).
  const vectors: [string, number, string, number, number][] = [
    ["4 KiB default", 1, "0x60000000abcde001", 0xabcde000, 12],
    ["8 KiB: bit 12 = 0", 1, "0x60000000abcdce01", 0xabcdc000, 13],
    ["16 KiB: bits 13:12 = 01", 1, "0x60000000abcd9e01", 0xabcd8000, 14],
    ["32 KiB: bits 14:12 = 011", 1, "0x60000000abcdbe01", 0xabcd8000, 15],
    ["1 MiB: seven 1s, the largest at level 1", 1, "0x60000000abc7fe01", 0xabc00000, 20],
    ["2 MiB default at level 2", 2, "0x60000000abc00001", 0xabc00000, 21],
    ["4 MiB at level 2", 2, "0x60000000ab9ffe01", 0xab800000, 22],
    ["512 MiB: the largest at level 2", 2, "0x600000006ffffe01", 0x60000000, 29],
    ["1 GiB default at level 3", 3, "0x6000000040000001", 0x40000000, 30],
    ["2 GiB at level 3", 3, "0x600000013ffffe01", 0x100000000, 31],
    ["2^51 at level 5, the largest size (ones in bits 49:12)", 5, "0x6003fffffffffe01", 0, 51],
  ];
  it.each(vectors)("%s decodes at level %i", (_what, level, word, address, pageShift) => {
    const d = decode(word, level);
    expect(d).toMatchObject({ kind: EntryKind.Leaf, address, pageShift, perms: RW });
  });
  // Linux sets FC (bit 60) on every leaf: amd_iommu_domain_alloc_paging_v1 enables
  // PT_FEAT_AMDV1_FORCE_COHERENCE and amdv1pt_iommu_set_prot adds AMDV1PT_FMT_FC.
  it.each(vectors)("%s is what the encoder writes (with FC, as Linux)", (_what, level, word, address, pageShift) => {
    expect(encodeLeaf(address, pageShift, Perm.ReadWrite, level)).toBe(`0x7${word.slice(3)}`);
  });

  it("covers every size from 4 KiB to 2^51 over the levels, with Linux's replica counts", () => {
    const all = new Set([1, 2, 3, 4, 5].flatMap((l) => v1LeafShifts(l)));
    expect([...all].sort((a, b) => a - b)).toEqual([...V1_PAGE_SHIFTS]);
    expect(V1_PAGE_SHIFTS[0]).toBe(12);
    expect(V1_PAGE_SHIFTS.at(-1)).toBe(51);
    expect(v1LeafShifts(6)).toEqual([]);
    expect([13, 14, 20].map((s) => v1ContiguousEntries(s, 1))).toEqual([2, 4, 256]);
  });

  it("refuses 512 GiB leaves as Linux does (hardware bug), and leaves at level 6", () => {
    expect(amdV1PageTableEncoder.leafAllowed(39, 4)).toBe(false);
    expect(amdV1PageTableEncoder.leafAllowed(40, 4)).toBe(true);
    expect(amdV1PageTableEncoder.leafAllowed(57, 6)).toBe(false);
    expect(() => encodeLeaf(0, 39, Perm.Read, 4)).toThrow(RangeError);
    // The hardware format itself can still express a 512 GiB page; the decoder accepts it.
    expect(decode("0x6000000000000001", 4)).toMatchObject({ kind: EntryKind.Leaf, pageShift: 39 });
  });

  it("writes IR alone for a read-only leaf", () => {
    expect(encodeLeaf(0xabcde000, 12, Perm.Read, 1)).toBe("0x30000000abcde001");
    expect(decode("0x20000000abcde001", 1).perms).toBe(Perm.Read | Perm.Exec | Perm.User);
  });
});

describe("v1 table entries (Linux amdv1pt_install_table: PR | NextLevel = L−1 | address | IR | IW)", () => {
  it("encodes and decodes a level-3 PDE pointing to a level-2 table at 0x123456000", () => {
    const out = new Uint32Array(2);
    amdV1PageTableEncoder.encodeTable(0x123456000, 3, out);
    expect(toHex64(out)).toEqual(["0x6000000123456401"]);
    expect(decode("0x6000000123456401", 3)).toMatchObject({ kind: EntryKind.Table, address: 0x123456000, nextLevel: 2, perms: RW });
  });
  it("decodes a skipping PDE (level 4 → level 2)", () => {
    expect(decode("0x6000000123456401", 4)).toMatchObject({ kind: EntryKind.Table, nextLevel: 2 });
    expect(amdV1PageTableFormat.skippedLevelBitsMustBeZero).toBe(true);
  });
});

describe("malformed v1 entries (invalid level encodings and reserved bits fault, never throw)", () => {
  it.each([
    ["PR = 0", "0x6000000123456400", 3, EntryKind.Invalid],
    ["NextLevel=7 at level 1 encoding 2 MiB (bigger than the table)", "0x60000000000ffe01", 1, EntryKind.Fault],
    ["NextLevel=7 at level 2 encoding 8 KiB (smaller than the entry)", "0x6000000000000e01", 2, EntryKind.Fault],
    ["NextLevel=7 with all address bits 1 (a 2^53 page)", "0x600fffffffffffff", 5, EntryKind.Fault],
    ["a PDE at level 1", "0x6000000000001201", 1, EntryKind.Fault],
    ["NextLevel equal to its own level", "0x6000000000001601", 3, EntryKind.Fault],
    ["a leaf at level 6", "0x6000000000000001", 6, EntryKind.Fault],
    ["PTE reserved bit 52", "0x6010000000000001", 1, EntryKind.Fault],
    ["PDE with bit 59 (U is leaf-only)", "0x6800000123456401", 3, EntryKind.Fault],
  ])("%s", (_what, word, level, kind) => {
    const d = decode(word, level);
    expect(d.kind).toBe(kind);
    if (kind === EntryKind.Fault) expect(d.fault).toBe(WalkFault.Reserved);
  });
  it("accepts U and FC on a leaf", () => {
    expect(decode("0x78000000abcde001", 1)).toMatchObject({ kind: EntryKind.Leaf, address: 0xabcde000 });
  });
  it("decodes random words at every level without throwing", () => {
    const out = newEntryDecode();
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 7 }), (lo, hi, level) => {
        amdV1PageTableFormat.decodeEntry(lo, hi, level, out);
        if (out.kind === EntryKind.Leaf) {
          expect(out.address % 2 ** out.pageShift).toBe(0);
          expect(out.address).toBeLessThan(2 ** 52);
        }
      }),
    );
  });
});

describe("v1 walks through the core walker", () => {
  it("translates through Mode 3 tables to a 16 KiB page and checks IR/IW at every level", () => {
    const mem = new EntryMemory()
      .set(0x1000 + 0 * 8, 0x6000000000002401n) // L3[0] → L2 table 0x2000
      .set(0x2000 + 1 * 8, 0x2000000000003201n) // L2[1] → L1 table 0x3000, read-only PDE
      .set(0x3000 + 4 * 8, 0x6000000012345e01n) // L1[4..7] 16 KiB page at 0x12344000 (bit 12 set, bit 13 clear)
      .set(0x3000 + 5 * 8, 0x6000000012345e01n);
    const walker = new PageWalker();
    const out = newWalkResult();
    const iova = 0x200000 + 5 * 0x1000 + 0x123; // L2 index 1, L1 index 5
    walker.walk(amdV1PageTableFormat, amdV1Geometry(3), 0x1000, iova, Perm.Read, mem, out);
    expect(out).toMatchObject({ ok: true, output: 0x12344000 + 0x1123, pageShift: 14, level: 1 });
    walker.walk(amdV1PageTableFormat, amdV1Geometry(3), 0x1000, iova, Perm.Write, mem, out);
    expect(out).toMatchObject({ ok: false, fault: WalkFault.Permission });
  });

  it("faults a skipped level whose IOVA bits are not zero", () => {
    // Mode 4 root entry skips level 3: IOVA bits [38:30] must be zero.
    const mem = new EntryMemory()
      .set(0x1000, 0x6000000000002401n) // L4[0] → level-2 table 0x2000 (NextLevel 2)
      .set(0x2000, 0x6000000040000001n); // L2[0]: a 2 MiB page at 0x40000000
    const walker = new PageWalker();
    const out = newWalkResult();
    walker.walk(amdV1PageTableFormat, amdV1Geometry(4), 0x1000, 0x1234, Perm.Read, mem, out);
    expect(out).toMatchObject({ ok: true, output: 0x40001234, pageShift: 21 });
    walker.walk(amdV1PageTableFormat, amdV1Geometry(4), 0x1000, 0x40001234, Perm.Read, mem, out);
    expect(out).toMatchObject({ ok: false, fault: WalkFault.Translation });
  });

  it("gives Mode M an input range of 2^(12+9M), and Mode 6 all 64 bits", () => {
    expect([1, 2, 3, 4, 5, 6].map((m) => amdV1Geometry(m).inputBits)).toEqual([21, 30, 39, 48, 57, 64]);
    expect(amdV1Geometry(6).indexBits[6]).toBe(7);
    expect(() => amdV1Geometry(7)).toThrow(RangeError);
  });
});
