import type { RawBits } from "@viommu/core";
import { encodeCommand, SyncCs } from "../format/command.js";
import { Shareability } from "../format/control-registers.js";

/** CMD_SYNC MSIAttr Linux uses: outer and inner write-back (the MSI lands in normal cacheable memory). */
const MSIATTR_OIWB = 0xf;

/**
 * The CMD_SYNC Linux's arm-smmu-v3 writes (`arm_smmu_cmdq_build_sync_cmd`, and the one `arm_smmu_cmdq_skip_err`
 * puts over a failed command): MSH inner shareable, MSIAttr write-back; with an MSI address (MSIPOLL: the SYNC's
 * own slot, MSIData 0) it signals by MSI, else by SEV; on a queue the driver busy-polls (a Tegra241 guest VCMDQ)
 * CS is NONE whatever the address.
 */
export function linuxSyncCommand(msiAddress: number | undefined, busyPolling = false): RawBits {
  const cs = busyPolling ? SyncCs.None : msiAddress !== undefined ? SyncCs.SigIrq : SyncCs.SigSev;
  return encodeCommand("CMD_SYNC", { CS: cs, MSH: Shareability.ISH, MSIAttr: MSIATTR_OIWB, MSIData: 0, MSIAddress: msiAddress ?? 0 });
}
