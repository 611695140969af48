import type { Result } from "../errors/errno.js";
import type { MmioHandler } from "../platform/mmio.js";
import type { InvalidateOutcome, NestedDomain, PagingDomain, PhysicalDevice, PhysicalIommu } from "./iommu-unit.js";
import type { UserData, UserDataArray } from "./user-data.js";

/** What a driver sees of a vIOMMU object the core owns (Linux `struct iommufd_viommu` plus its helpers). */
export interface ViommuCore {
  readonly id: number;
  /** The vIOMMU type (a vendor's `IOMMU_VIOMMU_TYPE_*`). */
  readonly viommuType: number;
  readonly unit: PhysicalIommu;
  /** The nesting parent (stage 2) this vIOMMU holds. */
  readonly parent: PagingDomain;
  /** The VM whose memory the parent maps. */
  readonly owner: number;
  /** The device a virtual id maps to on this vIOMMU (Linux `iommufd_viommu_find_dev`). */
  findDevice(virtId: number): PhysicalDevice | undefined;
  /** The virtual id of a device on this vIOMMU (Linux `iommufd_viommu_get_vdev_id`). */
  virtIdOf(device: PhysicalDevice): number | undefined;
  /**
   * Queues a vEVENT of `type` (Linux `iommufd_viommu_report_event`). EOPNOTSUPP when no vEVENTQ of that type
   * exists (the event is dropped; the caller logs it).
   */
  reportEvent(type: number, payload: Uint8Array): Result<void>;
  /**
   * Registers an MMIO region (page-aligned physical base and length) the VMM may mmap; returns its byte
   * offset (never 0). EINVAL when unaligned.
   */
  allocMmap(physicalBase: number, length: number, region: MmioRegion): Result<number>;
  destroyMmap(offset: number): void;
}

/** What a driver sees of a vDEVICE (Linux `struct iommufd_vdevice`). */
export interface VdeviceCore {
  readonly id: number;
  readonly viommu: ViommuCore;
  readonly device: PhysicalDevice;
  readonly virtId: number;
  /** Optional driver callback, run when the vDEVICE is destroyed (set it in `vdeviceInit`). */
  destroy?: () => void;
}

/** What a driver sees of a HW queue (Linux `struct iommufd_hw_queue`). */
export interface HwQueueCore {
  readonly id: number;
  readonly viommu: ViommuCore;
  /** The queue type (a vendor's `IOMMU_HW_QUEUE_TYPE_*`). */
  readonly queueType: number;
  readonly index: number;
  /** The queue's guest physical address (IOVA in the parent's IOAS). */
  readonly baseIova: number;
  readonly length: number;
  /** Optional driver callback, run first when the queue is destroyed. */
  destroy?: () => void;
  /**
   * Declares that this queue depends on `other` (same type, not itself): `other` then answers EBUSY to
   * DESTROY until this queue is gone (Linux `iommufd_hw_queue_depend`).
   */
  dependOn(other: HwQueueCore): Result<void>;
  /** A sibling queue of the same type by index, if allocated. */
  sibling(index: number): HwQueueCore | undefined;
}

/** A page of MMIO a vIOMMU exposes for mmap (a VINTF page, a VF control page): a register block. */
export type MmioRegion = MmioHandler;

/**
 * A vIOMMU driver's operations (Linux `struct iommufd_viommu_ops`). The core allocates and frees the
 * vIOMMU object; the driver fills in and releases only its own part.
 */
export interface ViommuOps {
  /** Optional. Releases the driver's resources; the core frees the object afterwards. Called on destroy and after a failed allocation. */
  destroy?(): void;

  /**
   * Optional. Builds a nested domain from `data` (the vendor's HWPT data type) on this vIOMMU. `flags` other
   * than the ones the driver supports: EOPNOTSUPP. Absent: HWPT_ALLOC on this vIOMMU answers EOPNOTSUPP.
   */
  allocDomainNested?(device: PhysicalDevice, flags: number, data: UserData): Result<NestedDomain>;

  /**
   * Optional. Processes an array of vendor invalidation entries, stopping at the first bad one; `handled`
   * counts the entries fully handled before it (the core copies it back on success and on failure).
   * Absent: IOMMU_HWPT_INVALIDATE on this vIOMMU answers EOPNOTSUPP.
   */
  cacheInvalidate?(array: UserDataArray): InvalidateOutcome;

  /** Optional. Notional vDEVICE size; nonzero requires `vdeviceInit`. Absent: no driver part in vDEVICEs. */
  readonly vdeviceSize?: number;

  /**
   * Optional. Programs the virtual → physical id translation in hardware (SID_MATCH/REPLACE, a DeviceID map).
   * May set `vdevice.destroy`. Absent: vDEVICEs are bookkeeping only.
   */
  vdeviceInit?(vdevice: VdeviceCore): Result<void>;

  /** Optional. Notional size of a HW queue of `type`, 0 when unsupported. Absent: HW_QUEUE_ALLOC answers EOPNOTSUPP. */
  getHwQueueSize?(type: number): number;

  /**
   * Optional, required with `getHwQueueSize`. Initialises queue `index` whose memory is physically contiguous
   * from `basePa`. May set `queue.destroy` and declare dependencies.
   */
  hwQueueInitPhys?(queue: HwQueueCore, index: number, basePa: number): Result<void>;
}
