import { EntryKind, Perm, WalkFault, address64, radixGeometry, type EntryDecode, type PageTableEncoder, type PageTableFormat } from "../../src/index.js";

/**
 * A minimal x86-like test format for core's own tests: bit 0 present, bit 1 writable (read implied), bit 7
 * leaf at levels 2-3, bits 51:12 address, bits 62:52 reserved. Vendors bring their real formats.
 */
export const toyFormat: PageTableFormat & PageTableEncoder = {
  name: "toy",
  decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
    if ((lo & 1) === 0) {
      out.kind = EntryKind.Invalid;
      return;
    }
    if ((hi & 0x7ff0_0000) !== 0) {
      out.kind = EntryKind.Fault;
      out.fault = WalkFault.Reserved;
      return;
    }
    out.address = address64(lo, hi, 12, 51);
    out.perms = Perm.Read | (lo & 2 ? Perm.Write : 0) | Perm.Exec | Perm.User;
    if (level === 1 || (level <= 3 && lo & 0x80)) {
      out.kind = EntryKind.Leaf;
      out.pageShift = 12 + 9 * (level - 1);
      return;
    }
    out.kind = EntryKind.Table;
    out.nextLevel = level - 1;
  },
  encodeTable(address: number, _level: number, out: Uint32Array): void {
    out[0] = ((address % 2 ** 32) | 3) >>> 0;
    out[1] = Math.floor(address / 2 ** 32);
  },
  encodeLeaf(address: number, _shift: number, perms: number, level: number, out: Uint32Array): void {
    out[0] = ((address % 2 ** 32) | 1 | (perms & Perm.Write ? 2 : 0) | (level > 1 ? 0x80 : 0)) >>> 0;
    out[1] = Math.floor(address / 2 ** 32);
  },
  leafAllowed(shift: number, level: number): boolean {
    return level <= 3 && shift === 12 + 9 * (level - 1);
  },
  tableBytes(): number {
    return 4096;
  },
};

export const toyGeometry = radixGeometry(4, 12, 9, 48);
