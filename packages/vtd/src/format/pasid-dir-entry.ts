import { decodeLayout, defineLayout, encodeLayout, hasReservedBits, type Fields, type RawBits } from "@viommu/core";
import { hasBitsAboveHaw } from "./host-address-width.js";

/**
 * Scalable-mode PASID directory entry: 64 bits, indexed by PASID[19:6]. Intel VT-d spec §9.5;
 * ../shared/spec/x86.md A4.2 (VirtualBox `VTD_BF_SM_PASID_DIR_ENTRY_*`). Bits [11:2] are reserved (fault 0x52).
 */
export const pasidDirEntryLayout = defineLayout("pasid_dir_entry", 64, [
  { name: "P", bit: 0, width: 1 },
  { name: "FPD", bit: 1, width: 1 },
  /** Scalable-mode PASID table pointer: a 4 KiB table of 64 PASID entries. */
  { name: "SMPTBLPTR", bit: 12, width: 52, shift: 12, big: true },
] as const);

export type PasidDirEntryFields = Fields<typeof pasidDirEntryLayout>;

export function decodePasidDirEntry(raw: RawBits): PasidDirEntryFields {
  return decodeLayout(pasidDirEntryLayout, raw);
}

export function encodePasidDirEntry(fields: Partial<PasidDirEntryFields>): RawBits {
  return encodeLayout(pasidDirEntryLayout, fields);
}

export function pasidDirEntryHasReservedBits(raw: RawBits, haw: number): boolean {
  return hasReservedBits(pasidDirEntryLayout, raw) || hasBitsAboveHaw(raw[0]!, raw[1]!, haw);
}

/** Byte offset of PASID `pasid`'s directory entry from PASIDDIRPTR. */
export function pasidDirEntryOffset(pasid: number): number {
  return 8 * (pasid >>> 6);
}

/** Byte offset of PASID `pasid`'s entry from the PASID table base (SMPTBLPTR). */
export function pasidEntryOffset(pasid: number): number {
  return 64 * (pasid & 0x3f);
}
