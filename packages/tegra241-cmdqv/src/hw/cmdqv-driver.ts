import { decodeLayout, err, fail, ok, type HostServices, type HwInfo, type PhysicalDevice, type Result, type UserData, type ViommuOps } from "@viommu/core";
import { CommandOpcode, idr1Layout, type Smmuv3Extension } from "@viommu/smmuv3";
import {
  cmdqAllocOffset,
  CmdqvReg,
  lvcmdqPage0,
  lvcmdqPage1,
  VcmdqPage0Reg,
  VcmdqPage1Reg,
  vintfBase,
  VintfReg,
  vintfLvcmdqErrMap64Offset,
  vintfSidMatchOffset,
  vintfSidReplaceOffset,
} from "../format/aperture.js";
import { cmdqAllocLayout, cmdqvConfigLayout } from "../format/global-registers.js";
import { encodeHwInfoTegra241Cmdqv, encodeVeventTegra241Cmdqv, IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV, IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV, IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV } from "../format/iommufd-uapi.js";
import { encodeReg32 } from "../format/register-value.js";
import { vintfConfigLayout } from "../format/vintf-registers.js";
import { Tegra241Cmdqv } from "./cmdqv.js";
import { defaultCmdqvHwConfig, type CmdqvHwConfig } from "./cmdqv-hw-config.js";
import { CmdqvViommu } from "./cmdqv-viommu.js";
import type { BaseVsmmu, ExtendedSmmu } from "./smmu-parent.js";

/** Notional driver struct size of a user VINTF (`VIOMMU_STRUCT_SIZE(struct tegra241_vintf, vsmmu.core)`). */
export const TEGRA241_VINTF_SIZE = 512;
/** CMD_SYNC, CS = NONE: the flush Linux issues on the SMMU's own queue when a guest queue goes down (read only). */
const CMD_SYNC_NONE = Uint32Array.of(CommandOpcode.CMD_SYNC, 0, 0, 0);
const CMDQ_ENT_SZ_SHIFT = 4;

/**
 * The host driver of a Tegra241 CMDQV (Linux drivers/iommu/arm/arm-smmu-v3/tegra241-cmdqv.c): the SMMUv3 unit's
 * extension (`impl_ops`). At probe it creates the CMDQV next to the SMMU and resets it (CMDQV enabled, every
 * global VCMDQ pre-assigned to (VINTF, LVCMDQ) in CMDQ_ALLOC, VINTF0 enabled as the host's, HYP_OWN). Then it
 * serves iommufd: GET_HW_INFO of type TEGRA241_CMDQV, vIOMMUs of type TEGRA241_CMDQV (one user VINTF each, see
 * `CmdqvViommu`), and the error interrupt, which forwards a user VINTF's LVCMDQ error map to its vIOMMU as a
 * TEGRA241_CMDQV vEVENT. Everything reaches the hardware through its registers, as Linux writes them.
 *
 * Not modelled: the host's own use of VINTF0's queues. Linux routes the host's TLB/ATC invalidations through
 * them; here the host issues every command on the SMMU's own queue, so VINTF0 is reserved and idle.
 */
export class Tegra241CmdqvDriver implements Smmuv3Extension {
  readonly name = "tegra241-cmdqv";
  readonly hw: CmdqvHwConfig;
  /** vEVENTs a user VINTF's error could not deliver (no vEVENTQ of the type): the kernel only logs them. */
  droppedEvents = 0;
  private probed: { smmu: ExtendedSmmu; cmdqv: Tegra241Cmdqv } | undefined;
  /** User VINTFs by index (Linux's vintf_ids IDA; index 0 is the host's). */
  private readonly users = new Map<number, CmdqvViommu>();

  constructor(
    private readonly host: HostServices,
    index: number,
    hw?: CmdqvHwConfig,
  ) {
    this.hw = hw ?? defaultCmdqvHwConfig(index);
  }

  /** The CMDQV block; defined once the SMMU probed its extension. */
  get cmdqv(): Tegra241Cmdqv {
    if (this.probed === undefined) throw new Error("tegra241-cmdqv used before its SMMU probed it");
    return this.probed.cmdqv;
  }

  get smmu(): ExtendedSmmu {
    if (this.probed === undefined) throw new Error("tegra241-cmdqv used before its SMMU probed it");
    return this.probed.smmu;
  }

  // ---- impl_ops ----

  /** `__tegra241_cmdqv_probe` + `tegra241_cmdqv_hw_reset`. */
  probe(unit: ExtendedSmmu): void {
    const cmdqv = new Tegra241Cmdqv(this.hw, this.host.memory, unit);
    this.probed = { smmu: unit, cmdqv };
    cmdqv.onInterrupt = () => this.isr();
    const config = cmdqv.read32(CmdqvReg.CONFIG);
    cmdqv.write32(CmdqvReg.CONFIG, config & ~1);
    cmdqv.write32(CmdqvReg.CONFIG, config | encodeReg32(cmdqvConfigLayout, { CMDQV_EN: 1 }));
    const { vintfs, lvcmdqsPerVintf } = cmdqv.geometry;
    for (let v = 0, q = 0; v < vintfs; v++) {
      for (let l = 0; l < lvcmdqsPerVintf; l++) {
        cmdqv.write32(cmdqAllocOffset(q++), encodeReg32(cmdqAllocLayout, { CMDQV_CMDQ_ALLOC_VINTF: v, CMDQV_CMDQ_ALLOC_LVCMDQ: l }));
      }
    }
    this.vintfHwInit(0, 0, true);
  }

  /** `tegra241_cmdqv_hw_info`: only the TEGRA241_CMDQV type (the SMMU answers its own). */
  hwInfo(unit: ExtendedSmmu, device: PhysicalDevice, requestedType: number): Result<HwInfo> {
    if (requestedType !== IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV) return err("EOPNOTSUPP", `hw_info type ${requestedType}`);
    const base = unit.hwInfo(device, undefined);
    if (!base.ok) return fail(base);
    const param = this.cmdqv.read32(CmdqvReg.PARAM);
    const g = this.cmdqv.geometry;
    const data = encodeHwInfoTegra241Cmdqv({ version: param & 0xf, log2vcmdqs: Math.log2(g.lvcmdqsPerVintf), log2vsids: Math.log2(g.sidsPerVintf) });
    return ok({ type: IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV, data, maxPasidLog2: base.value.maxPasidLog2, capabilities: base.value.capabilities });
  }

  /** `tegra241_cmdqv_get_vintf_size`. */
  getViommuSize(_unit: ExtendedSmmu, _device: PhysicalDevice, type: number): number {
    return type === IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV ? TEGRA241_VINTF_SIZE : 0;
  }

  /**
   * `tegra241_cmdqv_init_vintf_user`: a user VINTF for the vIOMMU. Data (`iommu_viommu_tegra241_cmdqv`) is required
   * (EINVAL without; the copy helper's EINVAL for a wrong size); no free VINTF is ENOSPC. The VINTF starts without
   * any logical VCMDQ (queues are assigned only on HW_QUEUE_ALLOC), enabled with the vSMMU's VMID and HYP_OWN = 0;
   * its page 0 is registered for mmap and the offset and length are written back into the data.
   */
  viommuInit(vsmmu: BaseVsmmu, data: UserData | undefined): Result<ViommuOps> {
    if (vsmmu.core.viommuType !== IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV) return err("EOPNOTSUPP", `vIOMMU type ${vsmmu.core.viommuType}`);
    if (data === undefined) return err("EINVAL", "a TEGRA241_CMDQV vIOMMU needs iommu_viommu_tegra241_cmdqv data");
    let index = -1;
    for (let v = 1; v < this.cmdqv.geometry.vintfs; v++) {
      if (!this.users.has(v)) {
        index = v;
        break;
      }
    }
    if (index < 0) return err("ENOSPC", "no more available VINTF");
    const viommu = CmdqvViommu.create(this, vsmmu, index, data);
    if (!viommu.ok) return fail(viommu);
    this.users.set(index, viommu.value);
    return ok(viommu.value);
  }

  // ---- helpers the user VINTFs share (Linux's static functions) ----

  /** Releases a user VINTF's index once its vIOMMU is gone. */
  releaseVintf(index: number): void {
    this.users.delete(index);
  }

  /** Bytes of the largest queue: 2^(IDR1.CMDQS + 4). */
  get maxQueueBytes(): number {
    const cmdqs = decodeLayout(idr1Layout, Uint32Array.of(this.smmu.config.idr[1] ?? 0)).CMDQS;
    return 2 ** (cmdqs + CMDQ_ENT_SZ_SHIFT);
  }

  /** `tegra241_vintf_hw_init`: reset, then CONFIG = VMID | HYP_OWN, then EN. HYP_OWN reads back as the hardware keeps it. */
  vintfHwInit(v: number, vmid: number, hypOwn: boolean): void {
    this.vintfHwDeinit(v);
    const config = encodeReg32(vintfConfigLayout, { VINTF_VMID: vmid & 0xffff, VINTF_HYP_OWN: hypOwn ? 1 : 0 });
    this.cmdqv.write32(vintfBase(v) + VintfReg.CONFIG, config);
    this.cmdqv.write32(vintfBase(v) + VintfReg.CONFIG, config | 1);
  }

  /** `tegra241_vintf_hw_deinit`: logical queues deinitialised and unmapped in descending order, disable, SID slots cleared. */
  vintfHwDeinit(v: number): void {
    const cmdqv = this.cmdqv;
    const vintf = cmdqv.vintfs[v]!;
    for (let l = vintf.lvcmdqs.length - 1; l >= 0; l--) {
      const q = vintf.lvcmdqs[l];
      if (q === undefined) continue;
      this.vcmdqHwDeinit(v, l);
      this.unmapLvcmdq(q.index);
    }
    cmdqv.write32(vintfBase(v) + VintfReg.CONFIG, 0);
    for (let s = 0; s < vintf.sidMatch.length; s++) {
      cmdqv.write32(vintfSidMatchOffset(v, s), 0);
      cmdqv.write32(vintfSidReplaceOffset(v, s), 0);
    }
  }

  /**
   * `tegra241_vcmdq_hw_deinit` of logical queue `l` of VINTF `v`: disable, flush a pending ATC_INV timeout with a
   * CMD_SYNC on the SMMU's own queue (so it is not reported to the queue's next owner), clear PROD, CONS and the
   * base registers, and acknowledge an error left behind.
   */
  vcmdqHwDeinit(v: number, l: number): void {
    const cmdqv = this.cmdqv;
    const page0 = lvcmdqPage0(v, l);
    const page1 = lvcmdqPage1(v, l);
    cmdqv.write32(page0 + VcmdqPage0Reg.CONFIG, 0);
    this.smmu.executeCommand(CMD_SYNC_NONE);
    cmdqv.write32(page0 + VcmdqPage0Reg.PROD_INDX, 0);
    cmdqv.write32(page0 + VcmdqPage0Reg.CONS_INDX, 0);
    cmdqv.mmio.write(page1 + VcmdqPage1Reg.BASE, 8, 0n);
    cmdqv.mmio.write(page1 + VcmdqPage1Reg.CONS_INDX_BASE, 8, 0n);
    const gerror = cmdqv.read32(page0 + VcmdqPage0Reg.GERROR);
    if (gerror !== cmdqv.read32(page0 + VcmdqPage0Reg.GERRORN)) cmdqv.write32(page0 + VcmdqPage0Reg.GERRORN, gerror);
  }

  /** `tegra241_vcmdq_map_lvcmdq`: sets ALLOCATED on the pre-assigned CMDQ_ALLOC of global VCMDQ q. */
  mapLvcmdq(q: number): void {
    this.cmdqv.write32(cmdqAllocOffset(q), this.cmdqv.read32(cmdqAllocOffset(q)) | 1);
  }

  /** `tegra241_vcmdq_unmap_lvcmdq`. */
  unmapLvcmdq(q: number): void {
    this.cmdqv.write32(cmdqAllocOffset(q), this.cmdqv.read32(cmdqAllocOffset(q)) & ~1);
  }

  // ---- the error interrupt ----

  /**
   * `tegra241_cmdqv_isr`: VINTF_ERR_MAP names the VINTFs with a stopped queue. VINTF0's would be the host's own
   * (never in error here: its queues are idle); a user VINTF's LVCMDQ_ERR_MAP (two 64-bit words) goes unchanged to
   * its vIOMMU as a TEGRA241_CMDQV vEVENT. The guest learns which of its queues stopped, and only of its own.
   */
  private isr(): void {
    const cmdqv = this.cmdqv;
    for (let word = 0; word < 2; word++) {
      let map = cmdqv.read32(CmdqvReg.VINTF_ERR_MAP + 4 * word);
      while (map !== 0) {
        const bit = 31 - Math.clz32(map & -map);
        map = (map & ~(1 << bit)) >>> 0;
        const v = word * 32 + bit;
        const user = this.users.get(v);
        if (user === undefined) continue;
        const lo = cmdqv.mmio.read(vintfLvcmdqErrMap64Offset(v, 0), 8);
        const hi = cmdqv.mmio.read(vintfLvcmdqErrMap64Offset(v, 1), 8);
        const reported = user.core.reportEvent(IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV, encodeVeventTegra241Cmdqv({ lvcmdq_err_map: [lo, hi] }));
        if (!reported.ok) this.droppedEvents++;
      }
    }
  }
}
