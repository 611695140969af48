import { fail, ok, VendorPlugin, type Capabilities, type DependencyContainer, type EmulatedIommu, type GuestContext, type HostServices, type VmmDeviceOptions } from "@viommu/core";
import { amdViDebugfs } from "./format/debugfs.js";
import { amdViStructures } from "./format/structures.js";
import {
  IOMMU_HW_INFO_TYPE_AMD,
  IOMMU_HW_QUEUE_TYPE_AMD_CMD,
  IOMMU_HW_QUEUE_TYPE_AMD_EVT,
  IOMMU_HW_QUEUE_TYPE_AMD_PPR,
  IOMMU_HWPT_DATA_AMD_GUEST,
  IOMMU_VEVENTQ_TYPE_AMD,
  IOMMU_VEVENTQ_TYPE_AMD_CMD_INTERCEPT,
  IOMMU_VIOMMU_INVALIDATE_DATA_AMD,
  IOMMU_VIOMMU_TYPE_AMD,
} from "./format/iommufd-uapi.js";
import { V1_PAGE_SHIFTS } from "./format/page-table-v1.js";
import { vmPciConfigAccess } from "./guest/pci-config-access.js";
import { AmdViGuestDriver } from "./guest/amd-vi-driver.js";
import { AmdViUnit } from "./hw/amd-vi-unit.js";
import { amdViAcpiTool } from "./tools/acpi-tool.js";
import { createAmdViBenchFigures } from "./tools/bench.js";
import { amdViWalkTool } from "./tools/walk-tool.js";
import { AmdViDevice } from "./vmm/amd-vi-device.js";
import { amdViProperties } from "./vmm/device-properties.js";

/** How the plugin's VMM half runs a nested guest's command buffer by default. */
export interface AmdViPluginOptions {
  readonly commandBuffer?: "trapped" | "hw-vqueue";
  /** Offer 2048 interrupts per device (EFR2.NumIntRemapSup). */
  readonly twoKInterrupts?: boolean;
  /** PASID width the emulated IOMMU offers in nested mode (default 20; 16 for real Linux guests). */
  readonly pasidBits?: number;
}

/** What every configuration of this plugin lacks, and why. */
const absentReasons = {};

function capabilities(hwQueues: boolean): Capabilities {
  return {
    nested: true,
    shadow: true,
    pasid: true,
    interruptRemapping: true,
    irOnly: true,
    vqueue: hwQueues,
    confidentialShared: true,
    migration: true,
    commandQueue: true,
    eventLog: true,
    eventLogRebase: true,
    directEventInterrupts: hwQueues,
    acpi: true,
    // The IOTLB (INVALIDATE_IOMMU_PAGES), the device table entry cache (INVALIDATE_DEVTAB_ENTRY, and the GCR3 entries
    // flushed with INVALIDATE_IOMMU_PAGES) and the interrupt remapping table cache (INVALIDATE_INTERRUPT_TABLE).
    audit: true,
    auditClasses: ["iotlb", "context", "interrupt"],
    dirtyTracking: true,
    sva: true,
    pageRequests: true,
    postedInterrupts: true,
    privateMemoryProtection: true,
    pageShifts: V1_PAGE_SHIFTS.filter((s) => s !== 39),
    inputBits: 64,
    outputBits: 52,
    reasons: hwQueues
      ? absentReasons
      : {
          ...absentReasons,
          vqueue: "this configuration runs the guest's command buffer in the VMM (trapped), not on the hardware vIOMMU",
          directEventInterrupts: "with a trapped command buffer the VMM logs events and injects their interrupts",
        },
  };
}

/**
 * The AMD-Vi plugin: the physical unit (hw/), the emulated IOMMU (vmm/), the reference Linux-like guest
 * driver (guest/), `viommu walk`, the IVRS for `viommu acpi`, and the bench figures, wired here only.
 * `commandBuffer: "trapped"` gives the configuration without the hardware vIOMMU (mainline's nested DTE path
 * with the VMM running the command buffer).
 */
export function createAmdViPlugin(options: AmdViPluginOptions = {}): VendorPlugin {
  const hwQueues = (options.commandBuffer ?? "hw-vqueue") === "hw-vqueue";
  const plugin: VendorPlugin = {
    id: "amd-vi",
    displayName: hwQueues ? "AMD-Vi (AMD I/O Virtualization Technology)" : "AMD-Vi, trapped command buffer",
    capabilities: capabilities(hwQueues),
    types: {
      hwInfo: IOMMU_HW_INFO_TYPE_AMD,
      hwptData: IOMMU_HWPT_DATA_AMD_GUEST,
      viommu: IOMMU_VIOMMU_TYPE_AMD,
      invalidateData: IOMMU_VIOMMU_INVALIDATE_DATA_AMD,
      veventq: IOMMU_VEVENTQ_TYPE_AMD,
      veventqCommandIntercept: IOMMU_VEVENTQ_TYPE_AMD_CMD_INTERCEPT,
      hwQueueCommand: IOMMU_HW_QUEUE_TYPE_AMD_CMD,
      hwQueueEvent: IOMMU_HW_QUEUE_TYPE_AMD_EVT,
      hwQueuePpr: IOMMU_HW_QUEUE_TYPE_AMD_PPR,
    },
    structures: amdViStructures,
    walk: amdViWalkTool,
    acpi: amdViAcpiTool,
    properties: amdViProperties,
    debugfs: amdViDebugfs,
    // A figure measuring the other command-buffer configuration runs on a plugin configured for it.
    bench: createAmdViBenchFigures((commandBuffer) => (commandBuffer === (hwQueues ? "hw-vqueue" : "trapped") ? plugin : createAmdViPlugin({ ...options, commandBuffer }))),

    register(container: DependencyContainer): void {
      container.register(VendorPlugin, { useValue: plugin });
    },

    createUnit(host: HostServices, index: number): AmdViUnit {
      return new AmdViUnit(host, index);
    },

    createDevice(deviceOptions: VmmDeviceOptions) {
      const device = AmdViDevice.create({
        commandBuffer: deviceOptions.eventInterrupts === "vmm" || !hwQueues ? "trapped" : "hw-vqueue",
        twoKInterrupts: options.twoKInterrupts ?? false,
        pasidBits: options.pasidBits,
        ...deviceOptions,
      });
      return device.ok ? ok(device.value) : fail(device);
    },

    createDriver(context: GuestContext, device: EmulatedIommu) {
      return new AmdViGuestDriver(context, vmPciConfigAccess(context.vm));
    },
  };
  return plugin;
}

export const amdViPlugin: VendorPlugin = createAmdViPlugin();

/** The registration function for this plugin (one per plugin, no import-time side effects). */
export function registerAmdVi(container: DependencyContainer): void {
  amdViPlugin.register(container);
}

export default amdViPlugin;
