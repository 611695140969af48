import {
  copyStructFromUser,
  copyStructToUser,
  err,
  fail,
  HOST_OWNER,
  ok,
  type HwQueueCore,
  type InvalidateOutcome,
  type NestedDomain,
  type PhysicalDevice,
  type Result,
  type UserData,
  type UserDataArray,
  type VdeviceCore,
  type ViommuCore,
  type ViommuOps,
} from "@viommu/core";
import { CMDQV_PAGE_SIZE, globalVcmdqIndex, lvcmdqPage1, VcmdqPage1Reg, vintfPage0, vintfSidMatchOffset, vintfSidReplaceOffset } from "../format/aperture.js";
import {
  encodeViommuTegra241Cmdqv,
  IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV,
  IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV,
  VIOMMU_TEGRA241_CMDQV_SIZE,
  VINTF_MMAP_LENGTH,
} from "../format/iommufd-uapi.js";
import type { Tegra241CmdqvDriver } from "./cmdqv-driver.js";
import type { BaseVsmmu } from "./smmu-parent.js";

/** Notional sizes of a vDEVICE (`struct tegra241_vintf_sid`) and a HW queue (`struct tegra241_vcmdq`). */
export const TEGRA241_VSID_SIZE = 64;
export const TEGRA241_VCMDQ_SIZE = 256;
/** VCMDQ_BASE.ADDR covers [47:5]. */
const VCMDQ_ADDR_LIMIT = 2 ** 48;
const VCMDQ_ADDR_ALIGN = 32;
const MIN_QUEUE_BYTES = 32;
const CMDQ_ENT_SZ_SHIFT = 4;

/** A logical VCMDQ a HW queue owns. */
interface UserLvcmdq {
  readonly core: HwQueueCore;
  /** Its global VCMDQ. */
  readonly q: number;
}

/**
 * A user VINTF: the ops of a vIOMMU of type TEGRA241_CMDQV (Linux `tegra241_cmdqv_viommu_ops`). Nested domains and
 * the trapped-queue invalidation are the base vSMMU's (`arm_vsmmu_alloc_domain_nested`,
 * `arm_vsmmu_cache_invalidate`); the VINTF adds vDEVICEs as SID_MATCH / SID_REPLACE slots, HW queues as logical
 * VCMDQs mapped into the VINTF, and its page 0 for the VMM to mmap into the guest.
 */
export class CmdqvViommu implements ViommuOps {
  readonly vdeviceSize = TEGRA241_VSID_SIZE;
  /** The mmap offset of the VINTF's page 0 on the iommufd. */
  readonly mmapOffset: number;
  private readonly queues: (UserLvcmdq | undefined)[];
  private readonly sidSlots: boolean[];

  private constructor(
    private readonly driver: Tegra241CmdqvDriver,
    readonly vsmmu: BaseVsmmu,
    /** The VINTF's index in the CMDQV (never 0, the host's). */
    readonly vintf: number,
    mmapOffset: number,
  ) {
    this.mmapOffset = mmapOffset;
    const g = driver.cmdqv.geometry;
    this.queues = new Array<UserLvcmdq | undefined>(g.lvcmdqsPerVintf).fill(undefined);
    this.sidSlots = new Array<boolean>(g.sidsPerVintf).fill(false);
  }

  get core(): ViommuCore {
    return this.vsmmu.core;
  }

  /** `tegra241_cmdqv_init_vintf_user` from the VINTF index on; unwinds everything on failure. */
  static create(driver: Tegra241CmdqvDriver, vsmmu: BaseVsmmu, vintf: number, data: UserData): Result<CmdqvViommu> {
    const copied = copyStructFromUser(data, IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV, VIOMMU_TEGRA241_CMDQV_SIZE, VIOMMU_TEGRA241_CMDQV_SIZE);
    if (!copied.ok) return fail(copied);
    const cmdqv = driver.cmdqv;
    cmdqv.vintfs[vintf]!.owner = vsmmu.core.owner;
    driver.vintfHwInit(vintf, vsmmu.vmid, false);
    const page0 = cmdqv.vintfs[vintf]!.page0;
    const offset = vsmmu.core.allocMmap(driver.hw.physicalBase + vintfPage0(vintf), CMDQV_PAGE_SIZE, page0);
    if (!offset.ok) {
      driver.vintfHwDeinit(vintf);
      return fail(offset);
    }
    const out = encodeViommuTegra241Cmdqv({ out_vintf_mmap_offset: BigInt(offset.value), out_vintf_mmap_length: VINTF_MMAP_LENGTH });
    const written = copyStructToUser(data, IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV, VIOMMU_TEGRA241_CMDQV_SIZE, VIOMMU_TEGRA241_CMDQV_SIZE, out);
    if (!written.ok) {
      vsmmu.core.destroyMmap(offset.value);
      driver.vintfHwDeinit(vintf);
      return fail(written);
    }
    return ok(new CmdqvViommu(driver, vsmmu, vintf, offset.value));
  }

  /** `tegra241_cmdqv_destroy_vintf_user`: the mmap entry, then the VINTF (disabled, slots cleared), then its index. */
  destroy(): void {
    this.core.destroyMmap(this.mmapOffset);
    this.driver.vintfHwDeinit(this.vintf);
    this.driver.cmdqv.vintfs[this.vintf]!.owner = HOST_OWNER;
    this.driver.releaseVintf(this.vintf);
  }

  allocDomainNested(device: PhysicalDevice, flags: number, data: UserData): Result<NestedDomain> {
    if (this.vsmmu.allocDomainNested === undefined) return err("EOPNOTSUPP", "the base vSMMU builds no nested domains");
    return this.vsmmu.allocDomainNested(device, flags, data);
  }

  /** Non-accelerated commands (whatever the guest sent through the trapped SMMU queue) still go through the host. */
  cacheInvalidate(array: UserDataArray): InvalidateOutcome {
    if (this.vsmmu.cacheInvalidate === undefined) return { handled: 0, result: err("EOPNOTSUPP", "the base vSMMU has no invalidation") };
    return this.vsmmu.cacheInvalidate(array);
  }

  /**
   * `tegra241_vintf_init_vsid`: a virt_id above U32_MAX is EINVAL; the first free SID slot gets SID_REPLACE = the
   * physical StreamID and SID_MATCH = (vSID << 1) | 1, written as Linux's 32-bit writel does (a vSID loses bit 31);
   * no free slot is ENOSPC. The base vSMMU learns the pair too, for the trapped path's ATC_INV / CFGI_CD.
   */
  vdeviceInit(vdevice: VdeviceCore): Result<void> {
    if (vdevice.virtId > 0xffff_ffff) return err("EINVAL", `virt_id ${vdevice.virtId} above U32_MAX`);
    const slot = this.sidSlots.indexOf(false);
    if (slot < 0) return err("ENOSPC", `all ${this.sidSlots.length} SID slots of VINTF${this.vintf} are in use`);
    const base = this.vsmmu.vdeviceInit(vdevice);
    if (!base.ok) return base;
    const baseDestroy = vdevice.destroy;
    const cmdqv = this.driver.cmdqv;
    this.sidSlots[slot] = true;
    cmdqv.write32(vintfSidReplaceOffset(this.vintf, slot), vdevice.device.requesterId >>> 0);
    cmdqv.write32(vintfSidMatchOffset(this.vintf, slot), (((vdevice.virtId * 2) % 2 ** 32) + 1) >>> 0);
    vdevice.destroy = () => {
      cmdqv.write32(vintfSidMatchOffset(this.vintf, slot), 0);
      cmdqv.write32(vintfSidReplaceOffset(this.vintf, slot), 0);
      this.sidSlots[slot] = false;
      baseDestroy?.();
    };
    return ok();
  }

  /** `tegra241_vintf_get_vcmdq_size`. */
  getHwQueueSize(type: number): number {
    return type === IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV ? TEGRA241_VCMDQ_SIZE : 0;
  }

  /**
   * `tegra241_vintf_alloc_lvcmdq_user`, in Linux's order: type other than TEGRA241_CMDQV EOPNOTSUPP; index beyond
   * the VINTF's logical queues EINVAL; that queue already allocated EEXIST; index − 1 not allocated EIO (ascending
   * order); length not a power of two, below 32 bytes or above 2^(IDR1.CMDQS + 4) EINVAL; base not aligned to the
   * length or beyond VCMDQ_ADDR EINVAL. Then the queue depends on index − 1 (so destruction must descend: EBUSY
   * otherwise), its global VCMDQ is mapped into the VINTF and BASE = PA | log2(entries) is written. The guest
   * enables it itself through page 0.
   */
  hwQueueInitPhys(queue: HwQueueCore, index: number, basePa: number): Result<void> {
    if (queue.queueType !== IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV) return err("EOPNOTSUPP", `HW queue type ${queue.queueType}`);
    if (!Number.isInteger(index) || index < 0 || index >= this.queues.length) return err("EINVAL", `LVCMDQ ${index} ≥ ${this.queues.length}`);
    if (this.queues[index] !== undefined) return err("EEXIST", `LVCMDQ ${index} already allocated`);
    const prev = index > 0 ? this.queues[index - 1] : undefined;
    if (index > 0 && prev === undefined) return err("EIO", `LVCMDQ ${index - 1} must be allocated first`);
    const length = queue.length;
    if (!Number.isInteger(Math.log2(length)) || length < MIN_QUEUE_BYTES || length > this.driver.maxQueueBytes) {
      return err("EINVAL", `queue length ${length} not a power of two in [${MIN_QUEUE_BYTES}, ${this.driver.maxQueueBytes}]`);
    }
    if (basePa % VCMDQ_ADDR_ALIGN !== 0 || basePa >= VCMDQ_ADDR_LIMIT || basePa % length !== 0) {
      return err("EINVAL", `queue base 0x${basePa.toString(16)} not aligned to its length or beyond 48 bits`);
    }
    if (prev !== undefined) {
      const dep = queue.dependOn(prev.core);
      if (!dep.ok) return dep;
    }
    const q = globalVcmdqIndex(this.vintf, index, this.queues.length);
    this.queues[index] = { core: queue, q };
    this.driver.mapLvcmdq(q);
    const log2size = Math.log2(length) - CMDQ_ENT_SZ_SHIFT;
    this.driver.cmdqv.mmio.write(lvcmdqPage1(this.vintf, index) + VcmdqPage1Reg.BASE, 8, BigInt(basePa) | BigInt(log2size));
    queue.destroy = () => this.destroyLvcmdq(index);
    return ok();
  }

  /** `tegra241_vintf_destroy_lvcmdq_user`: deinit, unmap, free the slot (the core drops the dependency). */
  private destroyLvcmdq(index: number): void {
    const lvcmdq = this.queues[index];
    if (lvcmdq === undefined) return;
    this.driver.vcmdqHwDeinit(this.vintf, index);
    this.driver.unmapLvcmdq(lvcmdq.q);
    this.queues[index] = undefined;
  }
}
