import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";

/**
 * Capability register CAP_REG (MMIO offset 0x08, 64-bit, read-only). Intel VT-d spec §11.4.2; bit positions
 * as in ../shared/spec/x86.md A2, cross-checked with Linux `cap_*` accessors (drivers/iommu/intel/iommu.h)
 * and VirtualBox `VTD_BF_CAP_REG_*` (include/VBox/iommu-intel.h). Bits 15:13, 38, 58:57 and 61 are reserved.
 */
export const capLayout = defineLayout("CAP_REG", 64, [
  /** Number of domain ids: 2^(4 + 2·ND). */
  { name: "ND", bit: 0, width: 3 },
  { name: "AFL", bit: 3, width: 1 },
  { name: "RWBF", bit: 4, width: 1 },
  { name: "PLMR", bit: 5, width: 1 },
  { name: "PHMR", bit: 6, width: 1 },
  /** Caching mode: not-present entries may be cached, so software invalidates after map operations too. */
  { name: "CM", bit: 7, width: 1 },
  /** Bitmap: field bit 1 = 39-bit/3-level, bit 2 = 48-bit/4-level, bit 3 = 57-bit/5-level. */
  { name: "SAGAW", bit: 8, width: 5 },
  /** Maximum guest address width − 1. */
  { name: "MGAW", bit: 16, width: 6 },
  { name: "ZLR", bit: 22, width: 1 },
  /** Isochrony. Linux still names it (cap_isoch); VT-d 3.x marks the bit deprecated (reads 0). */
  { name: "ISOCH", bit: 23, width: 1 },
  /** Fault-recording register offset, in 16-byte units. */
  { name: "FRO", bit: 24, width: 10 },
  /** Second-level large pages: bit 0 = 2 MiB, bit 1 = 1 GiB (bits 2 and 3: 512 GiB / 1 TiB, unused since VT-d 3.x). */
  { name: "SLLPS", bit: 34, width: 4 },
  { name: "PSI", bit: 39, width: 1 },
  /** Number of fault-recording registers − 1. */
  { name: "NFR", bit: 40, width: 8 },
  { name: "MAMV", bit: 48, width: 6 },
  { name: "DWD", bit: 54, width: 1 },
  { name: "DRD", bit: 55, width: 1 },
  /** First-level 1 GiB pages (newer specs: FS1GP). */
  { name: "FL1GP", bit: 56, width: 1 },
  { name: "PI", bit: 59, width: 1 },
  /** First-level 5-level paging. */
  { name: "FL5LP", bit: 60, width: 1 },
  { name: "ECMDS", bit: 61, width: 1 },
  { name: "ESIRTPS", bit: 62, width: 1 },
  { name: "ESRTPS", bit: 63, width: 1 },
] as const);

export type CapFields = Fields<typeof capLayout>;

export function decodeCap(raw: RawBits): CapFields {
  return decodeLayout(capLayout, raw);
}

export function encodeCap(fields: Partial<CapFields>): RawBits {
  return encodeLayout(capLayout, fields);
}

/** SLLPS bit meaning 2 MiB second-level pages. */
export const SLLPS_2M = 0x1;
/** SLLPS bit meaning 1 GiB second-level pages. */
export const SLLPS_1G = 0x2;

/** Number of domain ids the unit supports (CAP.ND). ND = 7 is reserved; it reports 2^18 like the formula. */
export function capDomainCount(nd: number): number {
  return 2 ** (4 + 2 * nd);
}

/** Whether CAP.SAGAW lists a `levels`-level (3, 4 or 5) second-level table. */
export function capSupportsLevels(sagaw: number, levels: number): boolean {
  return levels >= 2 && levels <= 6 && ((sagaw >>> (levels - 2)) & 1) === 1;
}

/** The SAGAW bitmap for the given table depths. */
export function sagawFor(levels: readonly number[]): number {
  let sagaw = 0;
  for (const l of levels) sagaw |= 1 << (l - 2);
  return sagaw;
}

/** Byte offset of fault-recording register `n` (CAP.FRO × 16 + 16n). */
export function faultRecordOffset(fro: number, n: number): number {
  return fro * 16 + 16 * n;
}

/** The maximum guest address width in bits (CAP.MGAW + 1). */
export function capMgawBits(mgaw: number): number {
  return mgaw + 1;
}
