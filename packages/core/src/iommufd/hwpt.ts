import type { NestedDomain, PagingDomain } from "../contract/iommu-unit.js";
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
    readonly fault: FaultQueue | undefined,
  ) {
    super();
    hold(ioas);
    if (fault) hold(fault);
    ioas.domains.add(domain);
  }

  get nestParent(): boolean {
    return this.domain.nestParent;
  }

  release(): void {
    this.ioas.domains.delete(this.domain);
    for (const area of this.ioas.areas) this.domain.unmap(area.iova, area.length);
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
    readonly fault: FaultQueue | undefined,
  ) {
    super();
    hold(on);
    if (fault) hold(fault);
  }

  release(): void {
    this.domain.destroy();
    drop(this.on);
    if (this.fault) drop(this.fault);
  }
}

export type Hwpt = HwptPaging | HwptNested;
