import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";

/**
 * A PRI queue entry: one PCIe Page Request, 16 bytes (IHI0070 §8; spec arm-hyperv-virtio.md §1.12; Linux
 * PRIQ_0/1_*). Positions absolute within the 128-bit entry.
 */
export const priEntryLayout = defineLayout("PRIQ_ENTRY", 128, [
  { name: "StreamID", bit: 0, width: 32 },
  { name: "SubstreamID", bit: 32, width: 20 },
  { name: "Priv", bit: 58, width: 1 },
  { name: "Exec", bit: 59, width: 1 },
  { name: "Read", bit: 60, width: 1 },
  { name: "Write", bit: 61, width: 1 },
  /** Last request of its page request group. */
  { name: "Last", bit: 62, width: 1 },
  { name: "SSV", bit: 63, width: 1 },
  { name: "PRGIndex", bit: 64, width: 9 },
  /** Page address [63:12]: a bigint. */
  { name: "PageAddress", bit: 76, width: 52, shift: 12, big: true },
] as const);

export type PriEntryFields = Fields<typeof priEntryLayout>;

export function decodePriEntry(raw: RawBits): PriEntryFields {
  return decodeLayout(priEntryLayout, raw);
}

export function encodePriEntry(fields: Partial<PriEntryFields>): RawBits {
  return encodeLayout(priEntryLayout, fields);
}
