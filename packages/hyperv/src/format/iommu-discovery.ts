import { defineLayout } from "@viommu/core";
import { bits, defineByteLayout, u16, u32, u64, u8 } from "./byte-layout.js";

/**
 * pvIOMMU discovery hypercalls (spec arm-hyperv-virtio.md §5.4; iommufd.md §8.4). PROVISIONAL: from the
 * unmerged "Hyper-V guest pvIOMMU" series (see device-domain.ts).
 */

/** HVCALL_GET_IOMMU_CAPABILITIES (0x125) input: 16 bytes. */
export const getIommuCapabilitiesInputLayout = defineByteLayout("hv_input_get_iommu_capabilities", 16, [
  { name: "partition_id", offset: 0, codec: u64 },
  { name: "reserved", offset: 8, codec: u64, reserved: true },
] as const);

/** HV_IOMMU_CAP_* bits of iommu_cap. */
export const iommuCapLayout = defineLayout("HV_IOMMU_CAP", 64, [
  { name: "PRESENT", bit: 0, width: 1 },
  { name: "S2", bit: 1, width: 1 },
  { name: "S1", bit: 2, width: 1 },
  { name: "S1_5LVL", bit: 3, width: 1 },
  { name: "PASID", bit: 4, width: 1 },
  { name: "ATS", bit: 5, width: 1 },
  { name: "PRI", bit: 6, width: 1 },
] as const);

/**
 * HVCALL_GET_IOMMU_CAPABILITIES output: 24 bytes. pgsize_bitmap has bit n set for each supported page size 2^n
 * (the guest driver requires its base page size and uses only 4K/2M/1G). The guest allocates domain ids from
 * HV_DEVICE_DOMAIN_ID_FIRST..LAST; the output carries no id range.
 */
export const getIommuCapabilitiesOutputLayout = defineByteLayout("hv_output_get_iommu_capabilities", 24, [
  { name: "size", offset: 0, codec: u32 },
  { name: "reserved", offset: 4, codec: u16, reserved: true },
  { name: "max_iova_width", offset: 6, codec: u8 },
  { name: "max_pasid_width", offset: 7, codec: u8 },
  { name: "iommu_cap", offset: 8, codec: bits(iommuCapLayout, 8) },
  { name: "pgsize_bitmap", offset: 16, codec: u64 },
] as const);

/** Page sizes the guest driver uses (x86 4 KiB, 2 MiB, 1 GiB), as a pgsize_bitmap. */
export const HV_IOMMU_PGSIZES_X86 = (1n << 12n) | (1n << 21n) | (1n << 30n);

/** enum hv_logical_device_property_code. */
export const HV_LOGICAL_DEVICE_PROPERTY_PVIOMMU = 10;

/** HVCALL_GET_LOGICAL_DEVICE_PROPERTY (0x127) input: 24 bytes. */
export const getLogicalDevicePropertyInputLayout = defineByteLayout("hv_input_get_logical_device_property", 24, [
  { name: "partition_id", offset: 0, codec: u64 },
  { name: "logical_device_id", offset: 8, codec: u64 },
  { name: "code", offset: 16, codec: u32 },
  { name: "reserved", offset: 20, codec: u32, reserved: true },
] as const);

/** device_iommu: HV_DEVICE_IOMMU_ENABLED (bit 0) = the device is behind the pvIOMMU. */
export const deviceIommuLayout = defineLayout("device_iommu", 64, [{ name: "HV_DEVICE_IOMMU_ENABLED", bit: 0, width: 1 }] as const);

/** HVCALL_GET_LOGICAL_DEVICE_PROPERTY output for HV_LOGICAL_DEVICE_PROPERTY_PVIOMMU: 16 bytes. */
export const getLogicalDevicePropertyOutputLayout = defineByteLayout("hv_output_get_logical_device_property", 16, [
  { name: "device_iommu", offset: 0, codec: bits(deviceIommuLayout, 8) },
  { name: "reserved", offset: 8, codec: u64, reserved: true },
] as const);
