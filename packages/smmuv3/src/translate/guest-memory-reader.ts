import type { EntryReader, GuestMemory } from "@viommu/core";

/**
 * Reads SMMU structures and tables from guest memory by guest physical address, as the emulated SMMU (and the
 * walk tool) fetch them: an address outside guest RAM, or a private page of a confidential guest, fails the
 * fetch (the architecture's external abort) instead of being read.
 */
export class GuestMemoryReader implements EntryReader {
  constructor(private readonly memory: GuestMemory) {}

  readEntry(address: number, out: Uint32Array): boolean {
    if (address % 8 !== 0 || !this.memory.hostReadable(address, 8)) return false;
    this.memory.read64Halves(address, out);
    return true;
  }
}
