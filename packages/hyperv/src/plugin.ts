import { fail, ok, VendorPlugin, type DependencyContainer, type EmulatedIommu, type GuestContext, type HostServices, type Result, type VmmDeviceOptions } from "@viommu/core";
import { hypervStructures } from "./format/structures.js";
import { IOMMU_HW_INFO_TYPE_HYPERV, IOMMU_HWPT_DATA_HYPERV_S1, IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV, IOMMU_VIOMMU_TYPE_HYPERV } from "./format/iommufd-uapi.js";
import { HypervGuestDriver } from "./guest/hyperv-driver.js";
import { HypervUnit } from "./hw/hyperv-unit.js";
import { createHypervBenchFigures } from "./tools/bench.js";
import { hypervWalkTool } from "./tools/walk-tool.js";
import { HypervDevice } from "./vmm/hyperv-device.js";

/**
 * The Hyper-V paravirtual IOMMU, wired in this one place: the physical unit whose domains are the guests' device
 * domains (hw/), the hypercall dispatcher of each VM's partition (vmm/), Linux's pvIOMMU and interrupt drivers
 * (guest/), and the bench figures. Hyper-V is a partial vendor: it has no register interface, no command queue,
 * no event log and no ACPI table, and says so below. `viommu walk` takes a device domain's stage-1 root and paging
 * mode as HVCALL_CONFIGURE_DEVICE_DOMAIN passed them (no register or firmware table of a memory image names them).
 * No QEMU device models the pvIOMMU, so it has no QEMU-named properties, and Linux has no debugfs for it
 * (drivers/iommu/hyperv/ registers none).
 */
export const hypervPlugin: VendorPlugin = {
  id: "hyperv",
  displayName: "Hyper-V paravirtual IOMMU (hypercalls)",
  capabilities: {
    nested: true,
    shadow: false,
    pasid: false,
    interruptRemapping: true,
    irOnly: true,
    vqueue: false,
    confidentialShared: false,
    migration: true,
    commandQueue: false,
    eventLog: false,
    eventLogRebase: false,
    directEventInterrupts: false,
    acpi: false,
    audit: true,
    // The guest invalidates only the IOTLB of a stage-1 domain (HVCALL_FLUSH_DEVICE_DOMAIN / _LIST); domain roots,
    // attachments and interrupt entries are hypercall arguments applied at once, never re-read from guest memory.
    auditClasses: ["iotlb"],
    dirtyTracking: false,
    sva: false,
    pageRequests: false,
    postedInterrupts: false,
    privateMemoryProtection: false,
    pageShifts: [12, 21, 30],
    inputBits: 48,
    outputBits: 52,
    reasons: {
      shadow:
        "the pvIOMMU always nests: the guest maps by writing its stage-1 table without a hypercall (no caching mode), so a VMM never sees new mappings to shadow",
      pasid: "the pvIOMMU series attaches whole devices (no PASID-granular domains); HV_IOMMU_CAP_PASID is not offered",
      vqueue: "no guest-owned queues: every flush is a hypercall",
      confidentialShared: "the model has no isolated (SNP/TDX) Hyper-V partitions",
      commandQueue: "Hyper-V has no register interface and no command queue: discovery and control are hypercalls (HVCALL_*)",
      eventLog: "Hyper-V gives the guest no fault log: DMA faults are recorded by the hypervisor only",
      eventLogRebase: "there is no event log to reprogram",
      directEventInterrupts: "there is no event log, hence no event interrupt",
      acpi: "no DMAR/IVRS: the guest finds the pvIOMMU with HVCALL_GET_IOMMU_CAPABILITIES",
      dirtyTracking: "Hyper-V does not live-migrate a partition with an assigned (DDA) device, and the pvIOMMU interface has no dirty-log hypercall",
      sva: "the pvIOMMU series attaches whole devices: no PASID to bind a process to (HV_IOMMU_CAP_PASID is not offered)",
      pageRequests: "the pvIOMMU offers the guest no page-request or fault interface: faults are the hypervisor's",
      postedInterrupts:
        "Hyper-V keeps device-interrupt delivery to itself: HVCALL_MAP_DEVICE_INTERRUPT and HVCALL_RETARGET_INTERRUPT give the hypervisor only a vector and a processor set (TLFS HV_DEVICE_INTERRUPT_TARGET) and it programs the physical remapping entry; the interface has no posted-interrupt descriptor and HVCALL_GET_IOMMU_CAPABILITIES no posting bit, so there is no remapped-or-posted choice for a VMM to make",
      privateMemoryProtection: "the model has no isolated (SNP/TDX) Hyper-V partitions",
    },
  },
  types: {
    viommu: IOMMU_VIOMMU_TYPE_HYPERV,
    hwInfo: IOMMU_HW_INFO_TYPE_HYPERV,
    hwptData: IOMMU_HWPT_DATA_HYPERV_S1,
    invalidateData: IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV,
  },
  structures: hypervStructures,
  walk: hypervWalkTool,
  bench: createHypervBenchFigures(() => hypervPlugin),
  demo: { vcpus: 300 },

  register(container: DependencyContainer): void {
    container.register(VendorPlugin, { useValue: hypervPlugin });
  },

  createUnit(host: HostServices, index: number): HypervUnit {
    return new HypervUnit(host, index);
  },

  createDevice(options: VmmDeviceOptions): Result<EmulatedIommu> {
    const device = HypervDevice.create(options);
    return device.ok ? ok(device.value) : fail(device);
  },

  createDriver(context: GuestContext): HypervGuestDriver {
    return HypervGuestDriver.forVm(context);
  },
};

/** The registration function for this plugin (no import-time side effects). */
export function registerHyperv(container: DependencyContainer): void {
  hypervPlugin.register(container);
}

export default hypervPlugin;
