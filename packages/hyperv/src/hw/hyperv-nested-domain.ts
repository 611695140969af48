import type { NestedDomain, PagingDomain, PhysicalIommu, StageConfig } from "@viommu/core";
import { hypervPageTableFormat, hypervStage1Geometry } from "../format/x86-page-table.js";

/** What a device domain needs from its unit to drop the IOTLB entries it tagged. */
export interface DomainTlb {
  /** Drops every entry of a device domain (FLUSH_DEVICE_DOMAIN). */
  flushDomain(vmid: number, domainId: number): number;
  /** Drops the entries of a device domain overlapping [address, address + length). */
  flushRange(vmid: number, domainId: number, address: number, length: number): number;
}

/**
 * A paging device domain: the guest's x86-64 stage-1 table at `s1Root` (a GPA), 4 or 5 levels, nested over the
 * vIOMMU's stage-2 parent. Its IOTLB entries are tagged (parent VMID, device-domain id), so two guests using the
 * same domain id never share an entry and a flush names exactly its domain.
 */
export class HypervNestedDomain implements NestedDomain {
  readonly kind = "nested" as const;
  /** Built once: the hot path passes both stages to the walker without allocating. */
  readonly stage1: StageConfig;
  readonly stage2: StageConfig;

  constructor(
    readonly unit: PhysicalIommu,
    readonly parent: PagingDomain,
    readonly domainId: number,
    readonly s1Root: number,
    readonly levels: 4 | 5,
    private readonly tlb: DomainTlb,
  ) {
    this.stage1 = { format: hypervPageTableFormat, geometry: hypervStage1Geometry(levels), root: s1Root };
    this.stage2 = { format: parent.table.format, geometry: parent.table.geometry, root: parent.table.root };
  }

  /** A domain's translations die with it (a reconfigured domain gets a new HWPT under the same id). */
  destroy(): void {
    this.tlb.flushDomain(this.parent.vmid, this.domainId);
  }
}
