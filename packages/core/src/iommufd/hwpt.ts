import type { IommuDomainBase, IopfHandler, NestedDomain, PagingDomain, PhysicalDevice } from "../contract/iommu-unit.js";
import type { FaultQueue } from "./fault-queue.js";
import type { Ioas } from "./ioas.js";
import { drop, hold, IommufdObject } from "./object-table.js";
import { IommufdObjectType } from "./uapi.js";
import type { Viommu } from "./viommu.js";

/** A paging HWPT: a paging domain mirroring an IOAS. */
export class HwptPaging extends IommufdObject {
  readonly type = IommufdObjectType.HWPT_PAGING;

  constructor(
    readonly ioas: Ioas,
    readonly domain: PagingDomain,
    /** Created implicitly by attaching a device to an IOAS: never a nest parent. */
    readonly autoDomain: boolean,
    public fault: FaultQueue | undefined,
    /** Allocated with IOMMU_HWPT_ALLOC_PASID: PASIDs may attach to it. */
    readonly pasidCompat: boolean,
  ) {
    super();
    hold(ioas);
    if (fault) hold(fault);
  }

  /** FAULT_ID_VALID: faults of this HWPT go to `fault` (held until the HWPT is destroyed). */
  attachFault(fault: FaultQueue, devIdOf: (device: PhysicalDevice) => number | undefined): void {
    hold(fault);
    this.fault = fault;
    (this.domain as IommuDomainBase).iopf = iopfHandler(fault, devIdOf);
  }

  get nestParent(): boolean {
    return this.domain.nestParent;
  }

  release(): void {
    if (this.ioas.domains.delete(this.domain)) for (const area of this.ioas.areas) this.domain.unmap(area.iova, area.length);
    this.ioas.unreserve(this);
    this.domain.destroy();
    drop(this.ioas);
    if (this.fault) drop(this.fault);
  }
}

/** A nested HWPT: a vendor stage 1 over a paging parent, allocated on the parent or on a vIOMMU. */
export class HwptNested extends IommufdObject {
  readonly type = IommufdObjectType.HWPT_NESTED;

  constructor(
    /** What it was allocated on: the parent HWPT (legacy) or the vIOMMU. */
    readonly on: HwptPaging | Viommu,
    readonly domain: NestedDomain,
    public fault: FaultQueue | undefined,
    /** Allocated with IOMMU_HWPT_ALLOC_PASID: PASIDs may attach to it. */
    readonly pasidCompat: boolean,
  ) {
    super();
    hold(on);
    if (fault) hold(fault);
  }

  /** FAULT_ID_VALID: faults of this HWPT go to `fault` (held until the HWPT is destroyed). */
  attachFault(fault: FaultQueue, devIdOf: (device: PhysicalDevice) => number | undefined): void {
    hold(fault);
    this.fault = fault;
    (this.domain as IommuDomainBase).iopf = iopfHandler(fault, devIdOf);
  }

  release(): void {
    this.domain.destroy();
    drop(this.on);
    if (this.fault) drop(this.fault);
  }
}

export type Hwpt = HwptPaging | HwptNested;

/** The paging HWPT whose IOAS a HWPT translates through (Linux `find_hwpt_paging`). */
export function hwptPagingOf(hwpt: Hwpt): HwptPaging | undefined {
  if (hwpt instanceof HwptPaging) return hwpt;
  return hwpt.on instanceof HwptPaging ? hwpt.on : hwpt.on.parentHwpt;
}

/**
 * A domain's page requests into its fault queue (iommufd_fault_iopf_handler): the group is delivered whole, and
 * its response (or the INVALID answered for it when the device detaches) goes back to the device.
 */
function iopfHandler(fault: FaultQueue, devIdOf: (device: PhysicalDevice) => number | undefined): IopfHandler {
  return {
    report(device, pasid, groupId, pages) {
      const devId = devIdOf(device);
      if (devId === undefined || pages.length === 0) return false;
      fault.report(
        pages.map((p) => ({ devId, pasid, groupId, perm: p.perm, address: p.address, length: 4096 })),
        (code) => device.pageResponse?.(pasid, groupId, code),
      );
      return true;
    },
  };
}
