import { fail, ok, VendorPlugin, type DependencyContainer, type GuestContext, type HostServices, type VmmDeviceOptions } from "@viommu/core";
import { mockStructures } from "./format/structures.js";
import { MOCK_HW_INFO_TYPE, MOCK_HW_QUEUE_TYPE, MOCK_HWPT_DATA_TYPE, MOCK_INVALIDATE_DATA_TYPE, MOCK_VEVENTQ_TYPE, MOCK_VIOMMU_TYPE } from "./format/uapi.js";
import { MockGuestDriver } from "./guest/mock-driver.js";
import { MockUnit } from "./hw/mock-unit.js";
import { mockWalkTool } from "./tools/walk-tool.js";
import { MockDevice } from "./vmm/mock-device.js";

/**
 * The mock vendor's plugin: the whole contract, wired in one place. Copy this package to start a backend:
 * replace the formats, keep the rooms (format/, hw/, vmm/, guest/, tools/) and this file's shape.
 */
export const mockPlugin: VendorPlugin = {
  id: "mock",
  displayName: "Mock IOMMU (the template backend)",
  capabilities: {
    nested: true,
    shadow: true,
    pasid: false,
    interruptRemapping: true,
    irOnly: true,
    vqueue: true,
    confidentialShared: false,
    migration: true,
    commandQueue: true,
    eventLog: true,
    eventLogRebase: true,
    directEventInterrupts: false,
    acpi: false,
    dirtyTracking: true,
    audit: true,
    // The mock's caches: the IOTLB and the device entry (context) the host attachment is built from. Its IRTEs are
    // read at every remap, so there is no interrupt entry cache to go stale.
    auditClasses: ["iotlb", "context"],
    sva: false,
    pageRequests: false,
    postedInterrupts: false,
    privateMemoryProtection: false,
    pageShifts: [12, 21, 30],
    inputBits: 48,
    outputBits: 52,
    reasons: {
      pasid: "the mock format has no PASID tables",
      confidentialShared: "the mock models no confidential-guest mode",
      directEventInterrupts: "mock events always pass through the VMM's vEVENTQ",
      acpi: "the mock is found at a fixed MMIO address, not through firmware tables",
      sva: "the mock format has no PASID tables to bind a process to",
      pageRequests: "the mock's guest-visible device has no page request queue (its host unit raises page requests for the core's IOPF path only)",
      postedInterrupts: "the mock's interrupt remapping always goes through the host, which injects",
      privateMemoryProtection: "the mock models no confidential-guest mode",
    },
  },
  types: {
    viommu: MOCK_VIOMMU_TYPE,
    hwQueue: MOCK_HW_QUEUE_TYPE,
    veventq: MOCK_VEVENTQ_TYPE,
    hwInfo: MOCK_HW_INFO_TYPE,
    hwptData: MOCK_HWPT_DATA_TYPE,
    invalidateData: MOCK_INVALIDATE_DATA_TYPE,
  },
  structures: mockStructures,
  walk: mockWalkTool,

  register(container: DependencyContainer): void {
    container.register(VendorPlugin, { useValue: mockPlugin });
  },

  createUnit(host: HostServices, index: number): MockUnit {
    return new MockUnit(host, index);
  },

  createDevice(options: VmmDeviceOptions) {
    const device = MockDevice.create(options);
    return device.ok ? ok(device.value) : fail(device);
  },

  createDriver(context: GuestContext) {
    return new MockGuestDriver(context);
  },
};

/** The registration function for this plugin (one per plugin, no import-time side effects). */
export function registerMock(container: DependencyContainer): void {
  mockPlugin.register(container);
}

export default mockPlugin;
