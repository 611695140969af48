import { newWalkResult, Perm, WalkFault, type EntryReader, type HostMemory, type HostPageTable, type OwnerId } from "@viommu/core";

/**
 * Reads guest structures by IPA through a stage-2 table, as the SMMU fetches a nested STE's CD table: each
 * 8-byte fetch is a stage-2 translation, and the page it lands in must belong to the device's VM. A failed
 * fetch leaves the stage-2 result in `s2` (a walk fault, or External for a page outside the VM).
 */
export class Stage2FetchReader implements EntryReader {
  table: HostPageTable | undefined;
  owner: OwnerId = -1;
  readonly s2 = newWalkResult();

  constructor(private readonly host: HostMemory) {}

  readEntry(address: number, out: Uint32Array): boolean {
    const table = this.table;
    if (table === undefined) return false;
    table.walk(address, Perm.Read, this.s2);
    if (!this.s2.ok) return false;
    const hpa = this.s2.output;
    if (hpa % 8 !== 0 || this.host.ownerOf(hpa) !== this.owner) {
      this.s2.ok = false;
      this.s2.fault = WalkFault.External;
      return false;
    }
    this.host.read64Halves(hpa, out);
    return true;
  }
}
