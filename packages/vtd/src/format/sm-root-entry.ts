import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";
import { hasBitsAboveHaw } from "./host-address-width.js";

/**
 * Scalable-mode root entry (RTADDR.TTM = 1): 128 bits indexed by bus number; each half points to a
 * scalable-mode context table of 128 entries of 256 bits. Intel VT-d spec §9.2; ../shared/spec/x86.md A4.2.
 * The lower half serves devfn 0x00–0x7F, the upper half devfn 0x80–0xFF (indexed with devfn & 0x7F).
 * Bits [11:1] and [75:65] are reserved (fault 0x3A).
 */
export const smRootEntryLayout = defineLayout("sm_root_entry", 128, [
  /** Lower present. */
  { name: "LP", bit: 0, width: 1 },
  /** Lower context-table pointer. */
  { name: "LCTP", bit: 12, width: 52, shift: 12, big: true },
  /** Upper present. */
  { name: "UP", bit: 64, width: 1 },
  /** Upper context-table pointer. */
  { name: "UCTP", bit: 76, width: 52, shift: 12, big: true },
] as const);

export type SmRootEntryFields = Fields<typeof smRootEntryLayout>;

export function decodeSmRootEntry(raw: RawBits): SmRootEntryFields {
  return decodeLayout(smRootEntryLayout, raw);
}

export function encodeSmRootEntry(fields: Partial<SmRootEntryFields>): RawBits {
  return encodeLayout(smRootEntryLayout, fields);
}

/**
 * Whether the half of a scalable-mode root entry that serves `devfn` has a reserved bit set, including its
 * pointer bits at or above `haw` (fault 0x3A). Each half is checked only when it is the one used.
 */
export function smRootEntryHasReservedBits(raw: RawBits, devfn: number, haw: number): boolean {
  const upper = devfn >= 0x80;
  const lo = upper ? raw[2]! : raw[0]!;
  const hi = upper ? raw[3]! : raw[1]!;
  // Each half's reserved bits are [11:1] of its own qword (bits [75:65] for the upper half).
  return (lo & 0xffe) !== 0 || hasBitsAboveHaw(lo, hi, haw);
}
