import { decodeLayout, defineLayout, encodeLayout, hasReservedBits, type Fields, type RawBits } from "@viommu/core";
import { hasBitsAboveHaw } from "./host-address-width.js";

/**
 * Legacy-mode root entry (RTADDR.TTM = 0): 128 bits, 256 per 4 KiB root table, indexed by bus number.
 * Intel VT-d spec §9.1; ../shared/spec/x86.md A4.1. Bits [11:1] and [127:64] are reserved (fault 0xA).
 */
export const rootEntryLayout = defineLayout("root_entry", 128, [
  { name: "P", bit: 0, width: 1 },
  /** Context-table pointer (4 KiB aligned); bits at and above HAW are reserved. */
  { name: "CTP", bit: 12, width: 52, shift: 12, big: true },
] as const);

export type RootEntryFields = Fields<typeof rootEntryLayout>;

export function decodeRootEntry(raw: RawBits): RootEntryFields {
  return decodeLayout(rootEntryLayout, raw);
}

export function encodeRootEntry(fields: Partial<RootEntryFields>): RawBits {
  return encodeLayout(rootEntryLayout, fields);
}

/** Whether a present legacy root entry has a reserved bit set, including CTP bits at or above `haw` (fault 0xA). */
export function rootEntryHasReservedBits(raw: RawBits, haw: number): boolean {
  return hasReservedBits(rootEntryLayout, raw) || hasBitsAboveHaw(raw[0]!, raw[1]!, haw);
}
