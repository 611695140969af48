import { defineLayout, EntryKind, Perm, WalkFault, address64, radixGeometry, type EntryDecode, type PageTableEncoder, type PageTableFormat, type RadixLayout, type TableGeometry, type DirtyBitFormat } from "@viommu/core";

/**
 * The mock page-table entry, used for both stages: 64 bits, 4 levels of 512 entries over 4 KiB pages
 * (48-bit input), leaves at level 1 (4 KiB), 2 (2 MiB) and 3 (1 GiB).
 *
 *   bit 0      V     valid
 *   bit 1      R     readable
 *   bit 2      W     writable
 *   bit 3      L     leaf (levels 2 and 3; level-1 entries are always leaves, level 4 never)
 *   bit 6      D     dirty: set by the hardware on a write through the leaf of a dirty-tracking domain
 *   bits 51:12 ADDR  next table or page address
 *   all other bits reserved (must be zero)
 */
export const MockPte = {
  V: 1 << 0,
  R: 1 << 1,
  W: 1 << 2,
  L: 1 << 3,
  D: 1 << 6,
  /** Reserved bits of the low half: 11:4 but D (a table entry's D is reserved too). */
  RESERVED_LO: 0x0000_0fb0,
  /** Reserved bits of the high half: 63:52. */
  RESERVED_HI: 0xfff0_0000,
} as const;

/** The same entry as a layout, for the command line and tests (the walk decodes with `mockPteFormat`). */
export const mockPteLayout = defineLayout("MOCK_PTE", 64, [
  { name: "V", bit: 0, width: 1 },
  { name: "R", bit: 1, width: 1 },
  { name: "W", bit: 2, width: 1 },
  { name: "L", bit: 3, width: 1 },
  { name: "D", bit: 6, width: 1 },
  { name: "ADDR", bit: 12, width: 40, shift: 12 },
] as const);

export const MOCK_LEVELS = 4;
export const mockGeometry: TableGeometry = radixGeometry(MOCK_LEVELS, 12, 9, 48);

/**
 * The same entry as bit masks, so core's walker decodes it in place (test/pte-layout.test.ts holds it to
 * `decodeEntry`, faults included): D is reserved in a table entry only; L is allowed at levels 2 and 3.
 */
export const mockRadixLayout: RadixLayout = {
  presentLo: MockPte.V,
  reservedLo: MockPte.RESERVED_LO,
  reservedHi: MockPte.RESERVED_HI,
  tableReservedLo: MockPte.D,
  leafFlagLo: MockPte.L,
  alwaysLeafLevels: 1 << 1,
  leafLevels: (1 << 2) | (1 << 3),
  addressLo: 0xffff_f000,
  addressHi: 0x000f_ffff,
  leafAlignment: true,
  readLo: MockPte.R,
  writeLo: MockPte.W,
  leafPerms: 0,
  tablePerms: Perm.Exec | Perm.User,
};

export const mockPteFormat: PageTableFormat & PageTableEncoder = {
  name: "mock-pte",
  layout: mockRadixLayout,

  decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
    if ((lo & MockPte.V) === 0) {
      out.kind = EntryKind.Invalid;
      return;
    }
    if ((lo & MockPte.RESERVED_LO) !== 0 || (hi & MockPte.RESERVED_HI) !== 0) {
      out.kind = EntryKind.Fault;
      out.fault = WalkFault.Reserved;
      return;
    }
    out.address = address64(lo, hi, 12, 51);
    const leaf = level === 1 || (lo & MockPte.L) !== 0;
    if (leaf && level > 3) {
      out.kind = EntryKind.Fault;
      out.fault = WalkFault.Reserved;
      return;
    }
    if (leaf) {
      out.kind = EntryKind.Leaf;
      out.pageShift = 12 + 9 * (level - 1);
      if (out.address % 2 ** out.pageShift !== 0) {
        out.kind = EntryKind.Fault;
        out.fault = WalkFault.Reserved;
        return;
      }
      out.perms = (lo & MockPte.R ? Perm.Read : 0) | (lo & MockPte.W ? Perm.Write : 0);
      return;
    }
    if (lo & MockPte.D) {
      out.kind = EntryKind.Fault;
      out.fault = WalkFault.Reserved;
      return;
    }
    out.kind = EntryKind.Table;
    out.nextLevel = level - 1;
    // Table entries carry permissions too: a clear R or W removes it for everything below.
    out.perms = (lo & MockPte.R ? Perm.Read : 0) | (lo & MockPte.W ? Perm.Write : 0) | Perm.Exec | Perm.User;
  },

  encodeTable(tableAddress: number, _level: number, out: Uint32Array): void {
    out[0] = ((tableAddress % 2 ** 32) | MockPte.V | MockPte.R | MockPte.W) >>> 0;
    out[1] = Math.floor(tableAddress / 2 ** 32) >>> 0;
  },

  encodeLeaf(pageAddress: number, _pageShift: number, perms: number, level: number, out: Uint32Array): void {
    const flags = MockPte.V | (perms & Perm.Read ? MockPte.R : 0) | (perms & Perm.Write ? MockPte.W : 0) | (level > 1 ? MockPte.L : 0);
    out[0] = ((pageAddress % 2 ** 32) | flags) >>> 0;
    out[1] = Math.floor(pageAddress / 2 ** 32) >>> 0;
  },

  leafAllowed(pageShift: number, level: number): boolean {
    return level <= 3 && pageShift === 12 + 9 * (level - 1);
  },

  tableBytes(): number {
    return 4096;
  },
};

/** Where the mock keeps a leaf's dirty state (D, bit 6). */
export const mockDirtyBits: DirtyBitFormat = {
  isDirty: (lo) => (lo & MockPte.D) !== 0,
  withDirty(lo, hi, _level, dirty, out) {
    out[0] = (dirty ? lo | MockPte.D : lo & ~MockPte.D) >>> 0;
    out[1] = hi;
  },
};
