import { defineLayout } from "@viommu/core";

/**
 * Stream table base registers and the level-1 stream table descriptor (IHI0070 §3.3, §5.1, §6.3.25–26;
 * spec arm-hyperv-virtio.md §1.5).
 */

export const strtabBaseLayout = defineLayout("SMMU_STRTAB_BASE", 64, [
  { name: "ADDR", bit: 6, width: 46, shift: 6 },
  { name: "RA", bit: 62, width: 1 },
] as const);

export const strtabBaseCfgLayout = defineLayout("SMMU_STRTAB_BASE_CFG", 32, [
  { name: "LOG2SIZE", bit: 0, width: 6 },
  { name: "SPLIT", bit: 6, width: 5 },
  { name: "FMT", bit: 16, width: 2 },
] as const);

/** STRTAB_BASE_CFG.FMT values (2 and 3 are reserved). */
export const StrtabFormat = { Linear: 0, TwoLevel: 1 } as const;

/** The level-1 stream table descriptor (L1STD), 8 bytes. */
export const l1StdLayout = defineLayout("L1STD", 64, [
  { name: "Span", bit: 0, width: 5 },
  { name: "L2Ptr", bit: 6, width: 46, shift: 6 },
] as const);

export const STE_BYTES = 64;
export const L1STD_BYTES = 8;

/** Index of the L1STD covering `sid` in a 2-level table split at `split`. */
export function strtabL1Index(sid: number, split: number): number {
  return Math.floor(sid / 2 ** split);
}

/** Index of `sid`'s STE within its level-2 table. */
export function strtabL2Index(sid: number, split: number): number {
  return sid % 2 ** split;
}

/** STEs in the level-2 table an L1STD points to: 2^(Span − 1); 0 for Span = 0 (invalid descriptor). */
export function l1StdEntries(span: number): number {
  return span === 0 ? 0 : 2 ** (span - 1);
}

/**
 * Whether an L1STD with this Span lets `sid` reach an STE. False means C_BAD_STREAMID (IHI0070 §7.3.3): Span 0,
 * a Span above SPLIT + 1 (which also excludes the reserved large values for every legal SPLIT), or an L2 index
 * at or beyond 2^(Span − 1). QEMU accepts L2 indexes up to 2^Span − 1 (spec §9.3); this follows the
 * architecture.
 */
export function l1StdReaches(span: number, split: number, sid: number): boolean {
  if (span === 0 || span > split + 1) return false;
  return strtabL2Index(sid, split) < l1StdEntries(span);
}
