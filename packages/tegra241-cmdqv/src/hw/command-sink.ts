import type { RawBits } from "@viommu/core";

/**
 * The SMMU a CMDQV extends, as its VCMDQs see it: every command a VCMDQ accepts is executed by the SMMU's
 * command-processing logic (TLB and ATC invalidation, CMD_SYNC) as if it came from the SMMU's own queue.
 * Linux's SMMUv3 model offers this as `Smmuv3Unit.executeCommand`.
 */
export interface SmmuCommandSink {
  /**
   * Executes one 128-bit command (4 × 32-bit words, lowest first); returns the SMMU CMDQ error code
   * (CERROR_NONE = 0, CERROR_ILL = 1, …). Must not keep `command`: the caller reuses it.
   */
  executeCommand(command: RawBits): number;
}
