import type { PagingDomain } from "../contract/iommu-unit.js";
import type { Iotlb } from "../translate/iotlb.js";
import { TablePagingDomain, type DomainCacheWatcher } from "./table-paging-domain.js";

/** How one unit tags what it caches through a stage-2 (or single-stage) domain. */
export interface StageTwoCacheRules {
  /**
   * The IOTLB ASID under which the unit caches a single-stage domain's translations (tagged with the domain's
   * VMID), or ANY_ASID when they are spread over several ASIDs (one per PASID, say).
   */
  readonly singleStageAsid: number;
  /**
   * Drops everything the unit cached through nesting parent `vmid`: any stage-1 translation (its output or a
   * stage-1 table fetch) may have gone through the unmapped range. Default: the whole VMID, for units that tag
   * nested translations with the parent's VMID. Units that tag them otherwise, or cache more through stage 2
   * (configuration structures in guest memory), say so here.
   */
  readonly dropNested?: (vmid: number) => void;
}

/**
 * The unit's side of `TablePagingDomain.watch`: keeps its IOTLB true to every stage-2 domain it caches through.
 * A single-stage domain's unmap drops just the range; a nesting parent's unmap also drops every nested
 * translation over it; a destroyed domain drops its whole VMID. One per unit; `use` every paging domain the
 * unit attaches to (nested = false) or nests on (nested = true).
 */
export class StageTwoCacheWatcher implements DomainCacheWatcher {
  /** VMIDs of the parents this unit nests on. */
  private readonly nestedVmids = new Set<number>();

  constructor(
    private readonly iotlb: Iotlb,
    private readonly rules: StageTwoCacheRules,
  ) {}

  /** Starts watching `domain` (idempotent); `nested` records that the unit walks stage 1 over it. */
  use(domain: PagingDomain, nested: boolean): void {
    if (domain instanceof TablePagingDomain) domain.watch(this);
    if (nested) this.nestedVmids.add(domain.vmid);
  }

  unmapped(vmid: number, iova: number, length: number): void {
    this.iotlb.invalidateRange(vmid, this.rules.singleStageAsid, iova, length);
    if (!this.nestedVmids.has(vmid)) return;
    if (this.rules.dropNested === undefined) this.iotlb.invalidateVmid(vmid);
    else this.rules.dropNested(vmid);
  }

  destroyed(vmid: number): void {
    this.iotlb.invalidateVmid(vmid);
    this.nestedVmids.delete(vmid);
  }
}
