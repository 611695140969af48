import {
  copyStructFromFullUserArray,
  copyStructFromUser,
  err,
  fail,
  fromBytes,
  HwptAllocFlag,
  ok,
  type InvalidateOutcome,
  type NestedDomain,
  type PhysicalDevice,
  type RawBits,
  type Result,
  type TablePagingDomain,
  type UserData,
  type UserDataArray,
  type VdeviceCore,
  type ViommuCore,
  type ViommuOps,
} from "@viommu/core";
import { CommandOpcode } from "../format/command.js";
import { checkNestedVste } from "../format/stream-table-entry.js";
import { HWPT_ARM_SMMUV3_BYTES, IOMMU_HWPT_DATA_ARM_SMMUV3, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES } from "../format/uapi.js";
import { Smmuv3NestedDomain } from "./smmuv3-nested-domain.js";
import type { Smmuv3Unit } from "./smmuv3-unit.js";

/** Notional driver struct size of a vSMMU (`struct arm_vsmmu`): nonzero, above the core's own. */
export const ARM_VSMMU_SIZE = 256;
/** Linux CMDQ_BATCH_ENTRIES: converted commands go to the hardware queue in chunks of 63 plus a CMD_SYNC. */
export const CMDQ_BATCH_ENTRIES = 64;

/**
 * A vSMMU (Linux `struct arm_vsmmu`, arm-smmu-v3-iommufd.c): one VM's slice of a physical SMMUv3. Its VMID is
 * the stage-2 parent's, so every vSMMU of a VM sharing that parent tags the same VMID. It builds nested domains
 * from guest vSTEs, converts guest invalidation commands (VMID forced, vSID → pSID) and runs them on the
 * physical command queue, and keeps the vSID → pSID table vDEVICEs program.
 */
export class ArmVsmmu implements ViommuOps {
  /** vSID → pSID, programmed by vdeviceInit. */
  readonly sidMap = new Map<number, number>();

  constructor(
    readonly unit: Smmuv3Unit,
    readonly core: ViommuCore,
    readonly parent: TablePagingDomain,
  ) {}

  get vmid(): number {
    return this.parent.vmid;
  }

  /**
   * IOMMU_HWPT_DATA_ARM_SMMUV3 → a nested domain (`arm_vsmmu_alloc_domain_nested`): flags other than PASID are
   * EOPNOTSUPP; the copy helper's EINVAL for a wrong type or size; EIO for a vSTE with bits outside the
   * nesting-allowed fields, a Config other than abort/bypass/S1 translate, or EATS other than abort/translate.
   * A vSTE with V = 0 is accepted as all zero (an abort STE).
   */
  allocDomainNested(_device: PhysicalDevice, flags: number, data: UserData): Result<NestedDomain> {
    if ((flags & ~HwptAllocFlag.PASID) !== 0) return err("EOPNOTSUPP", `nested HWPT flags 0x${flags.toString(16)}`);
    const bytes = copyStructFromUser(data, IOMMU_HWPT_DATA_ARM_SMMUV3, HWPT_ARM_SMMUV3_BYTES, HWPT_ARM_SMMUV3_BYTES);
    if (!bytes.ok) return fail(bytes);
    const check = checkNestedVste(fromBytes(bytes.value, 0, 128));
    if (!check.ok) return err("EIO", check.reason);
    return ok(new Smmuv3NestedDomain(this, check.vste, check.enableAts));
  }

  /**
   * One guest command made safe for the physical queue, in place (`arm_vsmmu_convert_user_cmd`):
   * CMD_TLBI_NSNH_ALL becomes CMD_TLBI_NH_ALL of this VMID (dw1 cleared); TLBI_NH_{ALL,ASID,VA,VAA} get this VMID;
   * ATC_INV and CFGI_CD(_ALL) get the physical SID of their vSID. Anything else, or an unknown vSID: EIO.
   */
  convertGuestCommand(cmd: RawBits): Result<void> {
    const op = cmd[0]! & 0xff;
    switch (op) {
      case CommandOpcode.CMD_TLBI_NSNH_ALL:
        cmd[0] = CommandOpcode.CMD_TLBI_NH_ALL;
        cmd[1] = this.vmid & 0xffff;
        cmd[2] = 0;
        cmd[3] = 0;
        return ok();
      case CommandOpcode.CMD_TLBI_NH_ALL:
      case CommandOpcode.CMD_TLBI_NH_ASID:
      case CommandOpcode.CMD_TLBI_NH_VA:
      case CommandOpcode.CMD_TLBI_NH_VAA:
        cmd[1] = ((cmd[1]! & 0xffff0000) | (this.vmid & 0xffff)) >>> 0;
        return ok();
      case CommandOpcode.CMD_ATC_INV:
      case CommandOpcode.CMD_CFGI_CD:
      case CommandOpcode.CMD_CFGI_CD_ALL: {
        const psid = this.sidMap.get(cmd[1]!);
        if (psid === undefined) return err("EIO", `no vDEVICE for vSID 0x${cmd[1]!.toString(16)}`);
        cmd[1] = psid >>> 0;
        return ok();
      }
      default:
        return err("EIO", `opcode 0x${op.toString(16)} is not accepted from a guest`);
    }
  }

  /**
   * IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 (`arm_vsmmu_cache_invalidate`): the whole array is copied at once
   * (EINVAL for a wrong type or zero entries, E2BIG for a longer entry with a nonzero tail), converted entry by
   * entry and run on the physical queue in chunks of CMDQ_BATCH_ENTRIES − 1. A bad entry stops the loop with
   * EIO and `handled` = its index. Unlike v6.13–v7.1 Linux, the chunk converted before a bad entry is run
   * before returning, so `handled` counts only entries that took effect (the contract the count states).
   */
  cacheInvalidate(array: UserDataArray): InvalidateOutcome {
    const entries = copyStructFromFullUserArray(array, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES);
    if (!entries.ok) return { handled: 0, result: fail(entries) };
    const batch: RawBits[] = [];
    for (let i = 0; i < entries.value.length; i++) {
      const cmd = fromBytes(entries.value[i]!, 0, 128);
      const converted = this.convertGuestCommand(cmd);
      if (!converted.ok) {
        this.unit.executeCommands(batch, true);
        return { handled: i, result: converted };
      }
      batch.push(cmd);
      if (batch.length === CMDQ_BATCH_ENTRIES - 1) {
        this.unit.executeCommands(batch, true);
        batch.length = 0;
      }
    }
    this.unit.executeCommands(batch, true);
    return { handled: entries.value.length, result: ok() };
  }

  /** Programs vSID → pSID for a vDEVICE (its virt_id is the guest's StreamID, 32 bits). */
  vdeviceInit(vdevice: VdeviceCore): Result<void> {
    if (vdevice.virtId > 0xffff_ffff) return err("EINVAL", `vSID ${vdevice.virtId} wider than 32 bits`);
    this.sidMap.set(vdevice.virtId, vdevice.device.requesterId);
    vdevice.destroy = () => {
      this.sidMap.delete(vdevice.virtId);
    };
    return ok();
  }
}
