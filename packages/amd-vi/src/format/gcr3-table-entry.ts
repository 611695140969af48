import { address64, defineLayout } from "@viommu/core";

function checkRoot(address: number): void {
  if (!Number.isSafeInteger(address) || address < 0 || address >= 2 ** 52 || address % 4096 !== 0) {
    throw new RangeError(`GCR3 root 0x${address.toString(16)} is not a 4 KiB-aligned address below 2^52`);
  }
}

/**
 * GCR3 table entry (spec x86.md B4.2; Linux GCR3_VALID and __set_gcr3): [0] V (GCR3_VALID), [51:12] the
 * guest CR3 (v2 table root) in a leaf GCR3 table, or the next GCR3 table when GLX > 0.
 */
export const gcr3EntryLayout = defineLayout("GCR3Entry", 64, [
  { name: "V", bit: 0, width: 1 },
  { name: "GCR3", bit: 12, width: 40, shift: 12 },
] as const);

/** GCR3 tables are GLX + 1 levels of 512 entries, indexed 9 PASID bits at a time (Linux __get_gcr3_pte). */
export function gcr3TableLevels(glx: number): number {
  return glx + 1;
}

/** Index into the GCR3 table at `level` (0 = the table holding guest CR3 values) for `pasid`. */
export function gcr3Index(pasid: number, level: number): number {
  return Math.floor(pasid / 2 ** (9 * level)) & 0x1ff;
}

/** The GCR3 entry Linux writes for a guest CR3 root (a 4 KiB-aligned table address). */
export function encodeGcr3Entry(root: number, out: Uint32Array): void {
  checkRoot(root);
  out[0] = ((root % 0x1_0000_0000) | 1) >>> 0;
  out[1] = Math.floor(root / 0x1_0000_0000) >>> 0;
}

/** The root a GCR3 entry holds, or undefined when V = 0. */
export function decodeGcr3Entry(lo: number, hi: number): number | undefined {
  return (lo & 1) === 0 ? undefined : address64(lo, hi, 12, 51);
}
