import { defineLayout, type RawBits } from "@viommu/core";
import { fieldRecord, type FieldRecord } from "./layout-tools.js";

/**
 * Exclusion Base (MMIO 0x0020) and Exclusion Range Limit (0x0028) registers (spec x86.md B1):
 * base [0] ExEn, [1] Allow, [51:12] base; limit [51:12] with the low 12 bits reading as 0xFFF, so the
 * limit is inclusive. When EFR.SNPSup is set the same two registers are the Completion Store (CWWB) base
 * and limit; Linux writes base = limit = the completion-wait semaphore page (init.c iommu_set_cwwb_range).
 */
export const exclusionBaseLayout = defineLayout("ExclusionBase", 64, [
  { name: "ExEn", bit: 0, width: 1 },
  { name: "Allow", bit: 1, width: 1 },
  { name: "ExclusionBase", bit: 12, width: 40, shift: 12 },
] as const);

export const exclusionLimitLayout = defineLayout("ExclusionLimit", 64, [
  { name: "ExclusionLimit", bit: 12, width: 40, shift: 12 },
] as const);

/** Bits of the limit register that always read as ones (QEMU AMDVI_MMIO_EXCL_LIMIT_LOW). */
export const EXCLUSION_LIMIT_LOW_ONES = 0xfff;

export function decodeExclusionBase(raw: RawBits): FieldRecord {
  return fieldRecord(exclusionBaseLayout, raw);
}

/** The last address the exclusion range covers (inclusive), from the limit register's halves. */
export function exclusionLimitInclusive(lo: number, hi: number): number {
  const limit = ((lo & 0xfffff000) >>> 0) + (hi & 0xfffff) * 0x1_0000_0000;
  return limit + EXCLUSION_LIMIT_LOW_ONES;
}

/** Whether `address` falls in [base, limit] as the two registers define it. */
export function inExclusionRange(address: number, baseLo: number, baseHi: number, limitLo: number, limitHi: number): boolean {
  if ((baseLo & 1) === 0) return false;
  const base = ((baseLo & 0xfffff000) >>> 0) + (baseHi & 0xfffff) * 0x1_0000_0000;
  return address >= base && address <= exclusionLimitInclusive(limitLo, limitHi);
}
