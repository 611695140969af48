import type { PermBits } from "./access.js";

/**
 * What one page-table entry means, as a vendor format decodes it. The walker owns one of these and
 * passes it to every `decodeEntry` call, so decoding allocates nothing.
 */
export const EntryKind = {
  /** Not present: a translation fault at this level. */
  Invalid: 0,
  /** Points to the next-level table at `address`. */
  Table: 1,
  /** Maps a page of 2^pageShift bytes at `address`. */
  Leaf: 2,
  /** Present but malformed (reserved bits, a leaf where none is allowed…): `fault` says which. */
  Fault: 3,
} as const;
export type EntryKind = (typeof EntryKind)[keyof typeof EntryKind];

/**
 * Vendor-neutral reasons a walk stops. Each vendor maps them, with the level and stage, to its
 * architecture's own fault reason or event type.
 */
export const WalkFault = {
  None: 0,
  /** Entry not present / invalid. */
  Translation: 1,
  /** The entry does not grant the requested access. */
  Permission: 2,
  /** Reserved bits set, or an entry kind not allowed at this level. */
  Reserved: 3,
  /** Input address beyond the table's input range, or output beyond the output range. */
  AddressSize: 4,
  /** Access flag clear (formats with an access flag). */
  AccessFlag: 5,
  /** A table fetch hit memory outside the VM or outside any memory (external abort). */
  External: 6,
} as const;
export type WalkFault = (typeof WalkFault)[keyof typeof WalkFault];

export interface EntryDecode {
  kind: EntryKind;
  /** Table: next table's base address. Leaf: output page base address (low pageShift bits zero). */
  address: number;
  /** Leaf: log2 of the page size (12 for 4 KiB, 21 for 2 MiB, any power of two the format allows). */
  pageShift: number;
  /** Table: the level of the table it points to (normally level − 1; formats that skip levels say so). */
  nextLevel: number;
  /** Permissions this entry grants; the walk ANDs them over every level (tables that carry none grant Perm.All). */
  perms: PermBits;
  /** Fault kind: the `WalkFault` reason. */
  fault: WalkFault;
}

export function newEntryDecode(): EntryDecode {
  return { kind: EntryKind.Invalid, address: 0, pageShift: 0, nextLevel: 0, perms: 0, fault: WalkFault.None };
}

/**
 * A vendor page-table format, described once and driven by the core walker.
 *
 * Levels are numbered so that they decrease toward the leaf: the table holding 4 KiB pages is the lowest
 * level a geometry names (1 for x86 formats; ARM's level 3 is level 1 here, level 0 is level 4). Entries are
 * 64-bit, read as two little-endian 32-bit halves.
 */
/**
 * A radix entry format described as bit masks, for the walker's compiled path: when a format gives one, every
 * entry is decoded by a few 32-bit operations inside the walk instead of a `decodeEntry` call. It must mean
 * exactly what the format's `decodeEntry` means (a differential test checks the pair); formats it cannot
 * describe (multi-field next-level encodings, access flags, contiguous hints) leave it out.
 */
export interface RadixLayout {
  /** The entry is present when lo has any of these bits; otherwise Invalid (a translation fault). */
  readonly presentLo: number;
  /** Bits that must be clear in a present entry, else Reserved. */
  readonly reservedLo: number;
  readonly reservedHi: number;
  /** Further low bits that must be clear in a table (non-leaf) entry, else Reserved. */
  readonly tableReservedLo: number;
  /** The low bit marking a leaf above the lowest level (0: none). */
  readonly leafFlagLo: number;
  /** One bit per level (bit n for level n) where every present entry is a leaf. */
  readonly alwaysLeafLevels: number;
  /** One bit per level where the leaf flag is allowed; a flagged entry at another level is Reserved. */
  readonly leafLevels: number;
  /** Address bits of the entry (output page or next table): (hi & addressHi) · 2^32 + (lo & addressLo). */
  readonly addressLo: number;
  readonly addressHi: number;
  /** A leaf whose address is not aligned to its page size is Reserved. */
  readonly leafAlignment: boolean;
  /** Low bits granting read and write. */
  readonly readLo: number;
  readonly writeLo: number;
  /** Permissions every leaf / table entry grants besides its read and write bits. */
  readonly leafPerms: PermBits;
  readonly tablePerms: PermBits;
}

export interface PageTableFormat {
  readonly name: string;
  /**
   * Optional. The entry as bit masks, when it fits `RadixLayout`: the walker then decodes in place (leaves
   * map 2^levelShift[level] bytes, tables point one level down) and never calls `decodeEntry`.
   */
  readonly layout?: RadixLayout;
  /**
   * Decodes an entry found at `level`. Runs on the hot path: must not allocate, must not throw for any bit
   * pattern (guest tables are hostile), must fill every field of `out` it reports through `kind`.
   */
  decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void;
  /**
   * When a table entry skips levels (`nextLevel < level − 1`), the input bits that the skipped levels would
   * have indexed must be zero, or the walk faults with `Translation`. Formats that never skip omit it.
   */
  readonly skippedLevelBitsMustBeZero?: boolean;
}

/**
 * The shape of one table tree: which level the walk starts at and which input bits each level indexes.
 * Arrays are indexed by level.
 */
export interface TableGeometry {
  readonly startLevel: number;
  /** The lowest input bit a table at this level indexes. */
  readonly levelShift: readonly number[];
  /** How many input bits a table at this level indexes (a start level with concatenated tables has more). */
  readonly indexBits: readonly number[];
  /** Input addresses at or above 2^inputBits fault with AddressSize. */
  readonly inputBits: number;
  /** Table and output addresses at or above 2^outputBits fault with AddressSize (omit for no limit). */
  readonly outputBits?: number;
}

/** A regular radix geometry: `levels` levels of `bitsPerLevel` index bits over pages of 2^granuleShift. */
export function radixGeometry(levels: number, granuleShift: number, bitsPerLevel: number, inputBits?: number): TableGeometry {
  const levelShift: number[] = [0];
  const indexBits: number[] = [0];
  for (let level = 1; level <= levels; level++) {
    levelShift.push(granuleShift + (level - 1) * bitsPerLevel);
    indexBits.push(bitsPerLevel);
  }
  const fullBits = granuleShift + levels * bitsPerLevel;
  const width = Math.min(inputBits ?? fullBits, fullBits);
  indexBits[levels] = width - levelShift[levels]!;
  return { startLevel: levels, levelShift, indexBits, inputBits: width };
}

/**
 * The writing half of a format, for whoever builds tables in it: the host building a stage-2 table from
 * IOAS mappings, a reference guest driver building its own stage-1 tables. `out` receives the entry as
 * [lo, hi] halves.
 */
export interface PageTableEncoder {
  /** An entry at `level` pointing to a table at `tableAddress`. */
  encodeTable(tableAddress: number, level: number, out: Uint32Array): void;
  /** A leaf at `level` mapping 2^pageShift bytes at `pageAddress` with `perms`. */
  encodeLeaf(pageAddress: number, pageShift: number, perms: PermBits, level: number, out: Uint32Array): void;
  /** Whether a leaf of 2^pageShift bytes may sit at `level` in this format. */
  leafAllowed(pageShift: number, level: number): boolean;
  /** Bytes of one table at `level` (4 KiB for most; concatenated or 16K/64K granules differ). */
  tableBytes(level: number): number;
}
