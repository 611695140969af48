import { newWalkResult, Perm, type EntryReader, type HostMemory, type OwnerId, type PagingDomain, type WalkResult } from "@viommu/core";
import { HostDirtyMarker } from "./host-dirty.js";

/**
 * How the IOMMU reaches guest memory it was given by guest physical address (GCR3 tables with GCR3TRPMode,
 * the hardware vIOMMU's guest command buffer, event log and PPR log): every access is a stage-2 translation
 * through the nesting parent, and the host page it lands in must belong to the VM. Nothing is pinned, and
 * nothing needs to be contiguous: each 4 KiB page is translated on its own. The IOMMU's own writes (log
 * entries, completion-wait stores) are DMA writes like any other: with host dirty tracking on they mark the
 * stage-2 leaf, so a live migration copies what the IOMMU wrote into the guest. Allocates nothing per access.
 */
export class Stage2Access implements EntryReader {
  /** The last stage-2 walk, for fault records when an access fails. */
  readonly walk: WalkResult = newWalkResult();
  private readonly halves = new Uint32Array(2);
  private readonly dirty = new HostDirtyMarker();

  constructor(
    private readonly host: HostMemory,
    private readonly parent: PagingDomain,
    private readonly owner: OwnerId,
  ) {}

  /** The host address of `gpa` for a read or write, or undefined (stage-2 fault or a page outside the VM). */
  translate(gpa: number, write: boolean): number | undefined {
    const access = write ? Perm.Write : Perm.Read;
    this.parent.table.walk(gpa, access, this.walk);
    if (!this.walk.ok) return undefined;
    const hpa = this.walk.output;
    if (this.host.ownerOf(hpa) !== this.owner) return undefined;
    this.dirty.written(this.parent, access, this.walk);
    return hpa;
  }

  readEntry(address: number, out: Uint32Array): boolean {
    if (address % 8 !== 0) return false;
    const hpa = this.translate(address, false);
    if (hpa === undefined) return false;
    this.host.read64Halves(hpa, out);
    return true;
  }

  /** Reads `out.length` words of one naturally aligned record (it never crosses a page). */
  readWords(gpa: number, out: Uint32Array): boolean {
    for (let i = 0; i < out.length; i += 2) {
      if (!this.readEntry(gpa + i * 4, this.halves)) return false;
      out[i] = this.halves[0]!;
      out[i + 1] = this.halves[1]!;
    }
    return true;
  }

  /** Writes a naturally aligned record of words. */
  writeWords(gpa: number, words: Uint32Array): boolean {
    for (let i = 0; i < words.length; i += 2) {
      const hpa = this.translate(gpa + i * 4, true);
      if (hpa === undefined || hpa % 8 !== 0) return false;
      this.host.write64Halves(hpa, words[i]!, words[i + 1] ?? 0);
    }
    return true;
  }
}
