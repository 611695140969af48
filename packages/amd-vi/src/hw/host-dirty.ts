import { copyWalkResult, newWalkResult, Perm, type PagingDomain, type PermBits, type WalkResult } from "@viommu/core";
import { firstZeroAtOrAbove12 } from "../format/layout-tools.js";
import { V1_NEXT_LEVEL_SIZE_ENCODED } from "../format/page-table-v1.js";

/**
 * The IOMMU's side of host dirty tracking on a v1 stage-2 (or only) table: a write that translated through a
 * domain whose DTE has HAD set marks the leaf it walked dirty; a read caches the clean writable leaf so that the
 * first write after it walks again (core's cleanWrite). `tracking` on the domain's dirty ops stands for
 * DTE.HAD = 11b on every device attached to it, which amd_iommu_set_dirty_tracking writes and flushes.
 *
 * A size-encoded page (NextLevel 7) is repeated in every slot it covers. The model marks the run's first copy:
 * Linux reads a page as dirty when any copy is, so what software sees is the same, and core's table tracker
 * reports a leaf's range from the slot it finds it in, which is exact only for the first copy.
 */
export class HostDirtyMarker {
  private readonly scratch: WalkResult = newWalkResult();

  /** Whether `access` needs the stage-2 leaf of a successful walk `out` marked, and marks it. */
  written(stage2: PagingDomain, access: PermBits, out: WalkResult): void {
    const ops = stage2.dirtyOps;
    if (ops === undefined || !ops.tracking || (access & Perm.Write) === 0 || !out.ok) return;
    if (((out.entryLo >>> 9) & 7) !== V1_NEXT_LEVEL_SIZE_ENCODED) {
      ops.markWritten(out);
      return;
    }
    copyWalkResult(out, this.scratch);
    this.scratch.entryAddress = this.firstCopy(out.entryAddress, out.entryLo, out.entryHi);
    ops.markWritten(this.scratch);
  }

  /** Whether a read should cache the leaf as clean-writable (the domain tracks dirty pages). */
  cleanOnRead(stage2: PagingDomain, access: PermBits): boolean {
    return stage2.dirtyOps?.tracking === true && (access & Perm.Write) === 0;
  }

  /**
   * The first entry of the size-encoded run holding the entry at `at`. The page size 2^p comes from the
   * entry's address bits; the slot it sits in is the one level below it (levels are 9 bits apart and a page
   * spans at most 2^8 slots, so one level fits), and the run is naturally aligned in its table.
   */
  private firstCopy(at: number, lo: number, hi: number): number {
    const p = firstZeroAtOrAbove12(lo, hi) + 1;
    const slotShift = 12 + 9 * Math.floor((p - 13) / 9);
    const copies = 2 ** Math.min(8, Math.max(0, p - slotShift));
    const index = (at % 4096) / 8;
    return at - (index % copies) * 8;
  }
}
