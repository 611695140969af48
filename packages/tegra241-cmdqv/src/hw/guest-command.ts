import type { RawBits } from "@viommu/core";
import { CommandOpcode } from "@viommu/smmuv3";
import { commandOpcode, guestVcmdqAllows } from "../format/guest-commands.js";
import { VcmdqCerror } from "../format/vcmdq-registers.js";

/** CMD_SYNC.CS, dw0[13:12]. */
const SYNC_CS_MASK = 0x3 << 12;

/** The virtual → physical StreamID substitution of one VINTF (its SID_MATCH / SID_REPLACE pairs). */
export interface SidReplacer {
  /** The physical SID of an enabled slot whose VIRT_SID is `vsid`, or -1 when no slot matches. */
  physicalSid(vsid: number): number;
}

/**
 * What a guest-owned VCMDQ (VINTF_HYP_OWN = 0) does to one command before the SMMU executes it, in place
 * (spec arm-hyperv-virtio.md §4.5, iommufd.md §7.5): only TLBI_NH_ASID, TLBI_NH_VA, ATC_INV and CMD_SYNC are
 * executed; the TLBIs run with the VINTF's VMID whatever the guest wrote; ATC_INV's StreamID is looked up in the
 * SID_MATCH slots and replaced by the slot's physical SID. Returns the CONS_INDX.ERR code: CERROR_ILL for any
 * other opcode or an unmatched vSID (the queue then stops on this command), CERROR_NONE otherwise.
 *
 * CMD_SYNC runs as a barrier only: its CS field is cleared, because an MSI write would go to an address the guest
 * chose, and Linux never asks one of a VCMDQ (it builds VCMDQ syncs with CS_NONE and polls CONS,
 * arm_smmu_cmdq_needs_busy_polling). The hardware's response to CS ≠ NONE on a guest queue is not documented.
 */
export function prepareGuestCommand(command: RawBits, vmid: number, sids: SidReplacer): number {
  const opcode = commandOpcode(command[0]!);
  if (!guestVcmdqAllows(opcode)) return VcmdqCerror.CERROR_ILL;
  switch (opcode) {
    case CommandOpcode.CMD_TLBI_NH_ASID:
    case CommandOpcode.CMD_TLBI_NH_VA:
      // VMID is dw0[47:32]: the low half of the second 32-bit word.
      command[1] = ((command[1]! & 0xffff_0000) | (vmid & 0xffff)) >>> 0;
      return VcmdqCerror.CERROR_NONE;
    case CommandOpcode.CMD_ATC_INV: {
      const psid = sids.physicalSid(command[1]!);
      if (psid < 0) return VcmdqCerror.CERROR_ILL;
      command[1] = psid >>> 0;
      return VcmdqCerror.CERROR_NONE;
    }
    case CommandOpcode.CMD_SYNC:
      command[0] = (command[0]! & ~SYNC_CS_MASK) >>> 0;
      return VcmdqCerror.CERROR_NONE;
    default:
      return VcmdqCerror.CERROR_ILL;
  }
}
