import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";

/**
 * Mock interrupt remapping table entry (64 bits). A remappable MSI carries the entry's index: address
 * 0xFEE0_0000 | index << 4 | 1 << 3 (the remap-format bit), data ignored.
 */
export const mockIrteLayout = defineLayout("MOCK_IRTE", 64, [
  { name: "P", bit: 0, width: 1 },
  /** Validate the source id: only SID may use this entry. */
  { name: "SVT", bit: 1, width: 1 },
  { name: "VECTOR", bit: 8, width: 8 },
  { name: "SID", bit: 16, width: 16 },
  { name: "DEST", bit: 32, width: 32 },
] as const);

export type MockIrte = Fields<typeof mockIrteLayout>;
export const MOCK_IRTE_BYTES = 8;

export const MOCK_MSI_BASE = 0xfee0_0000;
export const MOCK_MSI_REMAP = 1 << 3;

export function decodeMockIrte(raw: RawBits): MockIrte {
  return decodeLayout(mockIrteLayout, raw);
}

export function encodeMockIrte(entry: Partial<MockIrte>): RawBits {
  return encodeLayout(mockIrteLayout, entry);
}

/** The remappable MSI address for table index `index` (0..0xffff). */
export function mockMsiAddress(index: number): number {
  return (MOCK_MSI_BASE | (index << 4) | MOCK_MSI_REMAP) >>> 0;
}

/** The index an MSI address selects, or undefined when it is not in remappable format. */
export function mockMsiIndex(address: number): number | undefined {
  if (Math.floor(address / 2 ** 20) !== MOCK_MSI_BASE / 2 ** 20 || (address & MOCK_MSI_REMAP) === 0) return undefined;
  return (address >>> 4) & 0xffff;
}
