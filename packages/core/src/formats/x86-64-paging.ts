import { address64 } from "../bits/bit-ops.js";
import { Perm, type PermBits } from "../translate/access.js";
import { EntryKind, WalkFault, radixGeometry, type EntryDecode, type PageTableEncoder, type PageTableFormat, type TableGeometry } from "../translate/page-table-format.js";

/**
 * x86-64 long-mode paging (4-level and 5-level), the architecture's own page-table format as the Intel SDM
 * vol. 3 §4.5 lays it out, and as Linux drivers/iommu/generic_pt/fmt/x86_64.h writes it for IOMMUs that walk
 * CPU-format tables. Vendors instantiate it with their limits and keep their field layouts and names.
 *
 * Entry bits: [0] P, [1] R/W, [2] U/S, [3] PWT, [4] PCD, [5] A, [6] D, [7] PS (2 MiB leaf at level 2, 1 GiB
 * leaf at level 3; PAT in a level-1 PTE), [8] G, [51:12] address, [63] XD. Bits [11:9] and [62:52] are ignored.
 *
 * Reserved (WalkFault.Reserved): PS at level 4 or 5, and at level 3 without 1 GiB pages; address bits
 * [pageShift−1:13] of a large leaf (bit 12 is its PAT bit); address bits [51:outputBits] (MAXPHYADDR).
 * Permissions: a present entry is readable; R/W grants write, U/S user, a clear XD execute; the walker ANDs
 * them over the levels.
 */

/** Low-half bits of an x86-64 paging entry. */
export const X86PagingBit = { P: 0x1, RW: 0x2, US: 0x4, PWT: 0x8, PCD: 0x10, A: 0x20, D: 0x40, PS: 0x80, G: 0x100 } as const;
/** XD (execute-disable) on the entry's high half (bit 63). */
export const X86_PAGING_XD_HI = 0x8000_0000;
/** Leaf page sizes (log2): 4 KiB, 2 MiB, 1 GiB. */
export const X86_PAGING_PAGE_SHIFTS: readonly number[] = [12, 21, 30];
/** Every table is 512 eight-byte entries. */
export const X86_PAGING_TABLE_BYTES = 4096;

/** What a table entry carries as written: P | R/W | U/S | A (0x27), so the leaf alone decides access. */
const TABLE_FLAGS = X86PagingBit.P | X86PagingBit.RW | X86PagingBit.US | X86PagingBit.A;

export interface X86PagingOptions {
  /** The format's name, as walk tools and errors show it. */
  readonly name: string;
  /** Output address width (MAXPHYADDR, 32..52): address bits at or above it are reserved. Default 52. */
  readonly outputBits?: number;
  /** 1 GiB leaves at level 3; without them PS there is a reserved bit. Default true. */
  readonly gigaPages?: boolean;
  /**
   * How the encoder sets U/S and XD in a leaf. "always": U/S set and XD clear whatever `perms` says (Linux's
   * generic x86_64 format). "from-perms": U/S only for Perm.User, XD unless Perm.Exec. Default "always".
   */
  readonly leafUserExec?: "always" | "from-perms";
}

function x86Perms(lo: number, hi: number): PermBits {
  return Perm.Read | (lo & X86PagingBit.RW ? Perm.Write : 0) | (lo & X86PagingBit.US ? Perm.User : 0) | (hi & X86_PAGING_XD_HI ? 0 : Perm.Exec);
}

/** Fills every field of a decode outcome (the walker's own object: nothing is allocated). */
function fill(out: EntryDecode, kind: EntryKind, address: number, pageShift: number, nextLevel: number, perms: PermBits, fault: WalkFault): void {
  out.kind = kind;
  out.address = address;
  out.pageShift = pageShift;
  out.nextLevel = nextLevel;
  out.perms = perms;
  out.fault = fault;
}

/** Writes an entry's halves: the address with `lowFlags` in the low word and `highFlags` in the high word. */
function writeEntry(address: number, lowFlags: number, highFlags: number, out: Uint32Array): void {
  out[0] = ((address % 0x1_0000_0000) | lowFlags) >>> 0;
  out[1] = (Math.floor(address / 0x1_0000_0000) | highFlags) >>> 0;
}

/**
 * An x86-64 paging format, both halves. It is a plain object whose methods close over the options (no `this`),
 * so callers may spread it into another object. decodeEntry allocates nothing and never throws; the encoder
 * throws RangeError for a level, size or address the format cannot hold (its input is trusted: that is a bug).
 */
export function x86PagingFormat(options: X86PagingOptions): PageTableFormat & PageTableEncoder {
  const outputBits = options.outputBits ?? 52;
  if (!Number.isInteger(outputBits) || outputBits < 32 || outputBits > 52) throw new RangeError(`output width ${outputBits}`);
  const gigaPages = options.gigaPages ?? true;
  const fromPerms = options.leafUserExec === "from-perms";
  const name = options.name;
  // Mask of the high half's address bits [51:32] that lie at or above outputBits.
  const hiReserved = outputBits >= 52 ? 0 : ((0xfffff >>> (outputBits - 32)) << (outputBits - 32)) & 0xfffff;
  const addressLimit = 2 ** outputBits;

  function leafAllowed(pageShift: number, level: number): boolean {
    return (level === 1 && pageShift === 12) || (level === 2 && pageShift === 21) || (level === 3 && pageShift === 30 && gigaPages);
  }

  function checkAddress(address: number, alignShift: number, what: string): void {
    if (!Number.isSafeInteger(address) || address < 0 || address >= addressLimit || address % 2 ** alignShift !== 0) {
      throw new RangeError(`${name}: ${what} 0x${address.toString(16)} is not a 2^${alignShift}-aligned address below 2^${outputBits}`);
    }
  }

  return {
    name,
    decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
      if ((lo & X86PagingBit.P) === 0) return fill(out, EntryKind.Invalid, 0, 0, 0, Perm.None, WalkFault.Translation);
      if ((hi & hiReserved) !== 0 || !(level >= 1 && level <= 5)) return fill(out, EntryKind.Fault, 0, 0, 0, Perm.None, WalkFault.Reserved);
      if (level === 1) return fill(out, EntryKind.Leaf, address64(lo, hi, 12, 51), 12, 0, x86Perms(lo, hi), WalkFault.None);
      if ((lo & X86PagingBit.PS) === 0) return fill(out, EntryKind.Table, address64(lo, hi, 12, 51), 0, level - 1, x86Perms(lo, hi), WalkFault.None);
      if (level > 3 || (level === 3 && !gigaPages)) return fill(out, EntryKind.Fault, 0, 0, 0, Perm.None, WalkFault.Reserved);
      const pageShift = level === 2 ? 21 : 30;
      // Address bits [pageShift−1:13] of a large leaf are reserved (bit 12 is its PAT bit).
      if (address64(lo, hi, 13, pageShift - 1) !== 0) return fill(out, EntryKind.Fault, 0, 0, 0, Perm.None, WalkFault.Reserved);
      fill(out, EntryKind.Leaf, address64(lo, hi, pageShift, 51), pageShift, 0, x86Perms(lo, hi), WalkFault.None);
    },
    encodeTable(tableAddress: number, level: number, out: Uint32Array): void {
      if (level < 2 || level > 5) throw new RangeError(`${name}: no table entry at level ${level}`);
      checkAddress(tableAddress, 12, "table address");
      writeEntry(tableAddress, TABLE_FLAGS, 0, out);
    },
    encodeLeaf(pageAddress: number, pageShift: number, perms: PermBits, level: number, out: Uint32Array): void {
      if (!leafAllowed(pageShift, level)) throw new RangeError(`${name}: no leaf of 2^${pageShift} at level ${level}`);
      checkAddress(pageAddress, pageShift, "page address");
      // A and D preset so the walker never has to set them; x86 cannot withhold read from a present entry.
      let lowFlags = X86PagingBit.P | X86PagingBit.A;
      if (perms & Perm.Write) lowFlags |= X86PagingBit.RW | X86PagingBit.D;
      if (!fromPerms || perms & Perm.User) lowFlags |= X86PagingBit.US;
      if (level > 1) lowFlags |= X86PagingBit.PS;
      writeEntry(pageAddress, lowFlags, fromPerms && !(perms & Perm.Exec) ? X86_PAGING_XD_HI : 0, out);
    },
    leafAllowed,
    tableBytes(_level: number): number {
      return X86_PAGING_TABLE_BYTES;
    },
  };
}

/**
 * The geometry of a 4-level (48-bit input) or 5-level (57-bit input) table, with `inputBits` narrowing the
 * input range (no sign extension: inputs are [0, 2^inputBits)); outputs are limited to 52 bits.
 */
export function x86PagingGeometry(levels: 4 | 5, inputBits?: number): TableGeometry {
  return { ...radixGeometry(levels, 12, 9, inputBits), outputBits: 52 };
}
