import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  EntryKind,
  HOST_OWNER,
  HostMemory,
  HostPageTable,
  Perm,
  WalkFault,
  newEntryDecode,
  newWalkResult,
  x86PagingFormat,
  x86PagingGeometry,
  type EntryDecode,
  type PageTableEncoder,
  type PageTableFormat,
} from "../src/index.js";

// Vectors worked out by hand from the Intel SDM vol. 3 §4.5 entry layout (4-level and 5-level paging):
// [0] P, [1] R/W, [2] U/S, [5] A, [6] D, [7] PS (PAT in a PTE), [12] PAT of a large leaf, [51:12] address,
// [62:52] ignored, [63] XD.
const linux = x86PagingFormat({ name: "x86-test" });
const strict = x86PagingFormat({ name: "x86-strict", outputBits: 46, gigaPages: false, leafUserExec: "from-perms" });

/** Decodes a 64-bit entry value at `level`. */
function decoded(value: bigint, level: number, format: PageTableFormat = linux): EntryDecode {
  const out = newEntryDecode();
  format.decodeEntry(Number(value & 0xffff_ffffn), Number(value >> 32n), level, out);
  return out;
}

/** The 64-bit value an encoder writes. */
function written(encode: (out: Uint32Array) => void): bigint {
  const halves = new Uint32Array(2);
  encode(halves);
  return (BigInt(halves[1]!) << 32n) | BigInt(halves[0]!);
}

describe("x86-64 paging decoding (SDM vol. 3 §4.5)", () => {
  it.each([
    ["P clear is not present, whatever else is set", 0xfff0_0000_1234_5066n, 1, { kind: EntryKind.Invalid, fault: WalkFault.Translation }],
    ["a table entry P|R/W|U/S|A grants everything", 0x0000_0001_2345_6027n, 4, { kind: EntryKind.Table, address: 0x1_2345_6000, nextLevel: 3, perms: Perm.All }],
    ["R/W clear in a table: read-only below it", 0x0000_0000_0000_3025n, 3, { kind: EntryKind.Table, perms: Perm.Read | Perm.User | Perm.Exec }],
    ["XD (bit 63) takes execute away", 0x8000_0000_1234_5025n, 1, { kind: EntryKind.Leaf, perms: Perm.Read | Perm.User }],
    ["U/S clear takes user away", 0x0000_0000_1234_5063n, 1, { kind: EntryKind.Leaf, perms: Perm.Read | Perm.Write | Perm.Exec }],
    ["bit 7 of a PTE is PAT, not PS", 0x0000_0000_1234_50a5n, 1, { kind: EntryKind.Leaf, address: 0x1234_5000, pageShift: 12 }],
    ["a 2 MiB leaf keeps PAT (bit 12) out of its address", 0x0000_0000_4000_10e7n, 2, { kind: EntryKind.Leaf, address: 0x4000_0000, pageShift: 21 }],
    ["a 2 MiB leaf with bit 13 set faults", 0x0000_0000_4000_20e7n, 2, { kind: EntryKind.Fault, fault: WalkFault.Reserved }],
    ["a 1 GiB leaf", 0x0000_0001_4000_10a5n, 3, { kind: EntryKind.Leaf, address: 0x1_4000_0000, pageShift: 30 }],
    ["a 1 GiB leaf with bit 29 set faults", 0x0000_0000_6000_00e7n, 3, { kind: EntryKind.Fault, fault: WalkFault.Reserved }],
    ["PS in a PML4E faults", 0x0000_0000_0000_10a7n, 4, { kind: EntryKind.Fault, fault: WalkFault.Reserved }],
    ["PS in a PML5E faults", 0x0000_0000_0000_10a7n, 5, { kind: EntryKind.Fault, fault: WalkFault.Reserved }],
    ["bits 62:52 and 11:9 are ignored", 0x7ff0_0000_0000_1e27n, 3, { kind: EntryKind.Table, address: 0x1000, nextLevel: 2 }],
    ["address bit 51 is an address bit at width 52", 0x0008_0000_0000_1027n, 4, { kind: EntryKind.Table, address: 2 ** 51 + 0x1000 }],
    ["level 0 does not exist", 0x0000_0000_0000_1027n, 0, { kind: EntryKind.Fault, fault: WalkFault.Reserved }],
    ["level 6 does not exist", 0x0000_0000_0000_1027n, 6, { kind: EntryKind.Fault, fault: WalkFault.Reserved }],
  ])("%s", (_rule, word, level, expected) => {
    expect(decoded(word, level)).toMatchObject(expected);
  });

  it("faults address bits at or above a narrower output width, in tables and leaves", () => {
    expect(decoded(0x0000_3fff_ffff_f027n, 4, strict)).toMatchObject({ kind: EntryKind.Table, address: 0x3fff_ffff_f000 });
    expect(decoded(0x0000_4000_0000_0027n, 4, strict)).toMatchObject({ kind: EntryKind.Fault, fault: WalkFault.Reserved });
    expect(decoded(0x0008_0000_0000_0025n, 1, strict)).toMatchObject({ kind: EntryKind.Fault, fault: WalkFault.Reserved });
  });

  it("without 1 GiB pages PS at level 3 is reserved, while 2 MiB leaves stay", () => {
    expect(decoded(0x0000_0000_4000_00a7n, 3, strict)).toMatchObject({ kind: EntryKind.Fault, fault: WalkFault.Reserved });
    expect(decoded(0x0000_0000_4020_00a7n, 2, strict)).toMatchObject({ kind: EntryKind.Leaf, pageShift: 21 });
    expect(strict.leafAllowed(30, 3)).toBe(false);
    expect(linux.leafAllowed(30, 3)).toBe(true);
  });

  it("refuses an output width outside 32..52", () => {
    for (const outputBits of [31, 53, 40.5]) expect(() => x86PagingFormat({ name: "bad", outputBits })).toThrow(RangeError);
  });

  it("decodes any bits at any level without throwing, into a well-formed result", () => {
    const out = newEntryDecode();
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff }), fc.integer({ min: -1, max: 7 }), fc.boolean(), (lo, hi, level, narrow) => {
        const format = narrow ? strict : linux;
        format.decodeEntry(lo, hi, level, out);
        if (out.kind === EntryKind.Leaf) {
          expect(out.address % 2 ** out.pageShift).toBe(0);
          expect(out.address).toBeLessThan(2 ** (narrow ? 46 : 52));
        } else if (out.kind === EntryKind.Table) {
          expect([out.nextLevel, out.address % 4096]).toEqual([level - 1, 0]);
        } else {
          expect(out.fault).not.toBe(WalkFault.None);
        }
      }),
    );
  });
});

describe("x86-64 paging encoding", () => {
  it("writes tables as P|R/W|U/S|A (0x27) in both leaf modes", () => {
    expect(written((o) => linux.encodeTable(0x1_2345_6000, 4, o))).toBe(0x0000_0001_2345_6027n);
    expect(written((o) => linux.encodeTable(0xf_ffff_ffff_f000, 5, o))).toBe(0x000f_ffff_ffff_f027n);
    expect(written((o) => strict.encodeTable(0x1000, 2, o))).toBe(0x0000_0000_0000_1027n);
  });

  it.each([
    ["4 KiB writable: P|R/W|U/S|A|D", 0xabcde000, 12, Perm.ReadWrite, 1, 0x0000_0000_abcd_e067n],
    ["4 KiB read-only: P|U/S|A", 0xabcde000, 12, Perm.Read, 1, 0x0000_0000_abcd_e025n],
    ["2 MiB writable: 0x67 | PS", 0xabc00000, 21, Perm.ReadWrite, 2, 0x0000_0000_abc0_00e7n],
    ["1 GiB read-only above 4 GiB: 0x25 | PS", 0x1_4000_0000, 30, Perm.Read, 3, 0x0000_0001_4000_00a5n],
  ])("always-user leaf %s: U/S set and XD clear whatever perms say", (_what, address, pageShift, perms, level, word) => {
    expect(written((o) => linux.encodeLeaf(address, pageShift, perms, level, o))).toBe(word);
  });

  it.each([
    ["user writable, not executable: 0x67 with XD", 0x1234_5000, 12, Perm.ReadWrite | Perm.User, 1, 0x8000_0000_1234_5067n],
    ["supervisor read and execute: P|A only", 0x1234_5000, 12, Perm.Read | Perm.Exec, 1, 0x0000_0000_1234_5021n],
    ["2 MiB supervisor read-only: P|A|PS with XD", 0x4020_0000, 21, Perm.Read, 2, 0x8000_0000_4020_00a1n],
  ])("from-perms leaf %s", (_what, address, pageShift, perms, level, word) => {
    expect(written((o) => strict.encodeLeaf(address, pageShift, perms, level, o))).toBe(word);
  });

  it("refuses levels, sizes and addresses the format cannot hold", () => {
    const o = new Uint32Array(2);
    expect(() => linux.encodeTable(0x1000, 1, o)).toThrow(RangeError);
    expect(() => linux.encodeTable(0x1001, 4, o)).toThrow(RangeError);
    expect(() => linux.encodeTable(2 ** 52, 4, o)).toThrow(RangeError);
    expect(() => strict.encodeTable(2 ** 46, 4, o)).toThrow(RangeError);
    expect(() => linux.encodeLeaf(0x40000000, 30, Perm.Read, 2, o)).toThrow(RangeError);
    expect(() => linux.encodeLeaf(0x1000, 21, Perm.Read, 2, o)).toThrow(RangeError);
    expect(() => strict.encodeLeaf(0x40000000, 30, Perm.Read, 3, o)).toThrow(RangeError);
    expect(linux.tableBytes(4)).toBe(4096);
  });

  it("decodes every leaf it encodes back to its address, size and permissions", () => {
    const out = newEntryDecode();
    const entry = new Uint32Array(2);
    fc.assert(
      fc.property(fc.constantFrom([1, 12], [2, 21], [3, 30]), fc.nat({ max: 2 ** 34 - 1 }), fc.integer({ min: 0, max: 15 }), fc.boolean(), ([level, shift], frame, bits, narrow) => {
        const format = narrow ? strict : linux;
        if (!format.leafAllowed(shift!, level!)) return;
        const address = Math.floor((frame * 4096) / 2 ** shift!) * 2 ** shift!;
        const perms = bits | Perm.Read;
        format.encodeLeaf(address, shift!, perms, level!, entry);
        format.decodeEntry(entry[0]!, entry[1]!, level!, out);
        expect(out).toMatchObject({ kind: EntryKind.Leaf, address, pageShift: shift });
        expect(out.perms).toBe(narrow ? perms : perms | Perm.User | Perm.Exec);
      }),
    );
  });

  it("is a plain object: spreading it (as vendors do) keeps every method working", () => {
    const spread: PageTableFormat & PageTableEncoder = { ...linux, name: "renamed" };
    const value = written((o) => spread.encodeLeaf(0x20_0000, 21, Perm.ReadWrite, 2, o));
    expect(decoded(value, 2, spread)).toMatchObject({ kind: EntryKind.Leaf, address: 0x20_0000, pageShift: 21 });
    expect(spread.leafAllowed(30, 3)).toBe(true);
  });
});

describe("x86-64 paging geometry and a walk", () => {
  it("indexes 9 bits a level over 4 KiB pages: 48-bit input at 4 levels, 57 at 5, narrower on request", () => {
    expect(x86PagingGeometry(4)).toMatchObject({ startLevel: 4, inputBits: 48, outputBits: 52, levelShift: [0, 12, 21, 30, 39] });
    expect(x86PagingGeometry(5)).toMatchObject({ startLevel: 5, inputBits: 57, levelShift: [0, 12, 21, 30, 39, 48] });
    expect(x86PagingGeometry(4, 39).inputBits).toBe(39);
  });

  it("builds and walks a 5-level table with 4 KiB, 2 MiB and 1 GiB leaves", () => {
    const table = HostPageTable.create(new HostMemory(), HOST_OWNER, linux, x86PagingGeometry(5))!;
    expect(table.builder.map(2 ** 50, 0x1_0000_0000, 2 ** 30, Perm.ReadWrite).ok).toBe(true);
    expect(table.builder.map(0x20_0000, 0x4020_0000, 0x20_1000, Perm.Read).ok).toBe(true);
    const r = newWalkResult();
    table.walk(2 ** 50 + 0x1234_5678, Perm.Write, r);
    expect(r).toMatchObject({ ok: true, output: 0x1_1234_5678, pageShift: 30, level: 3 });
    table.walk(0x21_2345, Perm.Read, r);
    expect(r).toMatchObject({ ok: true, output: 0x4021_2345, pageShift: 21, level: 2 });
    table.walk(0x40_0010, Perm.Read, r);
    expect(r).toMatchObject({ ok: true, output: 0x4040_0010, pageShift: 12, level: 1 });
    table.walk(0x40_0010, Perm.Write, r);
    expect(r).toMatchObject({ ok: false, fault: WalkFault.Permission });
  });
});
