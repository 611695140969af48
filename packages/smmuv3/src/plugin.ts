import { fail, ok, VendorPlugin, type DependencyContainer, type EmulatedIommu, type GuestContext, type GuestIommuDriver, type HostServices, type Result, type VmmDeviceOptions } from "@viommu/core";
import { smmuv3Structures } from "./format/structures.js";
import {
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
} from "./format/uapi.js";
import { Smmuv3GuestDriver } from "./guest/smmuv3-driver.js";
import { createSmmuv3Unit, type Smmuv3Unit } from "./hw/smmuv3-unit.js";
import { smmuv3Acpi } from "./tools/acpi-tool.js";
import { createSmmuv3BenchFigures } from "./tools/bench.js";
import { smmuv3Walk } from "./tools/walk-tool.js";
import { Smmuv3Device } from "./vmm/smmuv3-device.js";
import { smmuv3Properties } from "./vmm/device-properties.js";

/**
 * The ARM SMMUv3 plugin: the physical unit (hw/), the emulated SMMU (vmm/), the reference Linux-like driver
 * (guest/), and the tools (`viommu walk`, `viommu acpi`, bench figures), wired in this one place.
 */
export const smmuv3Plugin: VendorPlugin = {
  id: "smmuv3",
  displayName: "ARM SMMUv3",
  capabilities: {
    nested: true,
    shadow: true,
    pasid: true,
    interruptRemapping: false,
    irOnly: false,
    vqueue: false,
    confidentialShared: false,
    migration: true,
    commandQueue: true,
    eventLog: true,
    eventLogRebase: true,
    directEventInterrupts: false,
    acpi: true,
    audit: true,
    // No "interrupt": SMMUv3 has no interrupt-remapping cache; MSIs are writes the GIC ITS translates (IHI0070 §3.18).
    auditClasses: ["iotlb", "context"],
    dirtyTracking: true,
    sva: true,
    pageRequests: true,
    postedInterrupts: false,
    privateMemoryProtection: false,
    pageShifts: [12, 14, 16, 21, 25, 29, 30],
    inputBits: 48,
    outputBits: 48,
    reasons: {
      interruptRemapping: "SMMUv3 has no interrupt remapping of its own: MSIs are writes to the GIC ITS, which does the remapping",
      irOnly: "without interrupt remapping in the SMMU there is no IR-only mode",
      vqueue: "a plain SMMUv3 has no guest-owned command queue; the Tegra241 CMDQV extension (packages/tegra241-cmdqv) adds one",
      confidentialShared: "SMMUv3 models no confidential-guest (Realm) handling of shared structures",
      directEventInterrupts: "events pass through the VMM's vEVENTQ and are injected by it; SMMUv3 cannot post them to a vCPU",
      postedInterrupts: "SMMUv3 does not deliver interrupts: posting MSIs to a vCPU is the GICv4 ITS's work, outside the SMMU",
      privateMemoryProtection: "SMMUv3 models no Realm Management Extension granule protection checks",
    },
  },
  types: {
    viommu: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
    veventq: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
    hwInfo: IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
    hwptData: IOMMU_HWPT_DATA_ARM_SMMUV3,
    invalidateData: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  },
  structures: smmuv3Structures,
  walk: smmuv3Walk,
  acpi: smmuv3Acpi,
  bench: createSmmuv3BenchFigures(() => smmuv3Plugin),
  properties: smmuv3Properties,
  // No `debugfs` importer: Linux's SMMUv3 driver (drivers/iommu/arm/arm-smmu-v3/: arm-smmu-v3.c, -iommufd.c, -sva.c,
  // tegra241-cmdqv.c) creates no debugfs files, so there are no STE/CD/table dumps to read back; `viommu walk` and
  // `viommu mappings` read the tables from a memory image instead.

  register(container: DependencyContainer): void {
    container.register(VendorPlugin, { useValue: smmuv3Plugin });
  },

  createUnit(host: HostServices, index: number): Smmuv3Unit {
    return createSmmuv3Unit(host, index);
  },

  createDevice(options: VmmDeviceOptions): Result<EmulatedIommu> {
    const device = Smmuv3Device.create(options);
    return device.ok ? ok(device.value) : fail(device);
  },

  createDriver(context: GuestContext, _device: EmulatedIommu): GuestIommuDriver {
    return new Smmuv3GuestDriver(context);
  },
};

/** The registration function for this plugin (one per plugin, no import-time side effects). */
export function registerSmmuV3(container: DependencyContainer): void {
  smmuv3Plugin.register(container);
}

export default smmuv3Plugin;
