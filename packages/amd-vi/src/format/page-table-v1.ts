import {
  Perm,
  address64,
  defineLayout,
  radixGeometry,
  type DirtyBitFormat,
  type EntryDecode,
  type PageTableEncoder,
  type PageTableFormat,
  type PermBits,
  type TableGeometry,
} from "@viommu/core";
import { firstZeroAtOrAbove12 } from "./layout-tools.js";
import { assertEntryAddress, decodeLeaf, decodeNotPresent, decodeReserved, decodeTable, PAGE_TABLE_BYTES, writeEntry } from "./page-table-entry.js";

/**
 * AMD-Vi host (v1) page tables, DTE Mode 1..6 (spec x86.md B4.1).
 *
 * Sources: Linux drivers/iommu/generic_pt/fmt/amdv1.h (the current Linux writer and reader), the older
 * Linux io_pgtable / amd_iommu_types.h PM_* and IOMMU_PTE_* definitions, QEMU fetch_pte(), VirtualBox
 * IOPTE_T / IOPDE_T (AMD spec 3.05 field tables), Xen amd_iommu_pte.
 *
 * Entry bits: [0] PR, [5] A, [6] D, [11:9] NextLevel, [51:12] address, [59] U (leaf only), [60] FC (leaf
 * only), [61] IR, [62] IW. Reserved: [58:52] in a PTE, [60:52] in a PDE (VirtualBox IOPDE_T).
 *
 * Level L (1..6) indexes IOVA bits [12+9L−1 : 12+9(L−1)]; level 6 indexes only [63:57]. Linux numbers
 * these levels 0..5 ("level 0 is the same as mode 1").
 *
 * What this decoder does with each entry at level L (the hardware behaviour we model):
 * - PR = 0: not present (IO_PAGE_FAULT).
 * - NextLevel 0: a leaf of the level's default size 2^(12+9(L−1)). Address bits below the page size are
 *   ignored, as QEMU masks them.
 * - NextLevel 7: a leaf whose size is encoded in the address: the run of 1s starting at address bit 12
 *   ends at the first 0 at bit p, and the page is 2^(p+1) bytes (Linux PTE_PAGE_SIZE, QEMU
 *   PTE_LARGE_PAGE_SIZE; amdv1.h writes 2^(size−13) − 1 into the address field). Such an entry must map
 *   at least the level's default size and less than the next level's (Linux amdv1pt_possible_sizes:
 *   2^isz .. 2^(isz+8), capped at 2^51); anything else is an invalid level encoding.
 * - NextLevel 1..L−1: a PDE pointing to a table of that level. NextLevel < L−1 skips levels; the IOVA bits
 *   the skipped levels would index must be zero (the AMD spec's level-skipping rule), which the core walker
 *   enforces through `skippedLevelBitsMustBeZero`. Linux always writes L−1 (amdv1pt_install_table) and QEMU
 *   ignores NextLevel in a PDE, assuming L−1.
 * - NextLevel ≥ L (other than 7), a PDE at level 1, or a leaf at level 6 ("the top most level cannot have
 *   translation entries", amdv1.h): invalid level encoding, reported as a reserved-bit fault (the event
 *   log's RZ flag covers both cases).
 * Permissions: IR → read, IW → write, ANDed over the DTE and every level (Linux sets IR|IW on every PDE
 * and controls access at the leaf). v1 has no execute or user distinction, so Exec and User are granted.
 */
export const v1PteLayout = defineLayout("V1PTE", 64, [
  { name: "PR", bit: 0, width: 1 },
  { name: "A", bit: 5, width: 1 },
  { name: "D", bit: 6, width: 1 },
  { name: "NextLevel", bit: 9, width: 3 },
  { name: "Address", bit: 12, width: 40, shift: 12 },
  { name: "U", bit: 59, width: 1 },
  { name: "FC", bit: 60, width: 1 },
  { name: "IR", bit: 61, width: 1 },
  { name: "IW", bit: 62, width: 1 },
] as const);

export const v1PdeLayout = defineLayout("V1PDE", 64, [
  { name: "PR", bit: 0, width: 1 },
  { name: "A", bit: 5, width: 1 },
  { name: "NextLevel", bit: 9, width: 3 },
  { name: "Address", bit: 12, width: 40, shift: 12 },
  { name: "IR", bit: 61, width: 1 },
  { name: "IW", bit: 62, width: 1 },
] as const);

export const V1_NEXT_LEVEL_DEFAULT_PAGE = 0;
export const V1_NEXT_LEVEL_SIZE_ENCODED = 7;
export const V1_MAX_LEVELS = 6;
/** Linux never maps 512 GiB pages: "512GB Pages are not supported due to a hardware bug" (AMD_IOMMU_PGSIZES). */
export const V1_LINUX_EXCLUDED_PAGE_SHIFT = 39;
/** The largest page Linux maps: sizes below 2^52 (AMD_IOMMU_PGSIZES = GENMASK(51, 12) ^ SZ_512G). */
export const V1_MAX_PAGE_SHIFT = 51;

/** FC (bit 60) on the entry's high half. */
export const V1_FC_HI = 0x10000000;

/** PTE reserved bits [58:52] and PDE reserved bits [60:52], on the entry's high half. */
const PTE_RESERVED_HI = 0x07f00000;
const PDE_RESERVED_HI = 0x1ff00000;

/** The input bit a table at `level` starts indexing at (12 for level 1 … 57 for level 6). */
export function v1LevelShift(level: number): number {
  return 12 + 9 * (level - 1);
}

/** Every leaf page size (log2) the format can encode at `level`: 2^isz .. 2^(isz+8), at most 2^51; none at level 6. */
export function v1LeafShifts(level: number): number[] {
  if (level < 1 || level >= V1_MAX_LEVELS) return [];
  const first = v1LevelShift(level);
  const shifts: number[] = [];
  for (let s = first; s <= Math.min(V1_MAX_PAGE_SHIFT, first + 8); s++) shifts.push(s);
  return shifts;
}

/** Every page size (log2) the v1 format encodes: 4 KiB (2^12) through 2 PiB (2^51). */
export const V1_PAGE_SHIFTS: readonly number[] = Array.from({ length: V1_MAX_PAGE_SHIFT - 11 }, (_, i) => 12 + i);

/** How many consecutive identical entries Linux writes for a page of 2^pageShift at `level` (amdv1pt_install_leaf_entry). */
export function v1ContiguousEntries(pageShift: number, level: number): number {
  return 2 ** (pageShift - v1LevelShift(level));
}

function v1Perms(hi: number): PermBits {
  return ((hi >>> 29) & 1 ? Perm.Read : 0) | ((hi >>> 30) & 1 ? Perm.Write : 0) | Perm.Exec | Perm.User;
}

export const amdV1PageTableFormat: PageTableFormat = {
  name: "amd-vi-v1",
  skippedLevelBitsMustBeZero: true,
  decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
    if ((lo & 1) === 0) return decodeNotPresent(out);
    const nextLevel = (lo >>> 9) & 7;
    if (nextLevel === V1_NEXT_LEVEL_DEFAULT_PAGE || nextLevel === V1_NEXT_LEVEL_SIZE_ENCODED) {
      if (level < 1 || level >= V1_MAX_LEVELS || (hi & PTE_RESERVED_HI) !== 0) return decodeReserved(out);
      const levelShift = 12 + 9 * (level - 1);
      let pageShift = levelShift;
      if (nextLevel === V1_NEXT_LEVEL_SIZE_ENCODED) {
        pageShift = firstZeroAtOrAbove12(lo, hi) + 1;
        if (pageShift < levelShift || pageShift > levelShift + 8 || pageShift > V1_MAX_PAGE_SHIFT) return decodeReserved(out);
      }
      return decodeLeaf(out, address64(lo, hi, pageShift, 51), pageShift, v1Perms(hi));
    }
    if (level <= 1 || nextLevel >= level || (hi & PDE_RESERVED_HI) !== 0) return decodeReserved(out);
    decodeTable(out, address64(lo, hi, 12, 51), nextLevel, v1Perms(hi));
  },
};

/**
 * The writing half, producing exactly the entries Linux amdv1.h writes: tables PR | NextLevel = L−1 |
 * address | IR | IW; leaves PR | FC | address | IR/IW from `perms`, NextLevel 0 for the level's default size
 * and NextLevel 7 with the size encoded in the address otherwise. FC is set because Linux's
 * amd_iommu_domain_alloc_paging_v1 enables PT_FEAT_AMDV1_FORCE_COHERENCE, and amdv1pt_iommu_set_prot then
 * adds AMDV1PT_FMT_FC to every leaf. A size-encoded page covers
 * `v1ContiguousEntries` entries and the caller writes the same entry into each of them, as Linux does.
 * `leafAllowed` follows Linux: every size from 4 KiB to 2^51 except 512 GiB, never at level 6.
 */
export const amdV1PageTableEncoder: PageTableEncoder = {
  encodeTable(tableAddress: number, level: number, out: Uint32Array): void {
    assertEntryAddress(tableAddress, 12, "table address");
    if (level < 2 || level > V1_MAX_LEVELS) throw new RangeError(`no v1 table entry at level ${level}`);
    writeEntry(tableAddress, ((level - 1) << 9) | 1, 0x60000000, out);
  },
  encodeLeaf(pageAddress: number, pageShift: number, perms: PermBits, level: number, out: Uint32Array): void {
    if (!amdV1PageTableEncoder.leafAllowed(pageShift, level)) throw new RangeError(`no v1 leaf of 2^${pageShift} at level ${level}`);
    assertEntryAddress(pageAddress, pageShift, "page address");
    let address = pageAddress;
    let nextLevel = V1_NEXT_LEVEL_DEFAULT_PAGE;
    if (pageShift !== v1LevelShift(level)) {
      nextLevel = V1_NEXT_LEVEL_SIZE_ENCODED;
      address += (2 ** (pageShift - 13) - 1) * 4096;
    }
    const hiPerm = V1_FC_HI | (perms & Perm.Read ? 0x20000000 : 0) | (perms & Perm.Write ? 0x40000000 : 0);
    writeEntry(address, (nextLevel << 9) | 1, hiPerm, out);
  },
  leafAllowed(pageShift: number, level: number): boolean {
    if (pageShift === V1_LINUX_EXCLUDED_PAGE_SHIFT) return false;
    const first = v1LevelShift(level);
    return level >= 1 && level < V1_MAX_LEVELS && pageShift >= first && pageShift <= Math.min(V1_MAX_PAGE_SHIFT, first + 8);
  },
  tableBytes(): number {
    return PAGE_TABLE_BYTES;
  },
};

/** Output (system physical) addresses are 52 bits (Linux IOMMU_OUT_ADDR_BIT_SIZE, PT_MAX_OUTPUT_ADDRESS_LG2). */
export const V1_OUTPUT_BITS = 52;

/**
 * The table geometry for DTE Mode 1..6: Mode M covers IOVAs below 2^(12+9M) for M < 6; Mode 6 covers all
 * 64 bits with a 128-entry top table (bits [63:57]).
 */
export function amdV1Geometry(mode: number): TableGeometry {
  if (!Number.isInteger(mode) || mode < 1 || mode > V1_MAX_LEVELS) throw new RangeError(`DTE Mode ${mode} has no v1 table`);
  return { ...radixGeometry(mode, 12, 9, mode === V1_MAX_LEVELS ? 64 : undefined), outputBits: V1_OUTPUT_BITS };
}

export const amdV1Geometries: readonly TableGeometry[] = [1, 2, 3, 4, 5, 6].map((m) => amdV1Geometry(m));

/** D (bit 6) on a leaf's low half (Linux AMDV1PT_FMT_D). */
export const V1_DIRTY = 0x40;

/**
 * Host dirty tracking in v1 leaves (EFR.HDSup, DTE.HAD): the IOMMU sets D in the leaf a write translated
 * through, a large leaf included; software reads and clears it (Linux amdv1pt_entry_is_write_dirty /
 * make_write_clean). A size-encoded page is several identical entries: Linux treats the page as dirty when any
 * copy has D and clears every copy.
 */
export const amdV1DirtyBits: DirtyBitFormat = {
  isDirty(lo: number): boolean {
    return (lo & V1_DIRTY) !== 0;
  },
  withDirty(lo: number, hi: number, _level: number, dirty: boolean, out: Uint32Array): void {
    out[0] = (dirty ? lo | V1_DIRTY : lo & ~V1_DIRTY) >>> 0;
    out[1] = hi;
  },
};
