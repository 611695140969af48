import type { GuestMemory, PageSource, TableStore } from "@viommu/core";

/**
 * The driver's page-table pages in guest RAM, for core's table builder. A table pointer the driver reads
 * back may have been corrupted (the guest's own memory is not trusted by its own tests either): reads
 * outside RAM see an empty entry and writes there are dropped, so a stray pointer can never turn into an
 * access outside the VM.
 */
export class GuardedTableStore implements TableStore {
  constructor(
    private readonly memory: GuestMemory,
    private readonly pages: PageSource,
  ) {}

  allocateTable(bytes: number): number | undefined {
    const pages = Math.max(1, Math.ceil(bytes / 4096));
    return this.pages.allocate(pages, pages);
  }

  freeTable(address: number, bytes: number): void {
    if (this.memory.contains(address, bytes)) this.memory.fill(address, bytes, 0);
  }

  read64Halves(address: number, out: Uint32Array): void {
    if (this.memory.contains(address, 8)) this.memory.read64Halves(address, out);
    else {
      out[0] = 0;
      out[1] = 0;
    }
  }

  write64Halves(address: number, lo: number, hi: number): void {
    if (this.memory.contains(address, 8)) this.memory.write64Halves(address, lo, hi);
  }
}
