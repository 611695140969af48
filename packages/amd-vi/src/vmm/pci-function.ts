import { encodeLayout } from "@viommu/core";
import { u64FromRaw } from "../format/layout-tools.js";
import {
  AMDVI_CAPABILITY_BYTES,
  AMDVI_CAPABILITY_ID,
  AMDVI_CAPABILITY_OFFSET,
  AMDVI_CAPABILITY_TYPE_IOMMU,
  AMDVI_PCI_CLASS,
  CapabilityOffset,
  capabilityHeaderLayout,
  miscInfo0Layout,
  QEMU_AMDVI_PCI_DEVICE,
  QEMU_AMDVI_PCI_VENDOR,
  rangeLayout,
} from "../format/pci-capability.js";
import { MSI_64BIT, MSI_ENABLE, MsiCapabilityOffset, PCI_CAP_ID_MSI, PCI_COMMAND_WRITABLE, PCI_STATUS_CAP_LIST, PciConfigOffset } from "../format/pci-config-header.js";
import { ADDRESS_SIZES, IVHD_FLAGS } from "./ivrs-builder.js";

/** Configuration space of one PCI function: 256 bytes, read and written in naturally aligned 1, 2 or 4 bytes. */
export interface PciConfigHandler {
  /** The function's requester id (bus << 8 | device << 3 | function). */
  readonly bdf: number;
  read(offset: number, size: 1 | 2 | 4): number;
  write(offset: number, size: 1 | 2 | 4, value: number): void;
}

/** The MSI capability's registers, shared with the MMIO mirror at 0x158–0x167 (EFR.MsiCapMmioSup). */
export interface MsiRegisters {
  enabled: boolean;
  addressLow: number;
  addressHigh: number;
  data: number;
}

/** Where the MSI capability follows the IOMMU capability. */
export const MSI_CAPABILITY_OFFSET = AMDVI_CAPABILITY_OFFSET + AMDVI_CAPABILITY_BYTES;
const CONFIG_BYTES = 256;

/** What the function's capability block describes: the register block and the IVHD it must agree with. */
export interface PciFunctionSetup {
  readonly bdf: number;
  readonly mmioBase: number;
  /** The MSI registers, owned by the device (the MMIO mirror reads and writes the same ones). */
  readonly msi: MsiRegisters;
  /** Called after the guest changed an MSI register. */
  onMsiChange(): void;
  /** The Command register, kept with the device's state. */
  readonly command: { get(): number; set(value: number): void };
  /** IotlbSup in the capability header, as the IVHD flags say (device-iotlb; default on). */
  readonly iotlbSup?: boolean;
}

/**
 * The IOMMU as the PCI function Linux's iommu_init_pci (drivers/iommu/amd/init.c) probes: found at the IVHD's
 * DeviceID, its IOMMU capability read at the IVHD's capability offset (IOTLB support, NpCache, EFRSup gating
 * the EFR read), then pci_enable_device, and its MSI capability programmed by pci_enable_msi for the event
 * interrupt. Layout (spec x86.md B1; QEMU hw/i386/amd_iommu.c amdvi_pci_realize):
 * - vendor 0x1022, device 0x1419, class 0x0806 (QEMU's identity), a capability list at 0x34;
 * - 0x40 the IOMMU capability: header (CapID 0x0F, CapType 3, HtTunnel and IotlbSup as the IVHD flags say,
 *   NpCache, EFRSup, CapExt), Base Address Low/High = the MMIO base with Enable set (the IVHD's base), Range
 *   = bus 0, devices 0x00–0xFF (the IVHD's bus-0 range), Miscellaneous 0 = the IVinfo address sizes;
 * - 0x58 a 64-bit MSI capability, one vector, its address and data shared with the MMIO mirror.
 * QEMU deviations, not copied: its Base Address Low leaves Enable clear, its Range has RngValid clear and its
 * Miscellaneous registers are 0 while its IVinfo reports sizes. The capability block is read-only, as QEMU
 * has it (firmware locked it); the Command register and the MSI registers are writable.
 */
export class AmdViPciFunction implements PciConfigHandler {
  readonly bdf: number;
  private readonly image = new Uint8Array(CONFIG_BYTES);
  private readonly view = new DataView(this.image.buffer);

  constructor(private readonly setup: PciFunctionSetup) {
    this.bdf = setup.bdf;
    const v = this.view;
    v.setUint16(PciConfigOffset.VendorID, QEMU_AMDVI_PCI_VENDOR, true);
    v.setUint16(PciConfigOffset.DeviceID, QEMU_AMDVI_PCI_DEVICE, true);
    v.setUint16(PciConfigOffset.Status, PCI_STATUS_CAP_LIST, true);
    // Class code 0x080600: base class 0x08 (system peripheral), subclass 0x06 (IOMMU), programming interface 0.
    v.setUint8(PciConfigOffset.ClassCode + 1, AMDVI_PCI_CLASS & 0xff);
    v.setUint8(PciConfigOffset.ClassCode + 2, AMDVI_PCI_CLASS >>> 8);
    v.setUint8(PciConfigOffset.CapabilitiesPointer, AMDVI_CAPABILITY_OFFSET);
    const cap = AMDVI_CAPABILITY_OFFSET;
    const header = encodeLayout(capabilityHeaderLayout, {
      CapID: AMDVI_CAPABILITY_ID,
      CapPtr: MSI_CAPABILITY_OFFSET,
      CapType: AMDVI_CAPABILITY_TYPE_IOMMU,
      CapRev: 0,
      IotlbSup: setup.iotlbSup === false ? 0 : (IVHD_FLAGS >>> 4) & 1,
      HtTunnel: IVHD_FLAGS & 1,
      NpCache: 1,
      EFRSup: 1,
      CapExt: 1,
    });
    v.setUint32(cap + CapabilityOffset.Header, Number(u64FromRaw(header)), true);
    v.setUint32(cap + CapabilityOffset.BaseAddressLow, ((setup.mmioBase % 2 ** 32) & 0xffff_c000) | 1, true);
    v.setUint32(cap + CapabilityOffset.BaseAddressHigh, Math.floor(setup.mmioBase / 2 ** 32), true);
    v.setUint32(cap + CapabilityOffset.Range, Number(u64FromRaw(encodeLayout(rangeLayout, { UnitID: 0, RngValid: 1, BusNumber: 0, FirstDevice: 0x00, LastDevice: 0xff }))), true);
    const misc = encodeLayout(miscInfo0Layout, { MsiNum: 0, GVAsize: ADDRESS_SIZES.gvaSize, PAsize: ADDRESS_SIZES.paSize, VAsize: ADDRESS_SIZES.vaSize, HtAtsResv: 0, MsiNumPPR: 0 });
    v.setUint32(cap + CapabilityOffset.MiscInfo0, Number(u64FromRaw(misc)), true);
    v.setUint32(cap + CapabilityOffset.MiscInfo1, 0, true);
  }

  /** The MSI capability's header dword: ID, end of the list, one vector, 64-bit, and MsiEn as programmed. */
  msiHeader(): number {
    return (PCI_CAP_ID_MSI | MSI_64BIT | (this.setup.msi.enabled ? MSI_ENABLE : 0)) >>> 0;
  }

  /** Writes to the MSI header change only MsiEn (one vector: MultMessEn stays 0). */
  writeMsiHeader(value: number): void {
    this.setup.msi.enabled = (value & MSI_ENABLE) !== 0;
    this.setup.onMsiChange();
  }

  private dword(offset: number): number {
    const msi = MSI_CAPABILITY_OFFSET;
    switch (offset) {
      case PciConfigOffset.Command:
        return (this.setup.command.get() | (this.view.getUint16(PciConfigOffset.Status, true) << 16)) >>> 0;
      case msi + MsiCapabilityOffset.Header:
        return this.msiHeader();
      case msi + MsiCapabilityOffset.AddressLow:
        return this.setup.msi.addressLow >>> 0;
      case msi + MsiCapabilityOffset.AddressHigh:
        return this.setup.msi.addressHigh >>> 0;
      case msi + MsiCapabilityOffset.Data:
        return this.setup.msi.data & 0xffff;
      default:
        return this.view.getUint32(offset, true);
    }
  }

  read(offset: number, size: 1 | 2 | 4): number {
    if (!aligned(offset, size)) return size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
    const shift = (offset & 3) * 8;
    const value = this.dword(offset & ~3) >>> shift;
    return size === 4 ? value >>> 0 : value & (size === 2 ? 0xffff : 0xff);
  }

  /** Writes: a sub-dword write merges into its dword; read-only bits and registers ignore it. */
  write(offset: number, size: 1 | 2 | 4, value: number): void {
    if (!aligned(offset, size)) return;
    const at = offset & ~3;
    const shift = (offset & 3) * 8;
    const mask = size === 4 ? 0xffff_ffff : ((size === 2 ? 0xffff : 0xff) << shift) >>> 0;
    const merged = ((this.dword(at) & ~mask) | ((value << shift) & mask)) >>> 0;
    const msi = MSI_CAPABILITY_OFFSET;
    switch (at) {
      case PciConfigOffset.Command:
        if (mask & 0xffff) this.setup.command.set(merged & PCI_COMMAND_WRITABLE);
        return;
      case msi + MsiCapabilityOffset.Header:
        if (mask & MSI_ENABLE) this.writeMsiHeader(merged);
        return;
      case msi + MsiCapabilityOffset.AddressLow:
        this.setup.msi.addressLow = (merged & ~3) >>> 0;
        return this.setup.onMsiChange();
      case msi + MsiCapabilityOffset.AddressHigh:
        this.setup.msi.addressHigh = merged;
        return this.setup.onMsiChange();
      case msi + MsiCapabilityOffset.Data:
        this.setup.msi.data = merged & 0xffff;
        return this.setup.onMsiChange();
      default:
        return;
    }
  }
}

function aligned(offset: number, size: number): boolean {
  return Number.isInteger(offset) && offset >= 0 && offset + size <= CONFIG_BYTES && offset % size === 0;
}
