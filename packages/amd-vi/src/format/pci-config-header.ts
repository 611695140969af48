import { defineLayout } from "@viommu/core";

/**
 * The PCI type 0 configuration header fields an IOMMU function has (PCI Local Bus 3.0 §6.1; QEMU
 * include/hw/pci/pci_regs.h PCI_*): byte offsets. The AMD IOMMU has no BARs: its register block is named by
 * the IOMMU capability's Base Address registers (pci-capability.ts) and by the IVHD.
 */
export const PciConfigOffset = {
  VendorID: 0x00,
  DeviceID: 0x02,
  Command: 0x04,
  Status: 0x06,
  RevisionID: 0x08,
  ClassCode: 0x09,
  HeaderType: 0x0e,
  SubsystemVendorID: 0x2c,
  CapabilitiesPointer: 0x34,
  InterruptLine: 0x3c,
} as const;

/** Command register bits software may set on a function without BARs or INTx use (I/O, memory, bus master, SERR#, INTx disable). */
export const PCI_COMMAND_WRITABLE = 0x0547;
/** Status bit 4: the function has a capability list at CapabilitiesPointer. */
export const PCI_STATUS_CAP_LIST = 0x0010;
/** What a read of a function that is not there returns (no device answers the configuration cycle). */
export const PCI_ABSENT = 0xffff_ffff;

/** The MSI capability (PCI 3.0 §6.8.1), as the 32-bit header dword: ID, next, and the Message Control word. */
export const msiCapabilityHeaderLayout = defineLayout("MsiCapabilityHeader", 32, [
  { name: "MsiCapId", bit: 0, width: 8 },
  { name: "MsiCapPtr", bit: 8, width: 8 },
  { name: "MsiEn", bit: 16, width: 1 },
  { name: "MsiMultMessCap", bit: 17, width: 3 },
  { name: "MsiMultMessEn", bit: 20, width: 3 },
  { name: "Msi64En", bit: 23, width: 1 },
] as const);

export const PCI_CAP_ID_MSI = 0x05;
/** Offsets in a 64-bit MSI capability: header, address low, address high, data. */
export const MsiCapabilityOffset = { Header: 0x00, AddressLow: 0x04, AddressHigh: 0x08, Data: 0x0c } as const;
/** MsiEn, in the header dword. */
export const MSI_ENABLE = 1 << 16;
/** Msi64En: the function can send 64-bit message addresses. */
export const MSI_64BIT = 1 << 23;

/**
 * How a guest reaches PCI configuration space (the platform's ECAM window or 0xCF8/0xCFC), dword by dword:
 * a function that is not there reads all ones and ignores writes.
 */
export interface PciConfigAccess {
  read32(bdf: number, offset: number): number;
  write32(bdf: number, offset: number, value: number): void;
}
