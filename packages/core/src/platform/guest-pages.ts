import type { GuestMemory } from "../memory/guest-memory.js";
import { PAGE_SIZE } from "../memory/page.js";

/** Where a guest driver gets zeroed, naturally aligned pages for its structures. */
export interface PageSource {
  allocate(pages: number, alignPages?: number): number | undefined;
}

/**
 * The guest kernel's page allocator, as far as an IOMMU driver needs one: zeroed, naturally aligned runs
 * of pages from a region of guest RAM set aside for the driver.
 */
export class GuestPageAllocator implements PageSource {
  private next: number;
  private readonly runs: { readonly start: number; readonly pages: number }[] = [];

  constructor(
    private readonly memory: GuestMemory,
    start: number,
    private readonly end: number,
  ) {
    this.next = start;
  }

  allocate(pages: number, alignPages = 1): number | undefined {
    const align = alignPages * PAGE_SIZE;
    const at = Math.ceil(this.next / align) * align;
    if (at + pages * PAGE_SIZE > this.end) return undefined;
    this.next = at + pages * PAGE_SIZE;
    this.memory.fill(at, pages * PAGE_SIZE, 0);
    this.runs.push({ start: at, pages });
    return at;
  }

  /** Every run handed out so far (the driver's tables, queues and logs), for tools and hostile tests. */
  allocations(): readonly { readonly start: number; readonly pages: number }[] {
    return this.runs;
  }
}
