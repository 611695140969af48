import { SteS1Fmt } from "./stream-table-entry.js";

/** Linux's CTXDESC_L2_ENTRIES: a 2-level CD table's leaf holds 1024 CDs (64 KiB, STE.S1Fmt 2). */
export const CD_L2_ENTRIES = 1024;
/** Linux's CTXDESC_LINEAR_CDMAX: without IDR0.CD2L a master's SubstreamIDs are capped at 10 bits (one 64 KiB table). */
export const CD_LINEAR_MAX_BITS = 10;

/** How a master's CD table is laid out: STE.S1Fmt, STE.S1CDMax, and how many CDs or level-1 descriptors the table holds. */
export interface CdTableShape {
  readonly s1fmt: number;
  readonly s1cdmax: number;
  /** Entries of the table STE.S1ContextPtr points at: CDs (linear) or L1CDs (2-level). */
  readonly entries: number;
}

/**
 * The CD table Linux allocates for a master with `ssidBits` SubstreamID bits (arm_smmu_alloc_cd_tables): S1CDMax is
 * the master's SSID width; linear when it fits one 64 KiB leaf or the SMMU lacks 2-level CD tables (the width is then
 * capped at CTXDESC_LINEAR_CDMAX, as arm_smmu_probe_device does), else 2-level with 64 KiB leaves (S1Fmt 2).
 */
export function linuxCdTableShape(ssidBits: number, twoLevelCapable: boolean): CdTableShape {
  const bits = twoLevelCapable ? ssidBits : Math.min(ssidBits, CD_LINEAR_MAX_BITS);
  const contexts = 2 ** bits;
  if (!twoLevelCapable || contexts <= CD_L2_ENTRIES) return { s1fmt: SteS1Fmt.Linear, s1cdmax: bits, entries: contexts };
  return { s1fmt: SteS1Fmt.TwoLevel64K, s1cdmax: bits, entries: Math.ceil(contexts / CD_L2_ENTRIES) };
}
