import {
  checkFullUserArray,
  fromBytes,
  copyStructFromUser,
  err,
  fail,
  HwptAllocFlag,
  ok,
  readUserArrayEntryWords,
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
import { commandName, CommandOpcode } from "../format/command.js";
import { tlbiRangeReserved } from "../format/tlbi-range.js";
import { checkNestedVste } from "../format/stream-table-entry.js";
import { HWPT_ARM_SMMUV3_BYTES, IOMMU_HWPT_DATA_ARM_SMMUV3, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES } from "../format/uapi.js";
import { Smmuv3NestedDomain } from "./smmuv3-nested-domain.js";
import type { Smmuv3Unit } from "./smmuv3-unit.js";

/** Notional driver struct size of a vSMMU (`struct arm_vsmmu`): nonzero, above the core's own. */
export const ARM_VSMMU_SIZE = 256;
/** Linux CMDQ_BATCH_ENTRIES: converted commands go to the hardware queue in chunks of 63 plus a CMD_SYNC. */
export const CMDQ_BATCH_ENTRIES = 64;

/** Command fields by 32-bit half (IHI0070 §4; positions as in `commandLayouts`). */
const NUM_MASK = 0x1f << 12;
const SCALE_MASK = 0x1f << 20;
const SSV = 1 << 11;
const SSID_MASK = 0xfffff000;
const ATC_GLOBAL = 1 << 9;
const VMID_MASK = 0xffff;
const LEAF = 1;
const TTL_MASK = 0b11 << 8;
const TG_MASK = 0b11 << 10;
const ADDR_LO_MASK = 0xfffff000;
const ATC_SIZE_MASK = 0x3f;
/** CMD_ATC_INV Size meaning "everything" (Linux ATC_INV_SIZE_ALL). */
const ATC_INV_SIZE_ALL = 52;

/**
 * A vSMMU (Linux `struct arm_vsmmu`, arm-smmu-v3-iommufd.c): one VM's slice of a physical SMMUv3. Its VMID is
 * the stage-2 parent's, so every vSMMU of a VM sharing that parent tags the same VMID. It builds nested domains
 * from guest vSTEs, converts guest invalidation commands (VMID forced, vSID → pSID) and runs them on the
 * physical command queue, and keeps the vSID → pSID table vDEVICEs program.
 */
export class ArmVsmmu implements ViommuOps {
  /** vSID → pSID, programmed by vdeviceInit. */
  readonly sidMap = new Map<number, number>();
  /** One batch's converted commands, reused by every invalidation (the queue path allocates nothing per entry). */
  private readonly batch: readonly RawBits[] = Array.from({ length: CMDQ_BATCH_ENTRIES - 1 }, () => new Uint32Array(4));

  constructor(
    readonly unit: Smmuv3Unit,
    readonly core: ViommuCore,
    readonly parent: TablePagingDomain,
  ) {}

  get vmid(): number {
    return this.parent.vmid;
  }

  /**
   * IOMMU_HWPT_DATA_ARM_SMMUV3 → a nested domain (`arm_vsmmu_alloc_domain_nested`): any flag is EOPNOTSUPP
   * (the core has already taken FAULT_ID_VALID; PASID is not supported on a nested SMMUv3 domain); the copy helper's EINVAL for a wrong type or size; EIO for a vSTE with bits outside the
   * nesting-allowed fields, a Config other than abort/bypass/S1 translate, or EATS other than abort/translate.
   * A vSTE with V = 0 is accepted as all zero (an abort STE).
   */
  allocDomainNested(_device: PhysicalDevice, flags: number, data: UserData): Result<NestedDomain> {
    if (flags !== 0) return err("EOPNOTSUPP", `nested HWPT flags 0x${flags.toString(16)}`);
    const bytes = copyStructFromUser(data, IOMMU_HWPT_DATA_ARM_SMMUV3, HWPT_ARM_SMMUV3_BYTES, HWPT_ARM_SMMUV3_BYTES);
    if (!bytes.ok) return fail(bytes);
    const check = checkNestedVste(fromBytes(bytes.value, 0, 128));
    if (!check.ok) return err("EIO", check.reason);
    return ok(new Smmuv3NestedDomain(this, check.vste, check.enableAts));
  }

  /**
   * Which bits of a guest command the host lets through, as `arm_vsmmu_validate_user_cmd` (Linux
   * drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c, 2026) collects them per opcode: the opcode; VMID on the
   * TLBIs (overwritten after); ASID within the SMMU's ASID width; NUM, SCALE, TG, TTL only with range
   * invalidation (IDR3.RIL) and then never in a Reserved combination; Leaf and the address; ATC_INV only with
   * ATS and a Size up to 52; SSV, SSID and Global only with SubstreamIDs; CFGI_CD's Leaf. Any other bit (RES0,
   * SSec, an unsupported field) is EIO, so a guest cannot wedge the shared physical queue with a CERROR_ILL.
   * Out-of-range values of allowed fields are the guest's own CONSTRAINED UNPREDICTABLE and are not checked.
   */
  private validateGuestCommand(cmd: RawBits): Result<void> {
    const f = this.unit.features;
    const op = cmd[0]! & 0xff;
    const asidMask = ((f.asid16 ? 0xffff : 0xff) << 16) >>> 0;
    let a0 = 0xff;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    switch (op) {
      case CommandOpcode.CMD_TLBI_NSNH_ALL:
        break;
      case CommandOpcode.CMD_TLBI_NH_VA:
      case CommandOpcode.CMD_TLBI_NH_VAA:
        if (op === CommandOpcode.CMD_TLBI_NH_VA) a1 |= asidMask;
        if (f.rangeInvalidation) {
          if (tlbiRangeReserved(cmd, true)) return err("EIO", "a Reserved range encoding (NUM/SCALE/TG/TTL)");
          a0 |= NUM_MASK | SCALE_MASK;
          a2 |= TG_MASK | TTL_MASK;
        }
        a1 |= VMID_MASK;
        a2 |= LEAF | ADDR_LO_MASK;
        a3 = 0xffff_ffff;
        break;
      case CommandOpcode.CMD_TLBI_NH_ASID:
        a1 |= asidMask | VMID_MASK;
        break;
      case CommandOpcode.CMD_TLBI_NH_ALL:
        a1 |= VMID_MASK;
        break;
      case CommandOpcode.CMD_ATC_INV:
        if (!f.ats) return err("EIO", "CMD_ATC_INV on an SMMU without ATS");
        if ((cmd[2]! & ATC_SIZE_MASK) > ATC_INV_SIZE_ALL) return err("EIO", `CMD_ATC_INV Size ${cmd[2]! & ATC_SIZE_MASK} above ${ATC_INV_SIZE_ALL}`);
        if (f.ssidBits > 0) a0 |= SSV | SSID_MASK | ATC_GLOBAL;
        a1 = 0xffff_ffff;
        a2 |= ATC_SIZE_MASK | ADDR_LO_MASK;
        a3 = 0xffff_ffff;
        break;
      case CommandOpcode.CMD_CFGI_CD:
        if (f.ssidBits > 0) a0 |= SSID_MASK;
        a2 |= LEAF;
        a1 = 0xffff_ffff;
        break;
      case CommandOpcode.CMD_CFGI_CD_ALL:
        a1 = 0xffff_ffff;
        break;
      default:
        return err("EIO", `opcode 0x${op.toString(16)} is not accepted from a guest`);
    }
    if ((cmd[0]! & ~a0) !== 0 || (cmd[1]! & ~a1) !== 0 || (cmd[2]! & ~a2) !== 0 || (cmd[3]! & ~a3) !== 0) {
      return err("EIO", `${commandName(op) ?? "command"} sets bits a guest may not set`);
    }
    return ok();
  }

  /**
   * One guest command made safe for the physical queue, in place (`arm_vsmmu_convert_user_cmd`): validated
   * first (EIO, see `validateGuestCommand`); CMD_TLBI_NSNH_ALL becomes CMD_TLBI_NH_ALL of this VMID (dw1
   * cleared); TLBI_NH_{ALL,ASID,VA,VAA} get this VMID; ATC_INV and CFGI_CD(_ALL) get the physical SID of their
   * vSID (an unknown vSID is EIO).
   */
  convertGuestCommand(cmd: RawBits): Result<void> {
    const valid = this.validateGuestCommand(cmd);
    if (!valid.ok) return valid;
    const op = cmd[0]! & 0xff;
    switch (op) {
      case CommandOpcode.CMD_TLBI_NSNH_ALL:
        cmd[0] = CommandOpcode.CMD_TLBI_NH_ALL;
        cmd[1] = this.vmid & 0xffff;
        cmd[2] = 0;
        cmd[3] = 0;
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
        cmd[1] = ((cmd[1]! & 0xffff0000) | (this.vmid & 0xffff)) >>> 0;
        return ok();
    }
  }

  /**
   * IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 (`arm_vsmmu_cache_invalidate`, 2026): a wrong type is EINVAL, an
   * empty array only probes the type (success, nothing handled). Entries go in batches of CMDQ_BATCH_ENTRIES − 1:
   * each batch is copied (E2BIG for a longer entry with a nonzero tail) and converted whole before any of it runs,
   * so one bad entry fails its whole batch, issuing nothing of it; the batches before it ran. `handled` counts the
   * entries of the batches that ran, exactly the ones that took effect.
   */
  cacheInvalidate(array: UserDataArray): InvalidateOutcome {
    if (array.type !== IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3) return { handled: 0, result: err("EINVAL", `array type ${array.type}`) };
    let processed = 0;
    while (processed < array.entryNum) {
      const n = Math.min(array.entryNum - processed, CMDQ_BATCH_ENTRIES - 1);
      const batch = { type: array.type, entryLen: array.entryLen, entryNum: n, bytes: array.bytes.subarray(processed * array.entryLen) };
      // The copy's checks, batch by batch (the entries are then read in place, into buffers reused batch after batch).
      const checked = checkFullUserArray(batch, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES);
      if (!checked.ok) return { handled: processed, result: checked };
      for (let i = 0; i < n; i++) {
        const cmd = this.batch[i]!;
        readUserArrayEntryWords(batch, i, VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES, cmd);
        const converted = this.convertGuestCommand(cmd);
        if (!converted.ok) return { handled: processed, result: converted };
      }
      this.unit.executeCommands(this.batch, true, n);
      processed += n;
    }
    return { handled: processed, result: ok() };
  }

  /**
   * Programs vSID → pSID for a vDEVICE (its virt_id is the guest's StreamID, 32 bits). A device with other than
   * exactly one StreamID is EOPNOTSUPP (`arm_vsmmu_vdevice_init`, the fix for CVE-2026-74573): a vSID maps to one
   * pSID, so the invalidations of a second stream would never reach it.
   */
  vdeviceInit(vdevice: VdeviceCore): Result<void> {
    if (vdevice.virtId > 0xffff_ffff) return err("EINVAL", `vSID ${vdevice.virtId} wider than 32 bits`);
    const streams = this.unit.streamIdsOf(vdevice.device);
    if (streams.length !== 1) return err("EOPNOTSUPP", `${vdevice.device.name} has ${streams.length} StreamIDs; a vDEVICE carries exactly one`);
    this.sidMap.set(vdevice.virtId, vdevice.device.requesterId);
    vdevice.destroy = () => {
      this.sidMap.delete(vdevice.virtId);
    };
    return ok();
  }
}
