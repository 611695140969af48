import type { GuestMemory } from "../memory/guest-memory.js";
import type { TableStore } from "../translate/host-page-table.js";
import type { PageSource } from "./guest-pages.js";

/** Page-table pages in guest RAM, for reference guest drivers building their own tables. */
export class GuestTableStore implements TableStore {
  constructor(
    private readonly memory: GuestMemory,
    private readonly pages: PageSource,
  ) {}

  allocateTable(bytes: number): number | undefined {
    const pages = Math.max(1, Math.ceil(bytes / 4096));
    return this.pages.allocate(pages, pages);
  }

  freeTable(address: number, bytes: number): void {
    // The reference drivers keep freed table pages zeroed and do not reuse them: simpler, and a stale
    // pointer to them then reads as not-present rather than as someone else's table.
    this.memory.fill(address, bytes, 0);
  }

  read64Halves(address: number, out: Uint32Array): void {
    this.memory.read64Halves(address, out);
  }

  write64Halves(address: number, lo: number, hi: number): void {
    this.memory.write64Halves(address, lo, hi);
  }
}
