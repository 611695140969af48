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
    if (this.memory.contains(address, bytes)) this.memory.fill(address, bytes, 0);
  }

  /**
   * The guest may have overwritten its own table pointers with anything: a read outside its RAM sees what an
   * unclaimed bus returns for a driver (nothing present), a write there goes nowhere. A guest driver whose
   * tables were corrupted then misbehaves as the guest's own problem, never as an exception out of the model.
   */
  read64Halves(address: number, out: Uint32Array): void {
    if (address % 8 === 0 && this.memory.contains(address, 8)) this.memory.read64Halves(address, out);
    else {
      out[0] = 0;
      out[1] = 0;
    }
  }

  write64Halves(address: number, lo: number, hi: number): void {
    if (address % 8 === 0 && this.memory.contains(address, 8)) this.memory.write64Halves(address, lo, hi);
  }
}
