import { decodeLayout, defineLayout, encodeLayout, hasReservedBits, type Fields, type RawBits } from "@viommu/core";
import { hasBitsAboveHaw } from "./host-address-width.js";

/**
 * Legacy-mode context entry: 128 bits, 256 per context table, indexed by devfn. Intel VT-d spec §9.3;
 * ../shared/spec/x86.md A4.1 (Linux `struct context_entry`, QEMU `VTD_CONTEXT_ENTRY_*`). Reserved: [11:4], 71,
 * [127:88] (QEMU masks: low 0xFF0 | above-HAW, high 0xFFFF_FFFF_FF00_0080); a violation is fault 0xB.
 */
export const contextEntryLayout = defineLayout("context_entry", 128, [
  { name: "P", bit: 0, width: 1 },
  /** Fault processing disable: suppresses qualified faults. */
  { name: "FPD", bit: 1, width: 1 },
  /** Translation type (ContextTranslationType). */
  { name: "TT", bit: 2, width: 2 },
  /** Second-level page-table root. */
  { name: "SLPTPTR", bit: 12, width: 52, shift: 12, big: true },
  /** Address width: levels = AW + 2, AGAW = 30 + 9·AW. */
  { name: "AW", bit: 64, width: 3 },
  /** Available to software; ignored by hardware. */
  { name: "AVAIL", bit: 67, width: 4 },
  { name: "DID", bit: 72, width: 16 },
] as const);

export type ContextEntryFields = Fields<typeof contextEntryLayout>;

/** Context-entry TT values. */
export const ContextTranslationType = {
  /** Multi-level tables, untranslated requests only. */
  MULTI_LEVEL: 0,
  /** Multi-level tables; translation requests and translated requests (ATS) allowed (needs ECAP.DT). */
  DEV_IOTLB: 1,
  /** Pass-through (needs ECAP.PT). */
  PASS_THROUGH: 2,
  RESERVED: 3,
} as const;

export function decodeContextEntry(raw: RawBits): ContextEntryFields {
  return decodeLayout(contextEntryLayout, raw);
}

export function encodeContextEntry(fields: Partial<ContextEntryFields>): RawBits {
  return encodeLayout(contextEntryLayout, fields);
}

/** Whether a present legacy context entry has a reserved bit set, including SLPTPTR bits at or above `haw` (fault 0xB). */
export function contextEntryHasReservedBits(raw: RawBits, haw: number): boolean {
  return hasReservedBits(contextEntryLayout, raw) || hasBitsAboveHaw(raw[0]!, raw[1]!, haw);
}

/** Second-level table depth for context-entry / PASID-entry AW (3, 4 or 5 for AW 1, 2, 3). */
export function levelsFromAw(aw: number): number {
  return aw + 2;
}

/** Adjusted guest address width in bits for AW (39, 48, 57 for AW 1, 2, 3). */
export function agawFromAw(aw: number): number {
  return 30 + 9 * aw;
}
