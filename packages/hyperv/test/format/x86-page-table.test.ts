import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { EntryKind, PageWalker, Perm, WalkFault, fromWords64, newEntryDecode, newWalkResult, toHex64, type EntryReader } from "@viommu/core";
import {
  X86_PAGE_SHIFTS,
  firstStagePagingMode,
  hypervPageTableEncoder,
  hypervPageTableFormat,
  hypervStage1Geometry,
  x86PteLayout,
  x86Stage1Format,
} from "../../src/format/index.js";

function decode(word: string, level: number, format = hypervPageTableFormat): ReturnType<typeof newEntryDecode> {
  const raw = fromWords64([word]);
  const out = newEntryDecode();
  format.decodeEntry(raw[0]!, raw[1]!, level, out);
  return out;
}

function hex(fill: (out: Uint32Array) => void): string {
  const out = new Uint32Array(2);
  fill(out);
  return toHex64(out)[0]!;
}

// Entries as Linux drivers/iommu/generic_pt/fmt/x86_64.h writes them for the pvIOMMU's pt_iommu_x86_64 domains
// (read in torvalds/linux): tables P|RW|U|A, leaves P|U|A (+RW|D for IOMMU_WRITE) (+PS above level 1).
// Bit positions: spec x86.md A5.2 (IA-32e first-stage entry).
describe("x86-64 stage-1 entries as Linux writes them", () => {
  it("table entry: 0x27 | address", () => {
    expect(hex((o) => hypervPageTableEncoder.encodeTable(0x1000, 4, o))).toBe("0x0000000000001027");
    expect(hex((o) => hypervPageTableEncoder.encodeTable(0xf_ffff_ffff_f000, 5, o))).toBe("0x000ffffffffff027");
  });

  it.each([
    ["4 KiB read/write", 0x12345000, 12, Perm.ReadWrite, 1, "0x0000000012345067"],
    ["4 KiB read-only", 0x12345000, 12, Perm.Read, 1, "0x0000000012345025"],
    ["2 MiB read/write", 0x40000000, 21, Perm.ReadWrite, 2, "0x00000000400000e7"],
    ["1 GiB read-only above 4 GiB", 0x1_4000_0000, 30, Perm.Read, 3, "0x00000001400000a5"],
  ])("leaf %s", (_what, address, pageShift, perms, level, word) => {
    expect(hex((o) => hypervPageTableEncoder.encodeLeaf(address, pageShift, perms, level, o))).toBe(word);
    const d = decode(word, level);
    expect(d).toMatchObject({ kind: EntryKind.Leaf, address, pageShift, perms: perms === Perm.Read ? Perm.Read | Perm.User | Perm.Exec : Perm.All });
  });

  it("refuses leaves the format has no room for and misaligned addresses", () => {
    expect(() => hypervPageTableEncoder.encodeLeaf(0x40000000, 30, Perm.Read, 2, new Uint32Array(2))).toThrow(RangeError);
    expect(() => hypervPageTableEncoder.encodeLeaf(0x1000, 21, Perm.Read, 2, new Uint32Array(2))).toThrow(RangeError);
    expect(() => hypervPageTableEncoder.encodeTable(0x1000, 1, new Uint32Array(2))).toThrow(RangeError);
    expect(hypervPageTableEncoder.tableBytes(4)).toBe(4096);
  });
});

// Hand-made vectors from the spec's bit positions (x86.md A5.2; SDM §4.5 reserved bits as QEMU checks them).
describe("x86-64 stage-1 decoding (spec x86.md A5.2)", () => {
  it.each([
    ["not present", "0x0000000012345066", 1, { kind: EntryKind.Invalid, fault: WalkFault.Translation }],
    ["XD leaf: no execute", "0x8000000012345025", 1, { kind: EntryKind.Leaf, perms: Perm.Read | Perm.User }],
    ["supervisor leaf: no user", "0x0000000012345063", 1, { kind: EntryKind.Leaf, perms: Perm.Read | Perm.Write | Perm.Exec }],
    ["level-1 bit 7 is PAT, not PS", "0x00000000123450a5", 1, { kind: EntryKind.Leaf, pageShift: 12 }],
    ["2 MiB leaf with PAT (bit 12)", "0x00000000400010e7", 2, { kind: EntryKind.Leaf, address: 0x40000000 }],
    ["2 MiB leaf with reserved bit 13", "0x00000000400020e7", 2, { kind: EntryKind.Fault, fault: WalkFault.Reserved }],
    ["1 GiB leaf with reserved bit 29", "0x00000000600000e7", 3, { kind: EntryKind.Fault, fault: WalkFault.Reserved }],
    ["PS in a PML4E", "0x00000000000010a7", 4, { kind: EntryKind.Fault, fault: WalkFault.Reserved }],
    ["PS in a PML5E", "0x00000000000010a7", 5, { kind: EntryKind.Fault, fault: WalkFault.Reserved }],
    ["ignored bits 62:52 and 11:9", "0x7ff0000000001e27", 3, { kind: EntryKind.Table, address: 0x1000, nextLevel: 2 }],
    ["address bit 51 with a 52-bit output", "0x0008000000001027", 4, { kind: EntryKind.Table, address: 2 ** 51 + 0x1000 }],
  ])("%s", (_what, word, level, expected) => {
    expect(decode(word, level)).toMatchObject(expected);
  });

  it("faults address bits at or above a narrower output width (MAXPHYADDR 46)", () => {
    const narrow = x86Stage1Format(46);
    expect(decode("0x00003fffffffe027", 4, narrow)).toMatchObject({ kind: EntryKind.Table });
    expect(decode("0x0000400000000027", 4, narrow)).toMatchObject({ kind: EntryKind.Fault, fault: WalkFault.Reserved });
    expect(decode("0x0000400000000025", 1, narrow)).toMatchObject({ kind: EntryKind.Fault, fault: WalkFault.Reserved });
  });

  it("names the fields as the spec does", () => {
    expect(x86PteLayout.fields.map((f) => f.name)).toEqual(["P", "RW", "US", "PWT", "PCD", "A", "D", "PS", "G", "ADDR", "XD"]);
    expect(X86_PAGE_SHIFTS).toEqual([12, 21, 30]);
  });

  it("decodes any bits at any level without throwing", () => {
    const out = newEntryDecode();
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff }), fc.integer({ min: -1, max: 7 }), (lo, hi, level) => {
        hypervPageTableFormat.decodeEntry(lo, hi, level, out);
        expect([EntryKind.Invalid, EntryKind.Table, EntryKind.Leaf, EntryKind.Fault]).toContain(out.kind);
        if (out.kind === EntryKind.Leaf) expect(out.address % 2 ** out.pageShift).toBe(0);
      }),
    );
  });

  it("decodes every leaf the encoder writes back to its address, size and write permission", () => {
    const out = newEntryDecode();
    const entry = new Uint32Array(2);
    fc.assert(
      fc.property(fc.constantFrom([1, 12], [2, 21], [3, 30]), fc.nat({ max: 2 ** 40 - 1 }), fc.boolean(), ([level, shift], frame, writable) => {
        const address = Math.floor((frame * 4096) / 2 ** shift!) * 2 ** shift!;
        hypervPageTableEncoder.encodeLeaf(address, shift!, writable ? Perm.ReadWrite : Perm.Read, level!, entry);
        hypervPageTableFormat.decodeEntry(entry[0]!, entry[1]!, level!, out);
        expect(out).toMatchObject({ kind: EntryKind.Leaf, address, pageShift: shift });
        expect((out.perms & Perm.Write) !== 0).toBe(writable);
      }),
    );
  });
});

describe("geometries and a walk through the generic walker", () => {
  it("4-level: start level 4, 48 input bits; 5-level: start level 5, 57 input bits; paging-mode bit", () => {
    expect(hypervStage1Geometry(4)).toMatchObject({ startLevel: 4, inputBits: 48, outputBits: 52, levelShift: [0, 12, 21, 30, 39] });
    expect(hypervStage1Geometry(5)).toMatchObject({ startLevel: 5, inputBits: 57, levelShift: [0, 12, 21, 30, 39, 48] });
    expect(hypervStage1Geometry(4, 39).inputBits).toBe(39);
    expect([firstStagePagingMode(4), firstStagePagingMode(5)]).toEqual([0, 1]);
  });

  it("walks a 4-level table built by the encoder, ANDing permissions over the levels", () => {
    const memory = new Map<number, [number, number]>();
    const put = (address: number, fill: (o: Uint32Array) => void): void => {
      const o = new Uint32Array(2);
      fill(o);
      memory.set(address, [o[0]!, o[1]!]);
    };
    const reader: EntryReader = {
      readEntry(address, out): boolean {
        const e = memory.get(address) ?? [0, 0];
        out[0] = e[0];
        out[1] = e[1];
        return true;
      },
    };
    // IOVA 0x40201000: PML4 index 0, PDPT index 1, PD index 1, PT index 1.
    put(0x1000, (o) => hypervPageTableEncoder.encodeTable(0x2000, 4, o));
    put(0x2000 + 8, (o) => hypervPageTableEncoder.encodeTable(0x3000, 3, o));
    put(0x3000 + 8, (o) => hypervPageTableEncoder.encodeTable(0x4000, 2, o));
    put(0x4000 + 8, (o) => hypervPageTableEncoder.encodeLeaf(0x9876_5000, 12, Perm.Read, 1, o));
    const result = newWalkResult();
    new PageWalker().walk(hypervPageTableFormat, hypervStage1Geometry(4), 0x1000, 0x40201abc, Perm.Read, reader, result);
    expect(result).toMatchObject({ ok: true, output: 0x98765abc, pageShift: 12 });
    new PageWalker().walk(hypervPageTableFormat, hypervStage1Geometry(4), 0x1000, 0x40201abc, Perm.Write, reader, result);
    expect(result).toMatchObject({ ok: false, fault: WalkFault.Permission });
  });
});
