import {
  X86_PAGING_PAGE_SHIFTS,
  defineLayout,
  x86PagingFormat,
  x86PagingGeometry,
  type PageTableEncoder,
  type PageTableFormat,
  type TableGeometry,
} from "@viommu/core";

/**
 * The x86-64 stage-1 (first-stage) page tables a Hyper-V pvIOMMU guest builds and hands over with
 * HVCALL_CONFIGURE_DEVICE_DOMAIN (page_table_root; first_stage_paging_mode 0 = 4-level, 1 = 5-level). The guest
 * driver uses Linux's generic x86_64 format (drivers/iommu/generic_pt/fmt/x86_64.h, which cites Intel SDM vol. 3
 * §4.4, VT-d §9.7 first-stage entries and AMD IOMMU §2.2.6; spec x86.md A5.2).
 *
 * Entry bits: [0] P, [1] R/W, [2] U/S, [3] PWT, [4] PCD, [5] A, [6] D, [7] PS (2 MiB leaf at level 2, 1 GiB leaf
 * at level 3; PAT in a level-1 PTE), [8] G, [51:12] address, [63] XD/NX. Bits [11:9] and [62:52] are ignored.
 *
 * Reserved bits (fault WalkFault.Reserved): PS at level 4 or 5; address bits [pageShift−1:13] of a large leaf
 * (bit 12 is its PAT bit); address bits at or above the output width (MAXPHYADDR, 52 unless configured lower).
 */
export const x86PteLayout = defineLayout("X86_64_PTE", 64, [
  { name: "P", bit: 0, width: 1 },
  { name: "RW", bit: 1, width: 1 },
  { name: "US", bit: 2, width: 1 },
  { name: "PWT", bit: 3, width: 1 },
  { name: "PCD", bit: 4, width: 1 },
  { name: "A", bit: 5, width: 1 },
  { name: "D", bit: 6, width: 1 },
  { name: "PS", bit: 7, width: 1 },
  { name: "G", bit: 8, width: 1 },
  { name: "ADDR", bit: 12, width: 40, shift: 12 },
  { name: "XD", bit: 63, width: 1 },
] as const);

/** Leaf page sizes (log2) of the format: 4 KiB, 2 MiB, 1 GiB. */
export const X86_PAGE_SHIFTS: readonly number[] = X86_PAGING_PAGE_SHIFTS;

/**
 * The x86-64 stage-1 format with an output width of `outputBits` (MAXPHYADDR, 32..52): address bits at or above
 * it are reserved. It is core's x86-64 paging; its writing half produces the entries Linux's generic x86_64
 * format writes: tables P | R/W | U/S | A; leaves P | U/S | A, plus R/W | D when writable, plus PS above level 1;
 * XD never set. x86 paging cannot withhold read from a present entry, so `perms` only decides R/W.
 */
export function x86Stage1Format(outputBits = 52): PageTableFormat & PageTableEncoder {
  return x86PagingFormat({ name: `hyperv-x86-64-stage1-${outputBits}`, outputBits, leafUserExec: "always" });
}

/** The format with the full 52-bit output width Linux's pvIOMMU driver configures (hw_max_oasz_lg2 = 52). */
const stage1Format52 = x86Stage1Format(52);
export const hypervPageTableFormat: PageTableFormat = stage1Format52;
export const hypervPageTableEncoder: PageTableEncoder = stage1Format52;

/**
 * Geometries: 4 levels (first_stage_paging_mode 0, up to 48 input bits) or 5 levels (mode 1, up to 57). Linux's
 * driver uses 5 levels only when max_iova_width > 48 and HV_IOMMU_CAP_S1_5LVL is set, with no sign extension, so
 * the input range is [0, 2^inputBits).
 */
export function hypervStage1Geometry(levels: 4 | 5, inputBits: number = levels === 4 ? 48 : 57): TableGeometry {
  return x86PagingGeometry(levels, inputBits);
}

/** HVCALL_CONFIGURE_DEVICE_DOMAIN's first_stage_paging_mode for a level count. */
export function firstStagePagingMode(levels: 4 | 5): 0 | 1 {
  return levels === 5 ? 1 : 0;
}
