import type { Result } from "../errors/errno.js";
import type { InterruptResult, MsiMessage } from "../irq/interrupts.js";
import type { OwnerId } from "../memory/host-memory.js";
import type { PermBits } from "../translate/access.js";
import type { DirtyOps } from "../hw/dirty-tracking.js";
import type { HostPageTable } from "../translate/host-page-table.js";
import type { WalkResult } from "../translate/walk-result.js";
import type { UserData, UserDataArray } from "./user-data.js";
import type { ViommuCore, ViommuOps } from "./viommu-ops.js";

/** No PASID / substream: the request carries none. */
export const NO_PASID = -1;

/** A DMA as the physical IOMMU sees it on the bus. */
export interface DmaRequest {
  /** Physical requester id: PCI BDF / StreamID / DeviceID. */
  readonly requesterId: number;
  readonly pasid: number;
  readonly iova: number;
  /** Perm.Read or Perm.Write, optionally with Perm.Exec / Perm.User. */
  readonly access: PermBits;
  /**
   * The page request group index (PRGI) the device will use if this access needs a page request: a device with
   * PRI picks it; -1 (or absent) when the device cannot issue page requests, so every fault is final.
   */
  readonly prgi?: number;
  /**
   * The PASID TLP prefix's Privileged Mode Requested bit: a supervisor-mode request (meaningful only with a PASID;
   * a request without a PASID prefix is an untranslated user-mode request). Absent: false.
   */
  readonly privileged?: boolean;
}

/** A physical device behind a physical IOMMU unit (a PCI function, a platform device with a StreamID). */
export interface PhysicalDevice {
  readonly name: string;
  /** Its requester id on the physical IOMMU (BDF, StreamID, DeviceID). */
  readonly requesterId: number;
  readonly unit: PhysicalIommu;
  /** PASID width the device supports (0: none). */
  readonly pasidBits: number;
  /** Which VM its DMA belongs to; set when a VMM binds it (`HOST_OWNER` while unassigned). */
  owner: OwnerId;
  /** Optional. The device can issue PCIe page requests (PRI) and retry a DMA after the response. */
  readonly pri?: boolean;
  /**
   * Optional, with `pri`. The response to a page request group the device issued (PRG Response Message):
   * PageResponseCode SUCCESS, INVALID or FAILURE.
   */
  pageResponse?(pasid: number | undefined, groupId: number, code: number): void;
}

/** One page of a recoverable fault, as the unit reports it (the device's page request). */
export interface PageRequestPage {
  readonly address: number;
  /** PgfaultPerm bits: READ, WRITE, EXEC, PRIV. */
  readonly perm: number;
}

/**
 * Where a domain's recoverable faults go: set by the core on a domain whose HWPT was allocated with a fault
 * queue (FAULT_ID_VALID). A unit that raises a page request (PRI) or stalls a transaction reports the group
 * here; the response reaches the device through `PhysicalDevice.pageResponse`. Returns false when the device is
 * not one this domain's owner bound (the fault is then final).
 */
export interface IopfHandler {
  report(device: PhysicalDevice, pasid: number | undefined, groupId: number, pages: readonly PageRequestPage[]): boolean;
}

/** A reserved IOVA region of a device (`struct iommu_resv_region`). */
export interface ReservedRegion {
  readonly start: number;
  readonly length: number;
  /** IOMMU_RESV_MSI (hardware MSI window), IOMMU_RESV_SW_MSI, IOMMU_RESV_DIRECT, IOMMU_RESV_RESERVED. */
  readonly kind: "msi" | "sw-msi" | "direct" | "reserved";
}

/** What GET_HW_INFO returns for a device. */
export interface HwInfo {
  readonly type: number;
  readonly data: Uint8Array;
  readonly maxPasidLog2: number;
  readonly capabilities: number;
}

/**
 * A translation domain of a physical IOMMU unit. The unit that allocated it owns it; `destroy` is called
 * exactly once, by the core, when the HWPT holding it is destroyed.
 */
export interface IommuDomainBase {
  readonly unit: PhysicalIommu;
  destroy(): void;
  /**
   * Optional, with `releaseTag`. One more holder of the tag this domain's cached translations carry (its VMID
   * or domain id): the core calls it for every device it attaches to the domain and `releaseTag` when that
   * attachment ends, so the tag cannot name another domain while a device may still hit entries carrying it.
   * Absent on a nested domain: the core holds its parent's tag instead.
   */
  retainTag?(): void;
  releaseTag?(): void;
  /** Set by the core when the domain's HWPT has a fault queue: where the unit reports page requests. */
  iopf?: IopfHandler;
}

/** A paging domain (HWPT_PAGING): a host-owned table the IOAS mappings are written into. */
export interface PagingDomain extends IommuDomainBase {
  readonly kind: "paging";
  /** Usable as a stage-2 parent (allocated with the NEST_PARENT flag). */
  readonly nestParent: boolean;
  /** The VMID tagging this domain's translations (stage-2 domains). */
  readonly vmid: number;
  readonly table: HostPageTable;
  map(iova: number, hpa: number, length: number, perms: PermBits): Result<void>;
  /** Unmaps whole leaves in the range; returns the bytes unmapped. Invalidates the unit's caches for it. */
  unmap(iova: number, length: number): number;
  /**
   * Optional. Dirty tracking (Linux `iommu_dirty_ops`), on domains allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING
   * by a unit whose hardware sets dirty bits. Absent: IOMMU_HWPT_SET_DIRTY_TRACKING and GET_DIRTY_BITMAP
   * answer EOPNOTSUPP.
   */
  readonly dirtyOps?: DirtyOps;
}

/** A nested domain (HWPT_NESTED): a guest-owned stage 1 over a paging parent. */
export interface NestedDomain extends IommuDomainBase {
  readonly kind: "nested";
  readonly parent: PagingDomain;
  /**
   * Optional. The legacy nested-HWPT invalidation (`IOMMU_HWPT_INVALIDATE` on a HWPT_NESTED id). Absent:
   * the core answers EOPNOTSUPP. Reports how many entries it handled, even on failure.
   */
  cacheInvalidateUser?(array: UserDataArray): InvalidateOutcome;
}

export type IommuDomain = PagingDomain | NestedDomain;

/** The result of a batch invalidation: how many entries were fully handled, and the overall result. */
export interface InvalidateOutcome {
  readonly handled: number;
  readonly result: Result<void>;
}

/**
 * A physical IOMMU unit and its driver, as the core's iommufd model drives it: the part of Linux's
 * `struct iommu_ops` the vIOMMU flow uses, plus the hardware path that translates device DMA.
 */
export interface PhysicalIommu {
  /** Unique name of this unit on the host (e.g. "iommu0"). */
  readonly name: string;
  /** Vendor id of the plugin that drives it; domains of one vendor are never mixed with another's. */
  readonly vendor: string;

  /** Mandatory. GET_HW_INFO: `requestedType` undefined means the driver's native type; an unsupported type is EOPNOTSUPP. */
  hwInfo(device: PhysicalDevice, requestedType: number | undefined): Result<HwInfo>;

  /** Mandatory. A paging domain; `flags` are IOMMU_HWPT_ALLOC_* bits. Unsupported flags: EOPNOTSUPP. */
  domainAllocPaging(device: PhysicalDevice, flags: number, owner: OwnerId): Result<PagingDomain>;

  /**
   * Optional. Legacy nested allocation on a paging parent, without a vIOMMU object. Absent: HWPT_ALLOC
   * with a paging `pt_id` answers EOPNOTSUPP.
   */
  domainAllocNested?(device: PhysicalDevice, parent: PagingDomain, flags: number, data: UserData): Result<NestedDomain>;

  /**
   * Optional. Step one of vIOMMU creation (Linux `get_viommu_size`): a nonzero notional size when this unit
   * can host a vIOMMU of `type` for `device`, 0 when it cannot. Absent (or `viommuInit` absent): VIOMMU_ALLOC
   * answers EOPNOTSUPP. Must allocate nothing.
   */
  getViommuSize?(device: PhysicalDevice, type: number): number;

  /**
   * Optional, required with `getViommuSize`. Step two: initialise the vIOMMU the core has allocated, returning
   * its ops. `data` is undefined when the user passed none. On failure the core frees the object; nothing
   * the driver did may survive.
   */
  viommuInit?(viommu: ViommuCore, parent: PagingDomain, data: UserData | undefined): Result<ViommuOps>;

  /** Mandatory. Attaches a device (or one of its PASIDs) to a domain of this unit; replaces any previous attachment. */
  attachDevice(device: PhysicalDevice, domain: IommuDomain, pasid: number): Result<void>;

  /** Mandatory. Detaches: DMA of the device (PASID) is blocked afterwards. */
  detachDevice(device: PhysicalDevice, pasid: number): void;

  /** Mandatory. The hardware translation of one DMA. Allocates nothing; never throws for any table contents. */
  translate(request: DmaRequest, out: WalkResult): void;

  /**
   * Mandatory. A DMA faulted: record it the way the hardware does (event queue / fault registers), from
   * which the core's vEVENTQ or the host log receive it.
   */
  reportDmaFault(request: DmaRequest, result: WalkResult): void;

  /**
   * Optional. The device's reserved IOVA regions (Linux `iommu_get_resv_regions`: the MSI window, a software
   * MSI region, direct-mapped ranges). The core reserves them in the IOAS of every RID attachment, so they are
   * never mapped or allocated there and IOMMU_IOAS_IOVA_RANGES leaves them out. Absent: none.
   */
  reservedRegions?(device: PhysicalDevice): readonly ReservedRegion[];

  /** Optional. Physical interrupt remapping of a device MSI. Absent: MSIs are not remapped by the host. */
  remapInterrupt?(device: PhysicalDevice, msi: MsiMessage): InterruptResult;
}
