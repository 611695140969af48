import { radixGeometry, type TableGeometry } from "@viommu/core";

/**
 * VT-d page tables (first and second level) are 4 KiB tables of 512 eight-byte entries, each level indexing
 * 9 IOVA bits: level 1 [20:12], level 2 [29:21], level 3 [38:30], level 4 [47:39], level 5 [56:48].
 */
export const VTD_PAGE_SHIFT = 12;
export const VTD_LEVEL_BITS = 9;
export const VTD_TABLE_BYTES = 4096;

/**
 * The geometry of a `levels`-deep table (3 → 39-bit, 4 → 48-bit, 5 → 57-bit input). `inputBits` narrows the
 * input range, e.g. to min(AGAW, MGAW + 1) for a second-level walk (an IOVA at or above it is fault 0x4).
 */
export function vtdTableGeometry(levels: 3 | 4 | 5, inputBits?: number): TableGeometry {
  return radixGeometry(levels, VTD_PAGE_SHIFT, VTD_LEVEL_BITS, inputBits);
}

export const VTD_GEOMETRY_39: TableGeometry = vtdTableGeometry(3);
export const VTD_GEOMETRY_48: TableGeometry = vtdTableGeometry(4);
export const VTD_GEOMETRY_57: TableGeometry = vtdTableGeometry(5);

/** log2 of the page a leaf at `level` maps (12, 21, 30 for levels 1, 2, 3). */
export function leafPageShift(level: number): number {
  return VTD_PAGE_SHIFT + VTD_LEVEL_BITS * (level - 1);
}
