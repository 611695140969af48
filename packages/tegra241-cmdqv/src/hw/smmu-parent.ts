import type { PhysicalIommu, Result, VdeviceCore, ViommuCore, ViommuOps } from "@viommu/core";
import type { SmmuCommandSink } from "./command-sink.js";

/**
 * What the CMDQV needs of the SMMUv3 unit it extends (`Smmuv3Unit` of @viommu/smmuv3 has all of it): the physical
 * IOMMU, its command execution (for the commands the VCMDQs accept and the host's own CMD_SYNC flushes) and its
 * ID registers (IDR1.CMDQS bounds the queue size). Declared structurally so the hardware model stands on its own.
 */
export interface ExtendedSmmu extends PhysicalIommu, SmmuCommandSink {
  readonly config: { readonly idr: readonly number[] };
}

/**
 * What the CMDQV reuses of the base vSMMU the unit builds for every vIOMMU (`ArmVsmmu` of @viommu/smmuv3), as
 * Linux's tegra241_cmdqv_viommu_ops reuse arm_vsmmu_alloc_domain_nested and arm_vsmmu_cache_invalidate: nested
 * domains from guest vSTEs, the trapped-queue invalidation path, the VMID (the stage-2 parent's) and its own
 * vSID → pSID table, which those invalidations need.
 */
export interface BaseVsmmu extends ViommuOps {
  readonly core: ViommuCore;
  readonly vmid: number;
  vdeviceInit(vdevice: VdeviceCore): Result<void>;
}
