import { defineLayout, type Fields } from "@viommu/core";

/**
 * The IOMMU's PCI capability block (capability ID 0x0F; spec x86.md B1). Five 32-bit registers at
 * capability offsets +0x00 header, +0x04/+0x08 MMIO base, +0x0C range, +0x10/+0x14 miscellaneous
 * information. Bit positions from Linux MMIO_* parsing, QEMU AMDVI_CAPAB_*, Xen PCI_CAP_* and VirtualBox
 * IOMMU_BF_* (AMD spec 3.05). Xen names header bit 31 "reset"; VirtualBox and the spec revision it follows
 * reserve [31:29], as here.
 */
export const capabilityHeaderLayout = defineLayout("CapabilityHeader", 32, [
  { name: "CapID", bit: 0, width: 8 },
  { name: "CapPtr", bit: 8, width: 8 },
  { name: "CapType", bit: 16, width: 3 },
  { name: "CapRev", bit: 19, width: 5 },
  { name: "IotlbSup", bit: 24, width: 1 },
  { name: "HtTunnel", bit: 25, width: 1 },
  { name: "NpCache", bit: 26, width: 1 },
  { name: "EFRSup", bit: 27, width: 1 },
  { name: "CapExt", bit: 28, width: 1 },
] as const);

/** Base Address Low: [0] Enable, [31:14] base[31:14] (the MMIO window is 16 KiB aligned). */
export const baseAddressLowLayout = defineLayout("BaseAddressLow", 32, [
  { name: "Enable", bit: 0, width: 1 },
  { name: "BaseAddressLo", bit: 14, width: 18, shift: 14 },
] as const);

export const rangeLayout = defineLayout("Range", 32, [
  { name: "UnitID", bit: 0, width: 5 },
  { name: "RngValid", bit: 7, width: 1 },
  { name: "BusNumber", bit: 8, width: 8 },
  { name: "FirstDevice", bit: 16, width: 8 },
  { name: "LastDevice", bit: 24, width: 8 },
] as const);

export const miscInfo0Layout = defineLayout("MiscInfo0", 32, [
  { name: "MsiNum", bit: 0, width: 5 },
  { name: "GVAsize", bit: 5, width: 3 },
  { name: "PAsize", bit: 8, width: 7 },
  { name: "VAsize", bit: 15, width: 7 },
  { name: "HtAtsResv", bit: 22, width: 1 },
  { name: "MsiNumPPR", bit: 27, width: 5 },
] as const);

export const miscInfo1Layout = defineLayout("MiscInfo1", 32, [{ name: "MsiNumGA", bit: 0, width: 5 }] as const);

export type CapabilityHeaderFields = Fields<typeof capabilityHeaderLayout>;

export const AMDVI_CAPABILITY_ID = 0x0f;
/** CapType 3: this capability block describes an IOMMU. */
export const AMDVI_CAPABILITY_TYPE_IOMMU = 3;
export const AMDVI_PCI_CLASS = 0x0806;
export const QEMU_AMDVI_PCI_VENDOR = 0x1022;
export const QEMU_AMDVI_PCI_DEVICE = 0x1419;

export const CapabilityOffset = { Header: 0x00, BaseAddressLow: 0x04, BaseAddressHigh: 0x08, Range: 0x0c, MiscInfo0: 0x10, MiscInfo1: 0x14 } as const;

/** Where the IOMMU capability sits in this model's IOMMU function (QEMU places it first, at 0x40, too). */
export const AMDVI_CAPABILITY_OFFSET = 0x40;
/** The capability block is 24 bytes (header, base low/high, range, miscellaneous 0/1). */
export const AMDVI_CAPABILITY_BYTES = 0x18;
