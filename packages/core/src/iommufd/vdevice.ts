import type { PhysicalDevice } from "../contract/iommu-unit.js";
import type { VdeviceCore } from "../contract/viommu-ops.js";
import type { BoundDevice } from "./device.js";
import { drop, hold, IommufdObject } from "./object-table.js";
import { IommufdObjectType } from "./uapi.js";
import type { Viommu } from "./viommu.js";

/** A vDEVICE: the device's virtual id (vSID, vRID, vDeviceID) on a vIOMMU. */
export class Vdevice extends IommufdObject implements VdeviceCore {
  readonly type = IommufdObjectType.VDEVICE;
  destroy?: () => void;

  constructor(
    readonly viommu: Viommu,
    readonly idev: BoundDevice,
    readonly virtId: number,
  ) {
    super();
    hold(viommu);
  }

  get device(): PhysicalDevice {
    return this.idev.device;
  }

  release(): void {
    this.destroy?.();
    this.viommu.vdevs.delete(this.virtId);
    drop(this.viommu);
    this.idev.vdevice = undefined;
  }
}
