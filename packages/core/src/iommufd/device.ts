import type { PhysicalDevice } from "../contract/iommu-unit.js";
import { IommufdObject } from "./object-table.js";
import type { Hwpt } from "./hwpt.js";
import { IommufdObjectType } from "./uapi.js";
import type { Vdevice } from "./vdevice.js";

/**
 * A device bound to the context (VFIO's cdev bind, "idev"). The binding holds an extra reference, so
 * IOMMU_DESTROY on a device id always answers EBUSY; only unbinding removes it.
 */
export class BoundDevice extends IommufdObject {
  readonly type = IommufdObjectType.DEVICE;
  vdevice: Vdevice | undefined;
  /** Attachments by PASID (NO_PASID for the device's RID attachment). */
  readonly attachments = new Map<number, Hwpt>();
  dying = false;

  constructor(readonly device: PhysicalDevice) {
    super();
    this.users = 2;
  }

  release(): void {
    this.attachments.clear();
  }
}
