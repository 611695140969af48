import type { HwInfo, PhysicalDevice, Result, UserData, ViommuOps } from "@viommu/core";
import type { ArmVsmmu } from "./smmuv3-viommu.js";
import type { Smmuv3Unit } from "./smmuv3-unit.js";

/**
 * The extension point of an SMMUv3 unit, like Linux's `struct arm_smmu_impl_ops`: an implementation that
 * extends a standard SMMUv3 (NVIDIA's Tegra241 CMDQV, in packages/tegra241-cmdqv) hands one of these to
 * `createSmmuv3Unit(host, index, { extension })` and gets a unit that is a plain SMMUv3 in every respect plus what
 * the extension adds. Without an extension the unit is a plain SMMUv3: every hook below is optional and its
 * absence means "the standard behaviour only".
 *
 * What an extension gets from the unit (its public API): the ID registers and features, `executeCommands`
 * (the physical command queue: an extension's own queues feed it converted guest commands), the IOTLB and
 * event log, and, in `viommuInit`, the base vSMMU (`ArmVsmmu`: VMID, stage-2 parent, vSID → pSID table,
 * `allocDomainNested`, `cacheInvalidate`, `convertGuestCommand`) to reuse in its own ops, as Linux's
 * tegra241-cmdqv reuses arm_vsmmu_alloc_domain_nested and arm_vsmmu_cache_invalidate.
 */
export interface Smmuv3Extension {
  /** A short name for logs (e.g. "tegra241-cmdqv"). */
  readonly name: string;

  /** Optional. Called once when the unit is created (Linux's impl probe), so the extension can keep the unit. */
  probe?(unit: Smmuv3Unit): void;

  /**
   * Optional. GET_HW_INFO for a requested type other than DEFAULT / IOMMU_HW_INFO_TYPE_ARM_SMMUV3
   * (`impl_ops->hw_info`): the extension validates the type itself. Absent: such a request is EOPNOTSUPP.
   */
  hwInfo?(unit: Smmuv3Unit, device: PhysicalDevice, requestedType: number): Result<HwInfo>;

  /**
   * Optional. The notional size of a vIOMMU of a type other than IOMMU_VIOMMU_TYPE_ARM_SMMUV3, 0 when the
   * extension does not implement it (`impl_ops->get_viommu_size`). Only asked when the unit supports nesting.
   * Absent: other types are unsupported.
   */
  getViommuSize?(unit: Smmuv3Unit, device: PhysicalDevice, type: number): number;

  /**
   * Required with `getViommuSize`. Initialises a vIOMMU of the extension's type (`impl_ops->vsmmu_init`): the
   * unit has already checked the stage-2 parent and built the base vSMMU; the extension returns the ops the
   * core calls. On failure nothing it did may survive.
   */
  viommuInit?(vsmmu: ArmVsmmu, data: UserData | undefined): Result<ViommuOps>;
}
