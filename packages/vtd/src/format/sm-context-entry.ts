import { decodeLayout, defineLayout, encodeLayout, hasReservedBits, type Fields, type RawBits } from "@viommu/core";
import { hasBitsAboveHaw } from "./host-address-width.js";

/**
 * Scalable-mode context entry: 256 bits, 128 per context table. Intel VT-d spec §9.4; ../shared/spec/x86.md
 * A4.2 (QEMU `VTD_SM_CONTEXT_ENTRY_*`, VirtualBox `VTD_BF_*_SM_CONTEXT_ENTRY_*`). Reserved: [8:5], [127:85],
 * and all of QW2 and QW3 (QEMU masks: QW0 0x1E0 | above-HAW, QW1 0xFFFF_FFFF_FFE0_0000); fault 0x42.
 */
export const smContextEntryLayout = defineLayout("sm_context_entry", 256, [
  { name: "P", bit: 0, width: 1 },
  { name: "FPD", bit: 1, width: 1 },
  /** Device-TLB enable. */
  { name: "DTE", bit: 2, width: 1 },
  /** PASID enable: requests with PASID allowed (fault 0x45 when clear). */
  { name: "PASIDE", bit: 3, width: 1 },
  /** Page-request enable. */
  { name: "PRE", bit: 4, width: 1 },
  /** PASID directory size: 2^(PDTS + 7) entries. */
  { name: "PDTS", bit: 9, width: 3 },
  { name: "PASIDDIRPTR", bit: 12, width: 52, shift: 12, big: true },
  /** PASID used for requests without PASID. */
  { name: "RID_PASID", bit: 64, width: 20 },
  /** Privilege (supervisor) mode for requests without PASID (needs ECAP.RPRIVS). */
  { name: "RID_PRIV", bit: 84, width: 1 },
] as const);

export type SmContextEntryFields = Fields<typeof smContextEntryLayout>;

export function decodeSmContextEntry(raw: RawBits): SmContextEntryFields {
  return decodeLayout(smContextEntryLayout, raw);
}

export function encodeSmContextEntry(fields: Partial<SmContextEntryFields>): RawBits {
  return encodeLayout(smContextEntryLayout, fields);
}

/** Whether a present scalable-mode context entry has a reserved bit set, including PASIDDIRPTR bits ≥ `haw` (fault 0x42). */
export function smContextEntryHasReservedBits(raw: RawBits, haw: number): boolean {
  return hasReservedBits(smContextEntryLayout, raw) || hasBitsAboveHaw(raw[0]!, raw[1]!, haw);
}

/** Number of PASID-directory entries for PDTS. */
export function pasidDirectoryEntries(pdts: number): number {
  return 2 ** (pdts + 7);
}
