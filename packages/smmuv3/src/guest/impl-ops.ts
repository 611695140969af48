import type { RawBits, Result } from "@viommu/core";
import type { Smmuv3GuestDriver } from "./smmuv3-driver.js";

/** A command queue besides the SMMU's own CMDQ that the guest driver can issue a batch on (a Tegra241 VCMDQ, say). */
export interface SecondaryCommandQueue {
  /**
   * Issues `commands` followed by a CMD_SYNC on this queue and waits for the SYNC, as the main CMDQ does. An
   * error fails the batch: the driver does not retry it on the main CMDQ (the implementation's error handling
   * owns the stopped queue).
   */
  submit(commands: readonly RawBits[]): Result<void>;
}

/** What the driver's probe found, for an implementation built on it (Linux's impl code reads `struct arm_smmu_device`). */
export interface Smmuv3ProbeInfo {
  /** The SMMU's register base: the IORT node's, else the VMM's address. */
  readonly base: number;
  /** The IORT SMMUv3 node's identifier (an implementation's firmware device names its SMMU by it); undefined without an IORT node. */
  readonly iortIdentifier: number | undefined;
  /** IDR1.CMDQS: log2 of the largest command queue the SMMU takes. */
  readonly cmdqs: number;
  /** Linux's ARM_SMMU_OPT_MSIPOLL: IDR0.MSI on a coherent SMMU, so CMD_SYNCs signal by MSI into their own slot. */
  readonly msiPoll: boolean;
}

/**
 * The guest side of Linux's `struct arm_smmu_impl_ops`: what an SMMUv3 implementation adds to the reference guest
 * driver (`Smmuv3GuestDriver.setImplOps`). Every op is optional; without ops, or with an op absent, the driver is
 * the plain SMMUv3 driver.
 */
export interface Smmuv3DriverImplOps {
  /**
   * Optional. Linux `impl_ops->get_secondary_cmdq(smmu, ent)`: asked for every batch the driver issues, before
   * the main CMDQ is used, with the batch's commands (its CMD_SYNC not yet appended). A queue returned takes the
   * whole batch and its CMD_SYNC; undefined keeps the batch on the main CMDQ. It runs on every invalidation, so
   * it should not allocate.
   */
  getSecondaryCmdq?(driver: Smmuv3GuestDriver, commands: readonly RawBits[]): SecondaryCommandQueue | undefined;
}
