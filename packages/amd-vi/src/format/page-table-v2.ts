import {
  defineLayout,
  x86PagingFormat,
  x86PagingGeometry,
  type PageTableEncoder,
  type PageTableFormat,
  type TableGeometry,
} from "@viommu/core";

/**
 * AMD-Vi guest (v2) page tables: x86-64 long-mode paging, 4 or 5 levels (spec x86.md B4.2; Linux
 * drivers/iommu/generic_pt/fmt/x86_64.h, which names AMD IOMMU spec §2.2.6; io_pgtable_v2.c before it).
 *
 * Entry bits: [0] P, [1] R/W, [2] U/S, [3] PWT, [4] PCD, [5] A, [6] D, [7] PS (level 2 = 2 MiB, level 3 =
 * 1 GiB; PAT in a level-1 PTE), [8] G, [51:12] address, [63] NX.
 *
 * Decoding is core's x86-64 paging (`x86PagingFormat`): P = 0 is not present; level 1 is a 4 KiB leaf; PS = 1 at
 * level 2 or 3 is a large leaf whose address bits [pageShift−1:13] are reserved (bit 12 is PAT); PS = 1 at level
 * 4 or 5 is reserved. Permissions follow x86: present = readable, R/W → write, U/S → user, NX → no execute.
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

/**
 * Both halves of the v2 format: core's x86-64 paging with the full 52-bit output (no address bit below 52 is
 * reserved) and 1 GiB pages (Linux AMD_IOMMU_PGSIZES_V2: 4 KiB, 2 MiB, 1 GiB). The writing half produces the
 * entries Linux x86_64.h writes: tables P | R/W | U/S | A; leaves P | U/S | A, plus R/W | D when writable, plus
 * PS above level 1. Linux presets A and D so the IOMMU never has to update them, sets U/S everywhere and never
 * sets NX; x86 paging cannot withhold read from a present entry, so `perms` only decides R/W.
 */
const v2Format = x86PagingFormat({ name: "amd-vi-v2", leafUserExec: "always" });

export const amdV2PageTableFormat: PageTableFormat = v2Format;
export const amdV2PageTableEncoder: PageTableEncoder = v2Format;

/**
 * v2 geometries: 4-level (48-bit input) and 5-level (57-bit input; DTE GuestPagingMode = 1, EFR.GATS = 1).
 * Linux uses 47/56-bit non-sign-extended spaces for PASID-0 (GIoV) DMA and the sign-extended canonical
 * split with PASIDs; both fit these geometries below 2^53.
 */
export function amdV2Geometry(levels: 4 | 5): TableGeometry {
  return x86PagingGeometry(levels);
}
