import { fail, ok, VendorPlugin, type DependencyContainer, type EmulatedIommu, type GuestContext, type GuestIommuDriver, type HostServices, type Result, type VmmDeviceOptions } from "@viommu/core";
import { createSmmuv3Unit, Smmuv3GuestDriver, smmuv3Plugin, Smmuv3Unit } from "@viommu/smmuv3";
import { tegra241Structures } from "./format/structures.js";
import { IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV, IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV, IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV } from "./format/iommufd-uapi.js";
import { Tegra241GuestDriver } from "./guest/tegra241-driver.js";
import { Tegra241CmdqvDriver } from "./hw/cmdqv-driver.js";
import { tegra241Acpi } from "./tools/acpi-tool.js";
import { createTegra241BenchFigures } from "./tools/bench.js";
import { Tegra241Device } from "./vmm/tegra241-device.js";

/** Whether a unit is an SMMUv3 this plugin extended (its units report the parent's vendor, "smmuv3"). */
function isTegraUnit(unit: unknown): boolean {
  return unit instanceof Smmuv3Unit && unit.extension instanceof Tegra241CmdqvDriver;
}

/**
 * NVIDIA Tegra241 CMDQV, an extension of the ARM SMMUv3 plugin (Linux's arm_smmu_impl_ops): its units are SMMUv3
 * units with the CMDQV driver as their extension, its VMM device and guest driver are SMMUv3's with the CMDQV
 * halves composed in. What it adds is the vQUEUE: guest-owned VCMDQs that the hardware consumes straight from
 * guest memory.
 */
export const tegra241CmdqvPlugin: VendorPlugin = {
  id: "tegra241-cmdqv",
  displayName: "NVIDIA Tegra241 CMDQV (SMMUv3 with guest-owned command queues)",
  extends: "smmuv3",
  capabilities: {
    ...smmuv3Plugin.capabilities,
    vqueue: true,
    reasons: Object.fromEntries(Object.entries(smmuv3Plugin.capabilities.reasons ?? {}).filter(([cap]) => cap !== "vqueue")),
  },
  types: {
    ...smmuv3Plugin.types,
    viommu: IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV,
    hwQueue: IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV,
    veventq: IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV,
    hwInfo: IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV,
  },
  structures: tegra241Structures,
  walk: smmuv3Plugin.walk,
  // The CMDQV's VMM device is SMMUv3's with the CMDQV composed in: the same QEMU properties reach it.
  properties: smmuv3Plugin.properties,
  acpi: tegra241Acpi,
  bench: createTegra241BenchFigures(() => tegra241CmdqvPlugin, () => [smmuv3Plugin]),

  register(container: DependencyContainer): void {
    container.register(VendorPlugin, { useValue: tegra241CmdqvPlugin });
  },

  /** An SMMUv3 unit with a CMDQV next to it. The core counts units by plugin id, so the index is recounted here. */
  createUnit(host: HostServices, index: number): Smmuv3Unit {
    const own = Math.max(index, host.units.filter(isTegraUnit).length);
    return createSmmuv3Unit(host, own, { extension: new Tegra241CmdqvDriver(host, own) });
  },

  createDevice(options: VmmDeviceOptions): Result<EmulatedIommu> {
    const device = Tegra241Device.create(options);
    return device.ok ? ok(device.value) : fail(device);
  },

  createDriver(context: GuestContext, _device: EmulatedIommu): GuestIommuDriver {
    return new Tegra241GuestDriver(context, new Smmuv3GuestDriver(context));
  },
};

/** The registration function for this plugin (one per plugin, no import-time side effects). */
export function registerTegra241Cmdqv(container: DependencyContainer): void {
  tegra241CmdqvPlugin.register(container);
}

export default tegra241CmdqvPlugin;
