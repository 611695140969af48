import { decodeLayout, defineLayout, encodeLayout, hasReservedBits, type Fields, type RawBits } from "@viommu/core";

/**
 * The mock device table entry (128 bits), indexed by requester id (16 bits, so at most 65536 entries).
 * V clear: the device's DMA is blocked. TR clear: DMA passes untranslated (bypass).
 */
export const mockDeviceEntryLayout = defineLayout("MOCK_DTE", 128, [
  { name: "V", bit: 0, width: 1 },
  { name: "TR", bit: 1, width: 1 },
  { name: "FPD", bit: 2, width: 1 },
  { name: "S1ROOT", bit: 12, width: 40, shift: 12 },
  { name: "ASID", bit: 64, width: 16 },
] as const);

export type MockDeviceEntry = Fields<typeof mockDeviceEntryLayout>;
export const MOCK_DTE_BYTES = 16;

export function decodeMockDeviceEntry(raw: RawBits): MockDeviceEntry {
  return decodeLayout(mockDeviceEntryLayout, raw);
}

export function encodeMockDeviceEntry(entry: Partial<MockDeviceEntry>): RawBits {
  return encodeLayout(mockDeviceEntryLayout, entry);
}

/** A valid entry must have no reserved bit set; the hardware reports a bad entry otherwise. */
export function mockDeviceEntryMalformed(raw: RawBits): boolean {
  return hasReservedBits(mockDeviceEntryLayout, raw);
}
