import { err, ok, type GuestIommuDriver, type GuestDomainId, type GuestMemory, type PermBits, type Result } from "@viommu/core";

/** A DMA buffer shared in place and mapped for the device. */
export interface SharedMapping {
  readonly domain: GuestDomainId;
  readonly iova: number;
  readonly gpa: number;
  readonly length: number;
}

/**
 * DMA in a confidential guest whose vIOMMU translates DMA in the shared-structure mode (`variant: "snp-dma"`):
 * instead of bouncing a private buffer through SWIOTLB, the guest shares the buffer's own pages with the host
 * (set_memory_decrypted, one page-state change per 4 KiB page, as dma_alloc_coherent does) and maps exactly them
 * for the device, which the IOMMU confines to them; unmapping makes them private again. No byte is copied; the
 * cost is the conversions, counted here. Whole pages are shared, so a buffer should own its pages.
 */
export class SharedDmaBuffers {
  pagesConverted = 0;
  mappings = 0;

  constructor(
    private readonly memory: GuestMemory,
    private readonly driver: GuestIommuDriver,
  ) {}

  map(domain: GuestDomainId, iova: number, gpa: number, length: number, perms: PermBits): Result<SharedMapping> {
    if (length <= 0 || gpa % 4096 !== 0 || length % 4096 !== 0 || !this.memory.contains(gpa, length)) return err("EINVAL", "a shared DMA buffer is whole pages of guest RAM");
    this.memory.setShared(gpa, length, true);
    this.pagesConverted += length / 4096;
    const r = this.driver.map(domain, iova, gpa, length, perms);
    if (!r.ok) {
      this.memory.setShared(gpa, length, false);
      this.pagesConverted += length / 4096;
      return r;
    }
    this.mappings++;
    return ok({ domain, iova, gpa, length });
  }

  /** Unmaps (with the IOMMU invalidation) and makes the pages private again (set_memory_encrypted). */
  unmap(m: SharedMapping): Result<void> {
    const r = this.driver.unmap(m.domain, m.iova, m.length);
    if (!r.ok) return r;
    this.memory.setShared(m.gpa, m.length, false);
    this.pagesConverted += m.length / 4096;
    return ok();
  }
}
