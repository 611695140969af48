import { fail, ok, VendorPlugin, type DependencyContainer, type EmulatedIommu, type GuestContext, type HostServices, type Result, type VmmDeviceOptions } from "@viommu/core";
import { vtdDebugfs } from "./format/debugfs.js";
import { decodeDmarFields } from "./format/dmar-fields.js";
import { vtdStructures } from "./format/structures.js";
import { IOMMU_HW_INFO_TYPE_INTEL_VTD, IOMMU_HWPT_DATA_VTD_S1, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 } from "./format/uapi.js";
import { VtdGuestDriver } from "./guest/vtd-driver.js";
import { VtdUnit } from "./hw/vtd-unit.js";
import { createVtdBenchFigures } from "./bench.js";
import { buildVtdDmar } from "./vmm/dmar-table.js";
import { EMULATED_HAW } from "./vmm/emulated-capabilities.js";
import { vtdProperties } from "./vmm/device-properties.js";
import { VTD_DEFAULT_MMIO_BASE, VtdDevice } from "./vmm/vtd-device.js";
import { vtdWalkTool } from "./vmm/walk-tool.js";

/**
 * The Intel VT-d plugin: the physical unit (nesting with the guest's first-level table over a shared
 * second-level parent, VTD_S1 invalidation, attachments per PASID, second-level dirty tracking, page requests to
 * a fault queue, posted interrupts), the emulated unit a VMM gives its guest (registers, queued invalidation,
 * fault recording, interrupt remapping, the page request queue, DMAR, save/restore; nested, shadow and IR-only
 * modes; host PASID attachments, page requests relayed from the host, posted device interrupts) and the reference
 * guest driver (legacy and scalable mode, PASIDs, processes bound for SVA, page request handling), wired here and
 * nowhere else.
 */
export const vtdPlugin: VendorPlugin = {
  id: "vtd",
  displayName: "Intel VT-d",
  capabilities: {
    nested: true,
    shadow: true,
    pasid: true,
    interruptRemapping: true,
    irOnly: true,
    vqueue: false,
    confidentialShared: false,
    migration: true,
    commandQueue: true,
    eventLog: true,
    eventLogRebase: false,
    directEventInterrupts: false,
    acpi: true,
    audit: true,
    auditClasses: ["iotlb", "context", "interrupt"],
    dirtyTracking: true,
    sva: true,
    pageRequests: true,
    postedInterrupts: true,
    privateMemoryProtection: false,
    pageShifts: [12, 21, 30],
    inputBits: 48,
    outputBits: EMULATED_HAW,
    reasons: {
      vqueue: "VT-d has no vIOMMU object or guest-owned queue in mainline iommufd: every invalidation descriptor traps to the VMM",
      confidentialShared: "VT-d has no SEV-SNP-style shared-structure mode (TDX Connect is not modelled)",
      eventLogRebase: "VT-d reports faults in fault-recording registers (CAP.FRO/NFR, FSTS.PFO), not a log in guest memory: a driver cannot rebase or size them",
      directEventInterrupts: "VT-d fault events come from emulated registers: the VMM always injects them",
      privateMemoryProtection: "VT-d models no TDX Connect: the host does not check page ownership on DMA",
    },
  },
  types: {
    hwInfo: IOMMU_HW_INFO_TYPE_INTEL_VTD,
    hwptData: IOMMU_HWPT_DATA_VTD_S1,
    invalidateData: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
  },
  structures: vtdStructures,
  walk: vtdWalkTool,
  acpi: {
    signature: "DMAR",
    generate: (): Uint8Array => buildVtdDmar({ hostAddressWidth: EMULATED_HAW, registerBase: VTD_DEFAULT_MMIO_BASE, includePciAll: true, endpoints: [], interruptRemapping: true }),
    decode: decodeDmarFields,
  },
  properties: vtdProperties,
  debugfs: vtdDebugfs,
  bench: createVtdBenchFigures(() => vtdPlugin),

  register(container: DependencyContainer): void {
    container.register(VendorPlugin, { useValue: vtdPlugin });
  },

  createUnit(host: HostServices, index: number): VtdUnit {
    return new VtdUnit(host, index);
  },

  createDevice(options: VmmDeviceOptions): Result<EmulatedIommu> {
    const device = VtdDevice.create(options);
    return device.ok ? ok(device.value) : fail(device);
  },

  /**
   * A nesting VMM can only nest first-level tables, so its guest boots in scalable mode (as QEMU's `x-flts=on`
   * expects `intel_iommu=sm_on`); otherwise the driver uses legacy mode unless `init` asks for scalable.
   */
  createDriver(context: GuestContext, device: EmulatedIommu): VtdGuestDriver {
    return new VtdGuestDriver(context, { variant: device.mode === "nested" ? "scalable" : "legacy" });
  },
};

/** The registration function for this plugin (no import-time side effects). */
export function registerVtd(container: DependencyContainer): void {
  vtdPlugin.register(container);
}

export default vtdPlugin;
