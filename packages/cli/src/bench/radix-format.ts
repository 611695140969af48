import { EntryKind, Perm, address64, radixGeometry, type EntryDecode, type PageTableEncoder, type PageTableFormat } from "@viommu/core";

/**
 * The benchmark's own x86-like 4-level format (present, writable, address 51:12, leaves at level 1 only),
 * so that the core figures depend on no vendor and a hand-written DataView walk can read the same tables.
 */
export const benchFormat: PageTableFormat & PageTableEncoder = {
  name: "bench-x86-like",
  decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
    if ((lo & 1) === 0) {
      out.kind = EntryKind.Invalid;
      return;
    }
    out.address = address64(lo, hi, 12, 51);
    out.perms = Perm.Read | (lo & 2 ? Perm.Write : 0);
    if (level === 1) {
      out.kind = EntryKind.Leaf;
      out.pageShift = 12;
      return;
    }
    out.kind = EntryKind.Table;
    out.nextLevel = level - 1;
  },
  encodeTable(address: number, _level: number, out: Uint32Array): void {
    out[0] = ((address % 2 ** 32) | 3) >>> 0;
    out[1] = Math.floor(address / 2 ** 32);
  },
  encodeLeaf(address: number, _shift: number, perms: number, _level: number, out: Uint32Array): void {
    out[0] = ((address % 2 ** 32) | 1 | (perms & Perm.Write ? 2 : 0)) >>> 0;
    out[1] = Math.floor(address / 2 ** 32);
  },
  leafAllowed(shift: number, level: number): boolean {
    return level === 1 && shift === 12;
  },
  tableBytes(): number {
    return 4096;
  },
};

export const benchGeometry = radixGeometry(4, 12, 9, 48);
