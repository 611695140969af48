import type { DmaRequest, WalkResult } from "@viommu/core";

/**
 * Who audits a device's translations on the physical unit: the VMM whose guest programs the tables the host's
 * attachment and IOTLB were built from (VmmDeviceOptions.audit). Called after every translation of the device,
 * with the result the unit produced and whether it came from the IOTLB.
 */
export interface TranslationAuditor {
  audited(request: DmaRequest, result: WalkResult, iotlbHit: boolean): void;
}

/** A physical unit that lets a VMM audit its devices' translations. */
export interface AuditableUnit {
  /** Installs (or with undefined removes) the auditor of the device at `requesterId`. */
  setAuditor(requesterId: number, auditor: TranslationAuditor | undefined): void;
}

export function isAuditableUnit(unit: unknown): unit is AuditableUnit {
  return typeof (unit as Partial<AuditableUnit> | undefined)?.setAuditor === "function";
}
