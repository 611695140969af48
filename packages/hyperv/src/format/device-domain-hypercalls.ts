import { defineLayout } from "@viommu/core";
import { bits, defineByteLayout, struct, u32, u64 } from "./byte-layout.js";
import { inputDeviceDomainLayout } from "./device-domain.js";
import { deviceIdCodec } from "./device-id.js";

/**
 * Input pages of the device-domain hypercalls (spec arm-hyperv-virtio.md §5.4, iommufd.md §8.4–8.5). PROVISIONAL:
 * from the unmerged pvIOMMU patch series (see device-domain.ts); byte offsets are those of the packed C structures
 * in the series' hvhdk_mini.h.
 */

const deviceDomain = struct(inputDeviceDomainLayout);

/** union hv_create_device_domain_flags. Linux's pvIOMMU driver sets forward_progress_required = 1. */
export const createDeviceDomainFlagsLayout = defineLayout("hv_create_device_domain_flags", 32, [
  { name: "forward_progress_required", bit: 0, width: 1 },
  { name: "inherit_owning_vtl", bit: 1, width: 1 },
] as const);

/** HVCALL_CREATE_DEVICE_DOMAIN (0xB1) input: 28 bytes. */
export const createDeviceDomainInputLayout = defineByteLayout("hv_input_create_device_domain", 28, [
  { name: "device_domain", offset: 0, codec: deviceDomain },
  { name: "create_device_domain_flags", offset: 24, codec: bits(createDeviceDomainFlagsLayout, 4) },
] as const);

/** HVCALL_DELETE_DEVICE_DOMAIN (0xC5) input: 24 bytes. */
export const deleteDeviceDomainInputLayout = defineByteLayout("hv_input_delete_device_domain", 24, [
  { name: "device_domain", offset: 0, codec: deviceDomain },
] as const);

/** HVCALL_ATTACH_DEVICE_DOMAIN (0xB2) input: 32 bytes. */
export const attachDeviceDomainInputLayout = defineByteLayout("hv_input_attach_device_domain", 32, [
  { name: "device_domain", offset: 0, codec: deviceDomain },
  { name: "device_id", offset: 24, codec: deviceIdCodec },
] as const);

/** HVCALL_DETACH_DEVICE_DOMAIN (0xC4) input: 16 bytes; names no domain (a device is in at most one). */
export const detachDeviceDomainInputLayout = defineByteLayout("hv_input_detach_device_domain", 16, [
  { name: "partition_id", offset: 0, codec: u64 },
  { name: "device_id", offset: 8, codec: deviceIdCodec },
] as const);

/**
 * hv_device_domain_settings.flags: translation_enabled 0 (0 = DMA bypasses stage 1, an identity domain),
 * blocked 1 (a blocking domain keeps translation_enabled = 1), first_stage_paging_mode 2 (0 = 4-level,
 * 1 = 5-level x86-64 tables).
 */
export const deviceDomainSettingsFlagsLayout = defineLayout("hv_device_domain_settings.flags", 64, [
  { name: "translation_enabled", bit: 0, width: 1 },
  { name: "blocked", bit: 1, width: 1 },
  { name: "first_stage_paging_mode", bit: 2, width: 1 },
] as const);

export const deviceDomainSettingsLayout = defineByteLayout("hv_device_domain_settings", 16, [
  { name: "flags", offset: 0, codec: bits(deviceDomainSettingsFlagsLayout, 8) },
  /** Guest physical address of the x86-64 stage-1 root table (4 KiB aligned). */
  { name: "page_table_root", offset: 8, codec: u64 },
] as const);

/** HVCALL_CONFIGURE_DEVICE_DOMAIN (0xCE) input: 40 bytes. */
export const configureDeviceDomainInputLayout = defineByteLayout("hv_input_configure_device_domain", 40, [
  { name: "device_domain", offset: 0, codec: deviceDomain },
  { name: "settings", offset: 24, codec: struct(deviceDomainSettingsLayout) },
] as const);

/** HVCALL_FLUSH_DEVICE_DOMAIN (0xD0) input: 32 bytes; a domain-wide IOTLB flush (flags defines no bits yet). */
export const flushDeviceDomainInputLayout = defineByteLayout("hv_input_flush_device_domain", 32, [
  { name: "device_domain", offset: 0, codec: deviceDomain },
  { name: "flags", offset: 24, codec: u32 },
  { name: "reserved", offset: 28, codec: u32, reserved: true },
] as const);

/** hv_input_flush_device_domain_list flags: HV_FLUSH_DEVICE_DOMAIN_LIST_IOMMU_FORMAT (bit 0), which Linux sets. */
export const flushDeviceDomainListFlagsLayout = defineLayout("hv_input_flush_device_domain_list.flags", 32, [
  { name: "iommu_format", bit: 0, width: 1 },
] as const);

/** HVCALL_FLUSH_DEVICE_DOMAIN_LIST (0xD1, rep) fixed input: 32 bytes, then one iova_list entry per rep. */
export const flushDeviceDomainListInputLayout = defineByteLayout("hv_input_flush_device_domain_list", 32, [
  { name: "device_domain", offset: 0, codec: deviceDomain },
  { name: "flags", offset: 24, codec: bits(flushDeviceDomainListFlagsLayout, 4) },
  { name: "reserved", offset: 28, codec: u32, reserved: true },
] as const);

/**
 * union hv_iommu_flush_va: flushes the naturally aligned 2^page_mask_shift 4 KiB pages starting at page_number
 * (IOVA >> 12); page_mask_shift [11:0], page_number [63:12].
 */
export const iommuFlushVaLayout = defineLayout("hv_iommu_flush_va", 64, [
  { name: "page_mask_shift", bit: 0, width: 12 },
  { name: "page_number", bit: 12, width: 52 },
] as const);

export const iommuFlushVaElementLayout = defineByteLayout("iova_list[]", 8, [
  { name: "iova", offset: 0, codec: bits(iommuFlushVaLayout, 8) },
] as const);

/**
 * The single (page_number, page_mask_shift) entry Linux's pvIOMMU driver builds for an inclusive IOVA range
 * [start, end] (hv_iommu_calc_flush_range): the smallest aligned power-of-two range of 4 KiB pages covering both
 * ends, at least one page. Over-flushes when the range is not naturally aligned.
 */
export function flushRangeEntry(start: bigint, end: bigint): { page_number: number; page_mask_shift: number } {
  if (start < 0n || end < start || end >= 1n << 64n) throw new RangeError(`IOVA range [${start}, ${end}]`);
  const diff = start ^ end;
  const fls = diff === 0n ? 0 : diff.toString(2).length;
  const sizeLog2 = Math.max(fls, 12);
  // A range spanning bit 63 becomes a full flush from page 0, as in Linux.
  const alignedStart = sizeLog2 >= 64 ? 0n : start & ~((1n << BigInt(sizeLog2)) - 1n);
  return { page_number: Number(alignedStart >> 12n), page_mask_shift: sizeLog2 - 12 };
}
