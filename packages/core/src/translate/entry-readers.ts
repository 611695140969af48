import type { GuestMemory } from "../memory/guest-memory.js";
import type { HostMemory, OwnerId } from "../memory/host-memory.js";
import type { EntryReader } from "./page-walker.js";

/** Reads host-owned tables (a host stage-2 table): only allocated host pages of the expected owner. */
export class HostTableReader implements EntryReader {
  constructor(
    private readonly host: HostMemory,
    private readonly owner: OwnerId,
  ) {}

  readEntry(address: number, out: Uint32Array): boolean {
    return (address & 7) === 0 && this.host.readOwned64(this.owner, address, out);
  }
}

/**
 * Reads a guest's tables by guest physical address (the VMM walking guest tables for shadowing or for its
 * emulated devices; `viommu walk` on a memory image). Addresses outside guest RAM fail the fetch.
 */
export class GuestTableReader implements EntryReader {
  constructor(private readonly memory: GuestMemory) {}

  readEntry(address: number, out: Uint32Array): boolean {
    if ((address & 7) !== 0 || !this.memory.contains(address, 8)) return false;
    this.memory.read64Halves(address, out);
    return true;
  }
}
