import { WalkFault, type WalkResult } from "@viommu/core";
import { MockFaultReason } from "../format/event.js";

/** The mock's DMA fault reason for a failed walk. */
export function mockFaultReason(result: WalkResult, attached: boolean): number {
  if (!attached) return MockFaultReason.DEVICE_BLOCKED;
  if (result.stage === 2) return MockFaultReason.STAGE2;
  switch (result.fault) {
    case WalkFault.Permission:
      return MockFaultReason.PERMISSION;
    case WalkFault.Reserved:
      return MockFaultReason.RESERVED;
    case WalkFault.AddressSize:
      return MockFaultReason.ADDRESS_SIZE;
    default:
      return MockFaultReason.NOT_PRESENT;
  }
}
