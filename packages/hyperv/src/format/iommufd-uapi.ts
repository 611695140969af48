import { defineLayout } from "@viommu/core";
import { bits, defineByteLayout, padding, u32, u64 } from "./byte-layout.js";

/**
 * The iommufd payloads between this package's VMM half (the hypercall dispatcher) and its host half (the
 * physical unit). MODEL-DEFINED: Linux has no iommufd vIOMMU type for Hyper-V (the Microsoft hypervisor is not
 * Linux, and a Linux guest's pvIOMMU driver talks hypercalls, not iommufd). The model still routes the
 * hypervisor's work through iommufd objects so that its host half is driven the way every vendor's is: a
 * device domain with a guest stage 1 is a nested HWPT on a vIOMMU, a flush is a vIOMMU invalidation. The type
 * values are the model's own; the structures follow the shape of Linux's vendor payloads (fixed little-endian
 * members, reserved members zero).
 */

/** vIOMMU type of the Hyper-V pvIOMMU (model-defined). */
export const IOMMU_VIOMMU_TYPE_HYPERV = 0x4876;
/** hw_info type: the data is the unit's `hv_output_get_iommu_capabilities` (model-defined). */
export const IOMMU_HW_INFO_TYPE_HYPERV = 0x4876;
/** Nested HWPT data type: one device domain's stage-1 configuration (model-defined). */
export const IOMMU_HWPT_DATA_HYPERV_S1 = 0x4876;
/** vIOMMU invalidation data type: one device-domain flush (model-defined). */
export const IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV = 0x4876;

/** iommu_hwpt_hyperv_s1.flags: FIVE_LEVEL (bit 0) = the stage-1 root is a 5-level table. */
export const hwptHypervS1FlagsLayout = defineLayout("iommu_hwpt_hyperv_s1.flags", 32, [{ name: "FIVE_LEVEL", bit: 0, width: 1 }] as const);

/**
 * struct iommu_hwpt_hyperv_s1 (16 bytes): the settings HVCALL_CONFIGURE_DEVICE_DOMAIN gave a paging device
 * domain. The domain id tags the domain's IOTLB entries within the vIOMMU's VMID.
 */
export const hwptHypervS1Layout = defineByteLayout("iommu_hwpt_hyperv_s1", 16, [
  { name: "domain_id", offset: 0, codec: u32 },
  { name: "flags", offset: 4, codec: bits(hwptHypervS1FlagsLayout, 4) },
  /** Guest physical address of the x86-64 stage-1 root table (4 KiB aligned). */
  { name: "s1_root", offset: 8, codec: u64 },
] as const);

/** iommu_viommu_invalidate_hyperv.flags: ALL (bit 0) = the whole domain (FLUSH_DEVICE_DOMAIN). */
export const viommuInvalidateHypervFlagsLayout = defineLayout("iommu_viommu_invalidate_hyperv.flags", 32, [{ name: "ALL", bit: 0, width: 1 }] as const);

/**
 * struct iommu_viommu_invalidate_hyperv (24 bytes): one flush of one device domain: everything (ALL), or the
 * naturally aligned 2^page_mask_shift 4 KiB pages from page_number (one hv_iommu_flush_va entry).
 */
export const viommuInvalidateHypervLayout = defineByteLayout("iommu_viommu_invalidate_hyperv", 24, [
  { name: "domain_id", offset: 0, codec: u32 },
  { name: "flags", offset: 4, codec: bits(viommuInvalidateHypervFlagsLayout, 4) },
  { name: "page_number", offset: 8, codec: u64 },
  { name: "page_mask_shift", offset: 16, codec: u32 },
  { name: "reserved", offset: 20, codec: padding(4), reserved: true },
] as const);
