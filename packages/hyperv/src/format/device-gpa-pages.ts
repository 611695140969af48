import { defineLayout } from "@viommu/core";
import { bits, defineByteLayout, padding, struct, u64 } from "./byte-layout.js";
import { inputDeviceDomainLayout, inputVtlLayout } from "./device-domain.js";

/**
 * Stage-2 device-domain map/unmap rep hypercalls (spec arm-hyperv-virtio.md §5.4, series (b); iommufd.md §8.5).
 * PROVISIONAL: from the unmerged root / L1VH passthrough series (see device-domain.ts).
 */

/**
 * HV_MAP_GPA_* flags (Linux include/hyperv/hvhdk_mini.h). The passthrough series always sets READABLE and adds
 * WRITABLE for IOMMU_WRITE; it uses no other bit for device maps.
 */
export const mapGpaFlagsLayout = defineLayout("HV_MAP_GPA", 32, [
  { name: "READABLE", bit: 0, width: 1 },
  { name: "WRITABLE", bit: 1, width: 1 },
  { name: "KERNEL_EXECUTABLE", bit: 2, width: 1 },
  { name: "USER_EXECUTABLE", bit: 3, width: 1 },
  { name: "ADJUSTABLE", bit: 15, width: 1 },
  { name: "NO_ACCESS", bit: 16, width: 1 },
  { name: "NOT_CACHED", bit: 21, width: 1 },
  { name: "LARGE_PAGE", bit: 31, width: 1 },
] as const);

/** HVCALL_MAP_DEVICE_GPA_PAGES (0xB3, rep) fixed input: 40 bytes, then one 4 KiB GPA frame number per rep. */
export const mapDeviceGpaPagesInputLayout = defineByteLayout("hv_input_map_device_gpa_pages", 40, [
  { name: "device_domain", offset: 0, codec: struct(inputDeviceDomainLayout) },
  { name: "target_vtl", offset: 24, codec: bits(inputVtlLayout, 1) },
  { name: "padding", offset: 25, codec: padding(3), reserved: true },
  { name: "map_flags", offset: 28, codec: bits(mapGpaFlagsLayout, 4) },
  /** Device virtual address (IOVA) of rep 0; rep i maps target_device_va_base + 4096·i. */
  { name: "target_device_va_base", offset: 32, codec: u64 },
] as const);

export const gpaPageListElementLayout = defineByteLayout("gpa_page_list[]", 8, [{ name: "gpa_page_number", offset: 0, codec: u64 }] as const);

/** HVCALL_UNMAP_DEVICE_GPA_PAGES (0xB4, rep) input: 32 bytes; the rep count is the number of 4 KiB pages, no list. */
export const unmapDeviceGpaPagesInputLayout = defineByteLayout("hv_input_unmap_device_gpa_pages", 32, [
  { name: "device_domain", offset: 0, codec: struct(inputDeviceDomainLayout) },
  { name: "target_device_va_base", offset: 24, codec: u64 },
] as const);
