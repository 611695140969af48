import { HV_HYP_PAGE_SIZE } from "../format/hypercalls.js";
import { flushDeviceDomainListInputLayout, iommuFlushVaElementLayout } from "../format/device-domain-hypercalls.js";

/** Entries of one HVCALL_FLUSH_DEVICE_DOMAIN_LIST input page (HV_IOMMU_MAX_FLUSH_VA_COUNT): 508. */
export const HV_IOMMU_MAX_FLUSH_VA_COUNT = (HV_HYP_PAGE_SIZE - flushDeviceDomainListInputLayout.size) / iommuFlushVaElementLayout.size;

export interface FlushVaEntry {
  readonly page_number: number;
  readonly page_mask_shift: number;
}

function trailingZeros(n: number): number {
  let z = 0;
  while (z < 63 && n % 2 ** (z + 1) === 0) z++;
  return z;
}

function floorLog2(n: number): number {
  let k = 0;
  while (2 ** (k + 1) <= n) k++;
  return k;
}

/**
 * The pvIOMMU series' hv_iommu_fill_iova_list(): the inclusive IOVA range [start, end] as the fewest naturally
 * aligned power-of-two blocks of 4 KiB pages (each block as large as both the alignment of its first page and the
 * pages left allow), or undefined when that takes more entries than one input page holds — the caller then
 * flushes the whole domain. The end page is HVPFN_UP(end + 1), the review's fix for an end ending in 0x000.
 */
export function fillIovaList(start: number, end: number, capacity = HV_IOMMU_MAX_FLUSH_VA_COUNT): FlushVaEntry[] | undefined {
  let pfn = Math.floor(start / 4096);
  let pages = Math.ceil((end + 1) / 4096) - pfn;
  const out: FlushVaEntry[] = [];
  while (pages > 0) {
    if (out.length >= capacity) return undefined;
    const order = Math.min(pfn === 0 ? 63 : trailingZeros(pfn), floorLog2(pages));
    out.push({ page_number: pfn, page_mask_shift: order });
    pfn += 2 ** order;
    pages -= 2 ** order;
  }
  return out;
}
