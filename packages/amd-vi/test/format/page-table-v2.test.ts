import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { EntryKind, Perm, PageWalker, WalkFault, fromWords64, newEntryDecode, newWalkResult, toHex64, type EntryReader } from "@viommu/core";
import {
  amdV2Geometry,
  amdV2PageTableEncoder,
  amdV2PageTableFormat,
  decodeGcr3Entry,
  encodeGcr3Entry,
  gcr3Index,
  gcr3TableLevels,
  v2PteLayout,
} from "../../src/format/index.js";

function decode(word: string, level: number): ReturnType<typeof newEntryDecode> {
  const raw = fromWords64([word]);
  const out = newEntryDecode();
  amdV2PageTableFormat.decodeEntry(raw[0]!, raw[1]!, level, out);
  return out;
}

function hex(fill: (out: Uint32Array) => void): string {
  const out = new Uint32Array(2);
  fill(out);
  return toHex64(out)[0]!;
}

describe("v2 entries as Linux x86_64.h writes them (spec x86.md B4.2)", () => {
  it("table: P | R/W | U/S | A = 0x27 plus the address", () => {
    expect(hex((o) => amdV2PageTableEncoder.encodeTable(0x123456000, 4, o))).toBe("0x0000000123456027");
    expect(decode("0x0000000123456027", 4)).toMatchObject({ kind: EntryKind.Table, address: 0x123456000, nextLevel: 3, perms: Perm.All });
  });
  it.each([
    ["4 KiB writable: P|RW|US|A|D = 0x67", 0xabcde000, 12, Perm.ReadWrite, 1, "0x00000000abcde067"],
    ["4 KiB read-only: P|US|A = 0x25", 0xabcde000, 12, Perm.Read, 1, "0x00000000abcde025"],
    ["2 MiB writable: 0x67 | PS", 0xabc00000, 21, Perm.ReadWrite, 2, "0x00000000abc000e7"],
    ["1 GiB read-only: 0x25 | PS", 0x40000000, 30, Perm.Read, 3, "0x00000000400000a5"],
  ])("leaf %s", (_what, address, pageShift, perms, level, word) => {
    expect(hex((o) => amdV2PageTableEncoder.encodeLeaf(address, pageShift, perms, level, o))).toBe(word);
    const d = decode(word, level);
    expect(d).toMatchObject({ kind: EntryKind.Leaf, address, pageShift });
    expect((d.perms & Perm.Write) !== 0).toBe((perms & Perm.Write) !== 0);
    expect(d.perms & (Perm.Read | Perm.User | Perm.Exec)).toBe(Perm.Read | Perm.User | Perm.Exec);
  });
  it("honours NX (bit 63) and a clear U/S", () => {
    expect(decode("0x80000000abcde067", 1).perms).toBe(Perm.Read | Perm.Write | Perm.User);
    expect(decode("0x00000000abcde063", 1).perms).toBe(Perm.Read | Perm.Write | Perm.Exec);
  });
  it("accepts PAT (bit 12) in a 2 MiB leaf but faults on reserved bits 20:13", () => {
    expect(decode("0x00000000abc010e7", 2)).toMatchObject({ kind: EntryKind.Leaf, address: 0xabc00000 });
    expect(decode("0x00000000abc020e7", 2)).toMatchObject({ kind: EntryKind.Fault, fault: WalkFault.Reserved });
    expect(decode("0x0000000040002080", 3).kind).toBe(EntryKind.Invalid);
    expect(decode("0x00000000400020a5", 3)).toMatchObject({ kind: EntryKind.Fault });
  });
  it("faults PS at level 4 and 5, reads bit 7 of a level-1 PTE as PAT", () => {
    expect(decode("0x00000000000000a7", 4).kind).toBe(EntryKind.Fault);
    expect(decode("0x00000000000000a7", 5).kind).toBe(EntryKind.Fault);
    expect(decode("0x00000000abcde0a7", 1)).toMatchObject({ kind: EntryKind.Leaf, pageShift: 12 });
  });
  it("names the fields as the x86 spec does", () => {
    expect(v2PteLayout.fields.map((f) => f.name)).toEqual(["P", "RW", "US", "PWT", "PCD", "A", "D", "PS", "G", "Address", "NX"]);
  });
  it("decodes random words without throwing", () => {
    const out = newEntryDecode();
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 6 }), (lo, hi, level) => {
        amdV2PageTableFormat.decodeEntry(lo, hi, level, out);
      }),
    );
  });
});

class EntryMemory implements EntryReader {
  readonly words = new Map<number, bigint>();
  readEntry(address: number, out: Uint32Array): boolean {
    const w = this.words.get(address) ?? 0n;
    out[0] = Number(w & 0xffffffffn);
    out[1] = Number(w >> 32n);
    return true;
  }
}

describe("v2 walks", () => {
  it("walks four levels to a 2 MiB page and denies writes through a read-only table", () => {
    const mem = new EntryMemory();
    mem.words.set(0x1000 + 1 * 8, 0x2027n); // PML4[1] (IOVA bit 39) → 0x2000
    mem.words.set(0x2000, 0x3025n); // PDPT[0] → 0x3000, R/W clear
    mem.words.set(0x3000 + 2 * 8, 0xabc000e7n); // PD[2] 2 MiB
    const out = newWalkResult();
    const walker = new PageWalker();
    const iova = 2 ** 39 + 2 * 0x200000 + 0x1234;
    walker.walk(amdV2PageTableFormat, amdV2Geometry(4), 0x1000, iova, Perm.Read, mem, out);
    expect(out).toMatchObject({ ok: true, output: 0xabc01234, pageShift: 21 });
    walker.walk(amdV2PageTableFormat, amdV2Geometry(4), 0x1000, iova, Perm.Write, mem, out);
    expect(out).toMatchObject({ ok: false, fault: WalkFault.Permission });
  });
  it("has 48- and 57-bit input ranges", () => {
    expect(amdV2Geometry(4).inputBits).toBe(48);
    expect(amdV2Geometry(5).inputBits).toBe(57);
  });
});

describe("GCR3 table entries (B4.2; Linux GCR3_VALID, __get_gcr3_pte)", () => {
  it("encodes root | GCR3_VALID and decodes it back", () => {
    expect(hex((o) => encodeGcr3Entry(0x123456000, o))).toBe("0x0000000123456001");
    expect(decodeGcr3Entry(0x23456001, 0x1)).toBe(0x123456000);
    expect(decodeGcr3Entry(0x23456000, 0x1)).toBeUndefined();
  });
  it("indexes GLX + 1 levels 9 PASID bits at a time", () => {
    expect(gcr3TableLevels(0)).toBe(1);
    expect(gcr3TableLevels(1)).toBe(2);
    expect(gcr3Index(0x12345, 0)).toBe(0x145);
    expect(gcr3Index(0x12345, 1)).toBe(0x91);
  });
});
