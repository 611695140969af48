import { defineLayout } from "@viommu/core";
import { bits, defineByteLayout, u16, u64, u8 } from "./byte-layout.js";
import { deviceIdCodec } from "./device-id.js";

/**
 * Direct attach of a device to a guest partition (spec arm-hyperv-virtio.md §5.4, series (b); iommufd.md §8.5):
 * the hypervisor then translates with the guest's own tables. PROVISIONAL (see device-domain.ts).
 */

/** union hv_attdev_flags (HV_ATTACH_DEVICE_FLAGS); bit 1 and [31:8] are reserved. */
export const attachDeviceFlagsLayout = defineLayout("hv_attdev_flags", 32, [
  { name: "logical_id", bit: 0, width: 1 },
  { name: "ats_enabled", bit: 2, width: 1 },
  { name: "virt_func", bit: 3, width: 1 },
  { name: "shared_irq_child", bit: 4, width: 1 },
  { name: "virt_dev", bit: 5, width: 1 },
  { name: "ats_supported", bit: 6, width: 1 },
  { name: "small_irt", bit: 7, width: 1 },
] as const);

/** union hv_dev_pci_caps (HV_DEVICE_PCI_CAPABILITIES); [31:12] reserved. */
export const devicePciCapsLayout = defineLayout("hv_dev_pci_caps", 32, [
  { name: "max_pasid_width", bit: 0, width: 5 },
  { name: "invalidate_qdepth", bit: 5, width: 5 },
  { name: "global_inval", bit: 10, width: 1 },
  { name: "prg_response_req", bit: 11, width: 1 },
] as const);

/** HVCALL_ATTACH_DEVICE (0x82) input: 40 bytes. */
export const attachDeviceInputLayout = defineByteLayout("hv_input_attach_device", 40, [
  { name: "partition_id", offset: 0, codec: u64 },
  { name: "device_id", offset: 8, codec: deviceIdCodec },
  { name: "attdev_flags", offset: 16, codec: bits(attachDeviceFlagsLayout, 4) },
  { name: "attdev_vtl", offset: 20, codec: u8 },
  { name: "rsvd0", offset: 21, codec: u8, reserved: true },
  { name: "rsvd1", offset: 22, codec: u16, reserved: true },
  { name: "logical_devid", offset: 24, codec: u64 },
  { name: "dev_pcicaps", offset: 32, codec: bits(devicePciCapsLayout, 4) },
  { name: "pf_pci_rid", offset: 36, codec: u16 },
  { name: "resvd2", offset: 38, codec: u16, reserved: true },
] as const);

/** HVCALL_DETACH_DEVICE (0x83) input: 16 bytes. */
export const detachDeviceInputLayout = defineByteLayout("hv_input_detach_device", 16, [
  { name: "partition_id", offset: 0, codec: u64 },
  { name: "logical_devid", offset: 8, codec: u64 },
] as const);
