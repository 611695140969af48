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

/**
 * The exclusion range as the IOMMU applies it (spec x86.md B1): enabled by ExEn; with Allow, DMA of every
 * device inside [base, limit] is forwarded untranslated, without it only that of devices whose DTE has EX
 * (bit 103). Numbers, decoded once when a register is written, so the translation path tests it without BigInt.
 */
export interface ExclusionRange {
  enabled: boolean;
  allowAll: boolean;
  base: number;
  /** Inclusive. */
  limit: number;
}

export function newExclusionRange(): ExclusionRange {
  return { enabled: false, allowAll: false, base: 0, limit: 0 };
}

/** Decodes the two registers into `out`. */
export function decodeExclusionRange(baseRegister: bigint, limitRegister: bigint, out: ExclusionRange): ExclusionRange {
  out.enabled = (baseRegister & 1n) === 1n;
  out.allowAll = (baseRegister & 2n) === 2n;
  out.base = Number(baseRegister & 0x000f_ffff_ffff_f000n);
  out.limit = Number(limitRegister & 0x000f_ffff_ffff_f000n) + EXCLUSION_LIMIT_LOW_ONES;
  return out;
}

/** Whether the range applies to a device whose DTE's dword 3 is `dteWord3` (EX is its bit 7). */
export function exclusionAppliesTo(range: ExclusionRange, dteWord3: number): boolean {
  return range.enabled && (range.allowAll || ((dteWord3 >>> 7) & 1) === 1) && range.limit >= range.base;
}

/** Whether a request at `iova` from such a device passes untranslated. */
export function excluded(range: ExclusionRange, dteWord3: number, iova: number): boolean {
  return exclusionAppliesTo(range, dteWord3) && iova >= range.base && iova <= range.limit;
}
