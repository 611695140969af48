/**
 * How an MSI selects an IRTE (spec x86.md B5.1; QEMU amdvi_int_remap_msi / amdvi_int_remap_legacy /
 * amdvi_int_remap_ga; Linux fill_msi_msg).
 *
 * - The message address must fall in 0xFEE0_0000..0xFEEF_FFFF (QEMU AMDVI_INT_ADDR_FIRST/LAST).
 * - The IRTE index is data[10:0] (QEMU AMDVI_IRTE_OFFSET 0x7FF); Linux writes data = index and address
 *   0xFEE0_0000, plus the address DM bit (bit 2) when EFR2.NumIntRemapSup reports 2K mode.
 * - In 2048-interrupt mode (Control.NumIntRemapMode = 1) with address bit 2 set, the message is remapped
 *   directly. Otherwise data[10:8] is also read as the delivery mode: 0 fixed / 1 arbitrated are remapped
 *   (DTE.IntCtl decides), 4 NMI / 5 INIT / 7 ExtINT pass through only when the DTE's NMIPass / InitPass /
 *   EIntPass bit is set, and 2 SMI, 3, 6 are errors. So without 2K mode indices stay below 512.
 * - The IRTE sits at DTE.InterruptTableRootPointer + index × 4 (32-bit IRTEs) or × 16 (Control.GAEn = 1),
 *   and the table has 2^DTE.IntTabLen entries.
 */
export const MSI_ADDRESS_FIRST = 0xfee00000;
export const MSI_ADDRESS_LAST = 0xfeefffff;
export const MSI_DATA_IRTE_INDEX_MASK = 0x7ff;
/** Bit 2 of the MSI address: destination mode; in 2K mode it selects direct remapping. */
export const MSI_ADDRESS_DM = 0x4;

export const MsiDeliveryMode = { Fixed: 0, Arbitrated: 1, SMI: 2, NMI: 4, INIT: 5, ExtINT: 7 } as const;

/** What the IOMMU does with an MSI before looking at the DTE's IntCtl. */
export const MsiAction = {
  /** Not an interrupt address. */
  NotInterrupt: 0,
  /** Remap through the IRTE at `msiIrteIndex(data)` (subject to DTE.IntCtl). */
  Remap: 1,
  /** Pass through if DTE.NMIPass. */
  PassIfNmiPass: 2,
  /** Pass through if DTE.InitPass. */
  PassIfInitPass: 3,
  /** Pass through if DTE.EIntPass. */
  PassIfEIntPass: 4,
  /** SMI and reserved delivery modes: an interrupt remapping error. */
  Invalid: 5,
} as const;
export type MsiAction = (typeof MsiAction)[keyof typeof MsiAction];

export function msiIrteIndex(data: number): number {
  return data & MSI_DATA_IRTE_INDEX_MASK;
}

export function msiDeliveryMode(data: number): number {
  return (data >>> 8) & 7;
}

/** Classifies an MSI (address low 32 bits, data); `twoKMode` is Control.NumIntRemapMode = 1. No allocation. */
export function classifyMsi(addressLo: number, addressHi: number, data: number, twoKMode: boolean): MsiAction {
  const address = addressLo >>> 0;
  if (addressHi !== 0 || address < MSI_ADDRESS_FIRST || address > MSI_ADDRESS_LAST - 3) return MsiAction.NotInterrupt;
  if (twoKMode && (address & MSI_ADDRESS_DM) !== 0) return MsiAction.Remap;
  switch (msiDeliveryMode(data)) {
    case MsiDeliveryMode.Fixed:
    case MsiDeliveryMode.Arbitrated:
      return MsiAction.Remap;
    case MsiDeliveryMode.NMI:
      return MsiAction.PassIfNmiPass;
    case MsiDeliveryMode.INIT:
      return MsiAction.PassIfInitPass;
    case MsiDeliveryMode.ExtINT:
      return MsiAction.PassIfEIntPass;
    default:
      return MsiAction.Invalid;
  }
}

/** Guest-physical address of IRTE `index` in the table at `root` (128-bit entries when `ga`). */
export function irteAddress(root: number, index: number, ga: boolean): number {
  return root + index * (ga ? 16 : 4);
}

/** Whether `index` lies inside a table of 2^intTabLen entries. */
export function irteIndexInTable(index: number, intTabLen: number): boolean {
  return index < 2 ** intTabLen;
}

/** Linux IRT sizing (amd_iommu_types.h): 512 entries (IntTabLen 9), or 2048 (11) in 2K mode; 128-byte aligned. */
export const LINUX_INT_TAB_LEN = 9;
export const LINUX_INT_TAB_LEN_2K = 11;
export const IRT_ALIGNMENT = 128;

/** The MSI message Linux fill_msi_msg programs for IRTE `index`. */
export function linuxMsiMessage(index: number, twoKMode: boolean): { addressLo: number; addressHi: number; data: number } {
  return { addressLo: (MSI_ADDRESS_FIRST | (twoKMode ? MSI_ADDRESS_DM : 0)) >>> 0, addressHi: 0, data: index };
}
