import {
  Perm,
  address64,
  defineLayout,
  radixGeometry,
  type EntryDecode,
  type PageTableEncoder,
  type PageTableFormat,
  type PermBits,
  type TableGeometry,
} from "@viommu/core";
import { assertEntryAddress, decodeLeaf, decodeNotPresent, decodeReserved, decodeTable, PAGE_TABLE_BYTES, writeEntry } from "./page-table-entry.js";

/**
 * AMD-Vi guest (v2) page tables: x86-64 long-mode paging, 4 or 5 levels (spec x86.md B4.2; Linux
 * drivers/iommu/generic_pt/fmt/x86_64.h, which names AMD IOMMU spec §2.2.6; io_pgtable_v2.c before it).
 *
 * Entry bits: [0] P, [1] R/W, [2] U/S, [3] PWT, [4] PCD, [5] A, [6] D, [7] PS (level 2 = 2 MiB, level 3 =
 * 1 GiB; PAT in a level-1 PTE), [8] G, [51:12] address, [63] NX.
 *
 * Decoding: P = 0 is not present. Level 1 is always a 4 KiB leaf. PS = 1 at level 2 or 3 is a large leaf
 * whose address bits [pageShift−1:13] are reserved (bit 12 is PAT) and fault when set; PS = 1 at level 4
 * or 5 is reserved. Permissions follow x86: present = readable, R/W → write, U/S → user, NX → no execute,
 * ANDed over all levels by the walker.
 */
export const v2PteLayout = defineLayout("V2PTE", 64, [
  { name: "P", bit: 0, width: 1 },
  { name: "RW", bit: 1, width: 1 },
  { name: "US", bit: 2, width: 1 },
  { name: "PWT", bit: 3, width: 1 },
  { name: "PCD", bit: 4, width: 1 },
  { name: "A", bit: 5, width: 1 },
  { name: "D", bit: 6, width: 1 },
  { name: "PS", bit: 7, width: 1 },
  { name: "G", bit: 8, width: 1 },
  { name: "Address", bit: 12, width: 40, shift: 12 },
  { name: "NX", bit: 63, width: 1 },
] as const);

export const V2Bit = { P: 1, RW: 2, US: 4, PWT: 8, PCD: 0x10, A: 0x20, D: 0x40, PS: 0x80, G: 0x100 } as const;
/** NX on the entry's high half. */
export const V2_NX_HI = 0x80000000;

/** Page sizes (log2) of the v2 format: 4 KiB, 2 MiB, 1 GiB (Linux AMD_IOMMU_PGSIZES_V2). */
export const V2_PAGE_SHIFTS: readonly number[] = [12, 21, 30];

function v2Perms(lo: number, hi: number): PermBits {
  return Perm.Read | (lo & V2Bit.RW ? Perm.Write : 0) | (lo & V2Bit.US ? Perm.User : 0) | (hi & V2_NX_HI ? 0 : Perm.Exec);
}

export const amdV2PageTableFormat: PageTableFormat = {
  name: "amd-vi-v2",
  decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
    if ((lo & V2Bit.P) === 0) return decodeNotPresent(out);
    if (level === 1) return decodeLeaf(out, address64(lo, hi, 12, 51), 12, v2Perms(lo, hi));
    if ((lo & V2Bit.PS) !== 0) {
      if (level !== 2 && level !== 3) return decodeReserved(out);
      const pageShift = level === 2 ? 21 : 30;
      // Large-page address bits [pageShift-1:13] are reserved (bit 12 is PAT).
      if (address64(lo, hi, 13, pageShift - 1) !== 0) return decodeReserved(out);
      return decodeLeaf(out, address64(lo, hi, pageShift, 51), pageShift, v2Perms(lo, hi));
    }
    if (level < 1 || level > 5) return decodeReserved(out);
    decodeTable(out, address64(lo, hi, 12, 51), level - 1, v2Perms(lo, hi));
  },
};

/**
 * The writing half, producing the entries Linux x86_64.h writes: tables P | R/W | U/S | A; leaves
 * P | U/S | A, plus R/W | D when writable, plus PS above level 1. Linux presets A and D so the IOMMU never
 * has to update them, sets U/S everywhere and never sets NX; x86 paging cannot withhold read from a present
 * entry, so `perms` only decides R/W.
 */
export const amdV2PageTableEncoder: PageTableEncoder = {
  encodeTable(tableAddress: number, level: number, out: Uint32Array): void {
    assertEntryAddress(tableAddress, 12, "table address");
    if (level < 2 || level > 5) throw new RangeError(`no v2 table entry at level ${level}`);
    writeEntry(tableAddress, V2Bit.P | V2Bit.RW | V2Bit.US | V2Bit.A, 0, out);
  },
  encodeLeaf(pageAddress: number, pageShift: number, perms: PermBits, level: number, out: Uint32Array): void {
    if (!amdV2PageTableEncoder.leafAllowed(pageShift, level)) throw new RangeError(`no v2 leaf of 2^${pageShift} at level ${level}`);
    assertEntryAddress(pageAddress, pageShift, "page address");
    let bits = V2Bit.P | V2Bit.US | V2Bit.A;
    if (perms & Perm.Write) bits |= V2Bit.RW | V2Bit.D;
    if (level > 1) bits |= V2Bit.PS;
    writeEntry(pageAddress, bits, 0, out);
  },
  leafAllowed(pageShift: number, level: number): boolean {
    return (level === 1 && pageShift === 12) || (level === 2 && pageShift === 21) || (level === 3 && pageShift === 30);
  },
  tableBytes(): number {
    return PAGE_TABLE_BYTES;
  },
};

/**
 * v2 geometries: 4-level (48-bit input) and 5-level (57-bit input; DTE GuestPagingMode = 1, EFR.GATS = 1).
 * Linux uses 47/56-bit non-sign-extended spaces for PASID-0 (GIoV) DMA and the sign-extended canonical
 * split with PASIDs; both fit these geometries below 2^53.
 */
export function amdV2Geometry(levels: 4 | 5): TableGeometry {
  return { ...radixGeometry(levels, 12, 9), outputBits: 52 };
}
