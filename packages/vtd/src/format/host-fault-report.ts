import type { OwnerId, PhysicalIommu } from "@viommu/core";

/**
 * How a VMM learns of the DMA faults of its passthrough devices on VT-d. Mainline Linux has no vEVENTQ for
 * VT-d and its nested domains carry no unrecoverable-fault path to user space (the IOMMU_FAULT_QUEUE carries
 * page requests only), so this model declares its own: the host driver drains the unit's primary fault log
 * (as `dmar_fault` does) and queues each fault of a device a VM owns, as the 128-bit fault-recording record
 * the hardware wrote (physical source id, fault reason, address, PASID), for the VMM to read. The VMM turns it
 * into a record of its own guest-visible fault-recording registers, with the guest's source id.
 */

/** Which part of a translation refused the DMA. */
export const FaultStage = {
  /** No domain attached (the VMM blocked the device): the VMM decides what the guest sees. */
  BLOCKED: 0,
  /** The guest-owned first-level table of a nested domain: the guest's own fault. */
  STAGE1: 1,
  /** A host-owned table (the nesting parent, or a single-stage paging domain such as a shadow). */
  STAGE2: 2,
} as const;
export type FaultStage = (typeof FaultStage)[keyof typeof FaultStage];

/** One fault of a VM's device, as the host queues it for that VM's VMM. */
export interface VtdHostFaultReport {
  /** Physical requester id (the host's source id). */
  readonly requesterId: number;
  /** The request's PASID, or NO_PASID (−1). */
  readonly pasid: number;
  readonly iova: number;
  readonly write: boolean;
  readonly stage: FaultStage;
  /** The fault-recording register as the host unit recorded it (FRCD_REG, 4 × 32 bits). */
  readonly record: Uint32Array;
}

/** What a VMM reads: the reports (oldest first) and how many were dropped because its queue was full. */
export interface VtdHostFaultBatch {
  readonly reports: readonly VtdHostFaultReport[];
  readonly lost: number;
}

/** A physical unit that queues its VM-owned faults for VMMs. */
export interface VtdHostFaultSource {
  /** Takes up to `max` queued reports for devices owned by `owner`. */
  readFaultReports(owner: OwnerId, max: number): VtdHostFaultBatch;
}

/** Whether a physical unit offers VT-d host fault reports (any VT-d unit of this package does). */
export function isVtdHostFaultSource(unit: PhysicalIommu): unit is PhysicalIommu & VtdHostFaultSource {
  return unit.vendor === "vtd" && typeof (unit as Partial<VtdHostFaultSource>).readFaultReports === "function";
}
