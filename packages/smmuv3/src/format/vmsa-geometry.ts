import type { TableGeometry } from "@viommu/core";

/**
 * VMSAv8-64 table geometry for the SMMU's stage 1 (CD.T0SZ/TG0) and stage 2 (STE.S2T0SZ/S2SL0/S2TG)
 * (ARM DDI0487 D8.2; IHI0070 §5.2, §5.4; spec arm-hyperv-virtio.md §2.1–2.3).
 *
 * Level numbering: ours decreases toward the leaf with the page table at level 1, so ARM level 3 is our
 * level 1 and ARM level 0 our level 4 (`ourLevel = 4 − armLevel`). LPA2 (level −1, 52-bit 4K/16K) is not
 * modelled.
 */

/** log2 of a translation granule: 12 (4 KiB), 14 (16 KiB) or 16 (64 KiB). */
export type GranuleShift = 12 | 14 | 16;

export const GRANULE_4K: GranuleShift = 12;
export const GRANULE_16K: GranuleShift = 14;
export const GRANULE_64K: GranuleShift = 16;

/** CD.TG0 and STE.S2TG: 0 → 4K, 1 → 64K, 2 → 16K, 3 reserved. */
export function granuleFromTg0(tg: number): GranuleShift | undefined {
  return tg === 0 ? 12 : tg === 1 ? 16 : tg === 2 ? 14 : undefined;
}

/** CD.TG1: 1 → 16K, 2 → 4K, 3 → 64K, 0 reserved. */
export function granuleFromTg1(tg: number): GranuleShift | undefined {
  return tg === 1 ? 14 : tg === 2 ? 12 : tg === 3 ? 16 : undefined;
}

/** TLBI command TG: 1 → 4K, 2 → 16K, 3 → 64K, 0 = not a range invalidation. */
export function granuleFromTlbiTg(tg: number): GranuleShift | undefined {
  return tg === 1 ? 12 : tg === 2 ? 14 : tg === 3 ? 16 : undefined;
}

/** Our level number for an ARM level, and back. */
export function levelFromArm(armLevel: number): number {
  return 4 - armLevel;
}
export function armLevelOf(level: number): number {
  return 4 - level;
}

/** The lowest input-address bit a table at `level` indexes: g + (level − 1)·(g − 3). */
export function vmsaLevelShift(granuleShift: GranuleShift, level: number): number {
  return granuleShift + (level - 1) * (granuleShift - 3);
}

/** The deepest level a granule's tables have: ARM level 0 (ours 4) for 4K/16K, ARM level 1 (ours 3) for 64K. */
export function vmsaMaxLevel(granuleShift: GranuleShift): number {
  return granuleShift === 16 ? 3 : 4;
}

/** Why a geometry cannot be built: the architecture's response (the CD or STE is ILLEGAL) and a reason. */
export interface GeometryFault {
  readonly ok: false;
  readonly fault: "C_BAD_CD" | "C_BAD_STE";
  readonly reason: string;
}

export type GeometryResult = { readonly ok: true; readonly geometry: TableGeometry } | GeometryFault;

function build(granuleShift: GranuleShift, inputBits: number, startLevel: number, outputBits: number | undefined): TableGeometry {
  const stride = granuleShift - 3;
  const levelShift: number[] = [0];
  const indexBits: number[] = [0];
  for (let level = 1; level <= startLevel; level++) {
    levelShift.push(vmsaLevelShift(granuleShift, level));
    indexBits.push(stride);
  }
  indexBits[startLevel] = inputBits - levelShift[startLevel]!;
  return outputBits === undefined ? { startLevel, levelShift, indexBits, inputBits } : { startLevel, levelShift, indexBits, inputBits, outputBits };
}

export interface Stage1Limits {
  /**
   * The effective output size (CD.IPS capped, see `effectiveOutputBits`), carried in the geometry so the walker
   * faults table and output addresses beyond it with AddressSize. Omitted: no limit in the geometry.
   */
  readonly outputBits?: number;
  /** IDR3.STT: small translation tables, T0SZ up to 48 (4K/16K) or 47 (64K). */
  readonly stt?: boolean;
  /** IDR5.VAX = 1: 52-bit VAs with the 64K granule, T0SZ down to 12. */
  readonly vax52?: boolean;
}

/** The T0SZ range a CD may use (IHI0070 CD.T0SZ): [min, max]. */
export function stage1TxszRange(granuleShift: GranuleShift, limits: Stage1Limits = {}): { readonly min: number; readonly max: number } {
  const min = limits.vax52 === true && granuleShift === 16 ? 12 : 16;
  const max = limits.stt === true ? (granuleShift === 16 ? 47 : 48) : 39;
  return { min, max };
}

/**
 * Stage-1 geometry for a CD's TTB0 (or TTB1 with T1SZ): input size 64 − T0SZ, start level
 * 4 − ceil((IA − g)/(g − 3)) in ARM numbering. A T0SZ outside the allowed range makes the CD ILLEGAL
 * (C_BAD_CD; SMMUv3.1 and later). Never throws.
 */
export function stage1Geometry(granuleShift: GranuleShift, t0sz: number, limits: Stage1Limits = {}): GeometryResult {
  const { min, max } = stage1TxszRange(granuleShift, limits);
  if (!Number.isInteger(t0sz) || t0sz < min || t0sz > max) {
    return { ok: false, fault: "C_BAD_CD", reason: `T0SZ ${t0sz} outside ${min}..${max} for the ${2 ** (granuleShift - 10)}K granule` };
  }
  const inputBits = 64 - t0sz;
  const levels = Math.ceil((inputBits - granuleShift) / (granuleShift - 3));
  return { ok: true, geometry: build(granuleShift, inputBits, levels, limits.outputBits) };
}

export interface Stage2Limits {
  /** The effective STE.S2PS (capped at OAS), carried in the geometry like Stage1Limits.outputBits. */
  readonly outputBits?: number;
  /** IDR3.STT: S2T0SZ up to 48 (4K/16K) or 47 (64K), and SL0 = 3 starts a 4K walk at ARM level 3. */
  readonly stt?: boolean;
  /** The SMMU's IPA size in bits (IAS); default 48. 52 is usable with the 64K granule only. */
  readonly ias?: number;
}

/**
 * Our start level for STE.S2SL0, or undefined for a reserved encoding: 4K: SL0 0/1/2 → ARM L2/L1/L0
 * (3 → L3 with STT); 16K/64K: SL0 0/1/2 → ARM L3/L2/L1.
 */
export function stage2StartLevel(granuleShift: GranuleShift, sl0: number, limits: Stage2Limits = {}): number | undefined {
  if (granuleShift === 12) {
    if (sl0 >= 0 && sl0 <= 2) return levelFromArm(2 - sl0);
    if (sl0 === 3 && limits.stt === true) return levelFromArm(3);
    return undefined;
  }
  if (sl0 >= 0 && sl0 <= 2) return levelFromArm(3 - sl0);
  return undefined;
}

/** The S2SL0 encoding of one of our start levels (inverse of `stage2StartLevel`), or undefined. */
export function stage2Sl0(granuleShift: GranuleShift, startLevel: number): number | undefined {
  const arm = armLevelOf(startLevel);
  const sl0 = granuleShift === 12 ? (arm === 3 ? 3 : 2 - arm) : 3 - arm;
  return sl0 >= 0 && sl0 <= 3 && (granuleShift === 12 || sl0 <= 2) ? sl0 : undefined;
}

/** The S2T0SZ range an STE may use: max 39 (STT: 48, or 47 for 64K), min 64 − min(IAS, 48 or 52 for 64K). */
export function stage2TxszRange(granuleShift: GranuleShift, limits: Stage2Limits = {}): { readonly min: number; readonly max: number } {
  const ias = Math.min(limits.ias ?? 48, granuleShift === 16 ? 52 : 48);
  const max = limits.stt === true ? (granuleShift === 16 ? 47 : 48) : 39;
  return { min: 64 - ias, max };
}

/**
 * Stage-2 geometry from (S2TG, S2T0SZ, S2SL0). The start level comes from SL0; the IPA bits left above that
 * level's shift are resolved by the start table, which may be up to 16 concatenated tables (stride + 4 bits).
 * An out-of-range S2T0SZ, a reserved SL0, or an SL0 inconsistent with S2T0SZ (fewer than 1 or more than
 * stride + 4 bits left for the start level) makes the STE ILLEGAL: C_BAD_STE. Never throws.
 */
export function stage2Geometry(granuleShift: GranuleShift, s2t0sz: number, sl0: number, limits: Stage2Limits = {}): GeometryResult {
  const { min, max } = stage2TxszRange(granuleShift, limits);
  if (!Number.isInteger(s2t0sz) || s2t0sz < min || s2t0sz > max) {
    return { ok: false, fault: "C_BAD_STE", reason: `S2T0SZ ${s2t0sz} outside ${min}..${max} for the ${2 ** (granuleShift - 10)}K granule` };
  }
  const startLevel = stage2StartLevel(granuleShift, sl0, limits);
  if (startLevel === undefined) return { ok: false, fault: "C_BAD_STE", reason: `S2SL0 ${sl0} is reserved for the ${2 ** (granuleShift - 10)}K granule` };
  const inputBits = 64 - s2t0sz;
  const stride = granuleShift - 3;
  const startBits = inputBits - vmsaLevelShift(granuleShift, startLevel);
  if (startBits < 1 || startBits > stride + 4) {
    return {
      ok: false,
      fault: "C_BAD_STE",
      reason: `S2SL0 ${sl0} (ARM level ${armLevelOf(startLevel)}) is inconsistent with S2T0SZ ${s2t0sz}: ${startBits} bits left for the start level`,
    };
  }
  return { ok: true, geometry: build(granuleShift, inputBits, startLevel, limits.outputBits) };
}

/** How many granule-sized tables the start level concatenates (1 when it is one table or smaller). */
export function startTableCount(geometry: TableGeometry, granuleShift: GranuleShift): number {
  const extra = geometry.indexBits[geometry.startLevel]! - (granuleShift - 3);
  return extra > 0 ? 2 ** extra : 1;
}

/** Bytes of the table at `level`: the start table may be smaller or concatenated; the others are one granule. */
export function vmsaTableBytes(geometry: TableGeometry, granuleShift: GranuleShift, level: number): number {
  if (level === geometry.startLevel) return Math.max(8, 2 ** (geometry.indexBits[level]! + 3));
  return 2 ** granuleShift;
}
