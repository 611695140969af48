import type { RawBits } from "@viommu/core";
import { CommandOpcode, SyncCs } from "../format/command.js";
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
  // 32-bit operations per field (positions as in commandLayouts.CMD_SYNC): one per batch on the driver's queue path.
  const address = msiAddress ?? 0;
  const hi = Math.floor(address / 2 ** 32);
  return Uint32Array.of((CommandOpcode.CMD_SYNC | (cs << 12) | (Shareability.ISH << 22) | (MSIATTR_OIWB << 24)) >>> 0, 0, ((address - hi * 2 ** 32) & 0xffff_fffc) >>> 0, hi & 0xf_ffff);
}
