import { decodeLayout, defineLayout, encodeLayout, hasReservedBits, type Fields, type RawBits } from "@viommu/core";
import { hasBitsAboveHaw } from "./host-address-width.js";

/**
 * Scalable-mode PASID table entry: 512 bits, 64 per 4 KiB PASID table, indexed by PASID[5:0]. Intel VT-d spec
 * §9.6; ../shared/spec/x86.md A4.2. Field positions: Linux `pasid_set_*` (drivers/iommu/intel/pasid.h, plus
 * the 2020 nested-translation series for CD/EMTE/EMT/PWT/PCD/PAT/EAFE), QEMU `VTD_SM_PASID_ENTRY_*`, and
 * VirtualBox `VTD_BF_*_SM_PASID_TBL_ENTRY_*` (SLEE, ERE, NXE, SMEP). Names follow VT-d 3.x (first-/second-level);
 * VT-d 4.x renames them first-/second-stage (SSADE, SSPTPTR, FSPTPTR, FSPM). QW3..QW7 are reserved.
 */
export const pasidEntryLayout = defineLayout("pasid_entry", 512, [
  { name: "P", bit: 0, width: 1 },
  { name: "FPD", bit: 1, width: 1 },
  /** Second-level address width: levels = AW + 2. */
  { name: "AW", bit: 2, width: 3 },
  /** Second-level execute enable. */
  { name: "SLEE", bit: 5, width: 1 },
  /** PASID-granular translation type (PasidGranularTranslationType). */
  { name: "PGTT", bit: 6, width: 3 },
  /** Second-level accessed/dirty enable (Linux `pasid_set_ssade`). */
  { name: "SLADE", bit: 9, width: 1 },
  { name: "SLPTPTR", bit: 12, width: 52, shift: 12, big: true },
  { name: "DID", bit: 64, width: 16 },
  /** Page-walk snoop. */
  { name: "PWSNP", bit: 87, width: 1 },
  /** Page snoop. */
  { name: "PGSNP", bit: 88, width: 1 },
  /** Cache disable. */
  { name: "CD", bit: 89, width: 1 },
  /** Extended memory type enable. */
  { name: "EMTE", bit: 90, width: 1 },
  { name: "EMT", bit: 91, width: 3 },
  { name: "PWT", bit: 94, width: 1 },
  { name: "PCD", bit: 95, width: 1 },
  { name: "PAT", bit: 96, width: 32 },
  /** Supervisor request enable. */
  { name: "SRE", bit: 128, width: 1 },
  /** Execute request enable. */
  { name: "ERE", bit: 129, width: 1 },
  /** First-level paging mode: 0 = 4-level (48-bit), 1 = 5-level (57-bit). */
  { name: "FLPM", bit: 130, width: 2 },
  /** Write-protect enable (supervisor writes honour R/W). */
  { name: "WPE", bit: 132, width: 1 },
  /** No-execute enable (XD honoured). */
  { name: "NXE", bit: 133, width: 1 },
  /** Supervisor-mode execute prevention. */
  { name: "SMEP", bit: 134, width: 1 },
  /** Extended accessed flag enable. */
  { name: "EAFE", bit: 135, width: 1 },
  { name: "FLPTPTR", bit: 140, width: 52, shift: 12, big: true },
] as const);

export type PasidEntryFields = Fields<typeof pasidEntryLayout>;

/** PASID-entry PGTT values (Linux `PASID_ENTRY_PGTT_*`). 0, 5, 6, 7 are reserved (fault 0x5B). */
export const PasidGranularTranslationType = {
  FL_ONLY: 1,
  SL_ONLY: 2,
  NESTED: 3,
  PT: 4,
} as const;

export function decodePasidEntry(raw: RawBits): PasidEntryFields {
  return decodeLayout(pasidEntryLayout, raw);
}

export function encodePasidEntry(fields: Partial<PasidEntryFields>): RawBits {
  return encodeLayout(pasidEntryLayout, fields);
}

/** First-level table depth for FLPM (4 or 5; other FLPM values are reserved). */
export function firstLevelLevelsFromFlpm(flpm: number): number {
  return 4 + flpm;
}

/** Whether a present PASID entry has a reserved bit set, including SLPTPTR/FLPTPTR bits at or above `haw` (fault 0x5A). */
export function pasidEntryHasReservedBits(raw: RawBits, haw: number): boolean {
  return hasReservedBits(pasidEntryLayout, raw) || hasBitsAboveHaw(raw[0]!, raw[1]!, haw) || hasBitsAboveHaw(raw[4]!, raw[5]!, haw);
}
