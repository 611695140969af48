import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";
import { SteS1Fmt } from "./stream-table-entry.js";

/**
 * The 64-byte Context Descriptor and the level-1 CD descriptor (IHI0070 §5.3–5.4; spec
 * arm-hyperv-virtio.md §1.7). Bit positions are absolute within the 512-bit CD. MAIR and AMAIR are split into
 * their architectural 32-bit halves MAIR0/MAIR1 and AMAIR0/AMAIR1. Words 5–7 (IMPLEMENTATION DEFINED, MPAM
 * PARTID/PMG) are left undeclared; Linux writes them as zero.
 */
export const cdLayout = defineLayout("CD", 512, [
  // dw0
  { name: "T0SZ", bit: 0, width: 6 },
  { name: "TG0", bit: 6, width: 2 },
  { name: "IR0", bit: 8, width: 2 },
  { name: "OR0", bit: 10, width: 2 },
  { name: "SH0", bit: 12, width: 2 },
  { name: "EPD0", bit: 14, width: 1 },
  { name: "ENDI", bit: 15, width: 1 },
  { name: "T1SZ", bit: 16, width: 6 },
  { name: "TG1", bit: 22, width: 2 },
  { name: "IR1", bit: 24, width: 2 },
  { name: "OR1", bit: 26, width: 2 },
  { name: "SH1", bit: 28, width: 2 },
  { name: "EPD1", bit: 30, width: 1 },
  { name: "V", bit: 31, width: 1 },
  { name: "IPS", bit: 32, width: 3 },
  { name: "AFFD", bit: 35, width: 1 },
  { name: "WXN", bit: 36, width: 1 },
  { name: "UWXN", bit: 37, width: 1 },
  { name: "TBI", bit: 38, width: 2 },
  { name: "PAN", bit: 40, width: 1 },
  { name: "AA64", bit: 41, width: 1 },
  { name: "HD", bit: 42, width: 1 },
  { name: "HA", bit: 43, width: 1 },
  { name: "S", bit: 44, width: 1 },
  { name: "R", bit: 45, width: 1 },
  { name: "A", bit: 46, width: 1 },
  { name: "ASET", bit: 47, width: 1 },
  { name: "ASID", bit: 48, width: 16 },
  // dw1
  { name: "NSCFG0", bit: 64, width: 1 },
  { name: "HAD0", bit: 65, width: 1 },
  { name: "TTB0", bit: 68, width: 48, shift: 4 },
  { name: "HWU0g59", bit: 124, width: 1 },
  { name: "HWU0g60", bit: 125, width: 1 },
  { name: "HWU0g61", bit: 126, width: 1 },
  { name: "HWU0g62", bit: 127, width: 1 },
  // dw2
  { name: "NSCFG1", bit: 128, width: 1 },
  { name: "HAD1", bit: 129, width: 1 },
  { name: "TTB1", bit: 132, width: 48, shift: 4 },
  { name: "HWU1g59", bit: 188, width: 1 },
  { name: "HWU1g60", bit: 189, width: 1 },
  { name: "HWU1g61", bit: 190, width: 1 },
  { name: "HWU1g62", bit: 191, width: 1 },
  // dw3, dw4
  { name: "MAIR0", bit: 192, width: 32 },
  { name: "MAIR1", bit: 224, width: 32 },
  { name: "AMAIR0", bit: 256, width: 32 },
  { name: "AMAIR1", bit: 288, width: 32 },
] as const);

export type CdFields = Fields<typeof cdLayout>;

export function decodeCd(raw: RawBits): CdFields {
  return decodeLayout(cdLayout, raw);
}

export function encodeCd(fields: Partial<CdFields>): RawBits {
  return encodeLayout(cdLayout, fields);
}

/** CD.TG0 encodings (3 reserved). TG1 uses a different encoding: see `Tg1`. */
export const Tg0 = { Granule4K: 0, Granule64K: 1, Granule16K: 2 } as const;
/** CD.TG1 encodings (0 reserved). */
export const Tg1 = { Granule16K: 1, Granule4K: 2, Granule64K: 3 } as const;

/** The MAIR attribute byte AttrIndx selects (0..7) from a CD's MAIR0/MAIR1. */
export function mairAttribute(mair0: number, mair1: number, attrIndx: number): number {
  const word = attrIndx < 4 ? mair0 : mair1;
  return (word >>> ((attrIndx & 3) * 8)) & 0xff;
}

/** The level-1 CD descriptor (L1CD), 8 bytes, used with STE.S1Fmt 1 or 2. */
export const l1CdLayout = defineLayout("L1CD", 64, [
  { name: "V", bit: 0, width: 1 },
  { name: "L2Ptr", bit: 12, width: 40, shift: 12 },
] as const);

export const CD_BYTES = 64;
export const L1CD_BYTES = 8;

/**
 * Where the CD for `ssid` lives under an STE's CD table: for a linear table (S1Fmt 0, and the reserved 3 which
 * behaves as 0) the CD index; for 2-level tables the L1CD index and the CD index within the leaf table
 * (64 CDs per 4 KiB leaf for S1Fmt 1, 1024 per 64 KiB leaf for S1Fmt 2). Range checks against S1CDMax belong to
 * the caller (C_BAD_SUBSTREAMID).
 */
export type CdTableSlot =
  | { readonly twoLevel: false; readonly cdIndex: number }
  | { readonly twoLevel: true; readonly l1Index: number; readonly cdIndex: number };

export function cdTableSlot(s1fmt: number, ssid: number): CdTableSlot {
  if (s1fmt === SteS1Fmt.TwoLevel4K) return { twoLevel: true, l1Index: Math.floor(ssid / 64), cdIndex: ssid % 64 };
  if (s1fmt === SteS1Fmt.TwoLevel64K) return { twoLevel: true, l1Index: Math.floor(ssid / 1024), cdIndex: ssid % 1024 };
  return { twoLevel: false, cdIndex: ssid };
}
