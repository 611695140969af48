import { decodeLayout, fromWords64, toWords64, type Layout, type RawBits } from "@viommu/core";

/**
 * Small glue between core's layout codec and this package's structures. A decoded record is kept as a
 * plain string-keyed record so structure decoders can add the few derived values (a split address put
 * back together) the command line shows next to the raw fields.
 */
export type FieldRecord = Record<string, number | bigint>;

/** Every field of `layout` read from `raw`, as a plain record (the raw bits must be the layout's width). */
export function fieldRecord(layout: Layout, raw: RawBits): FieldRecord {
  return decodeLayout(layout, raw) as FieldRecord;
}

/** A 64-bit register value given as bigint, as raw bits. */
export function rawFromU64(value: bigint): RawBits {
  return fromWords64([value]);
}

/** Raw bits of a 64-bit register as one bigint (edge use only). */
export function u64FromRaw(raw: RawBits): bigint {
  return toWords64(raw)[0]!;
}

/** Count of trailing zero bits of a 32-bit value (32 for zero). */
export function ctz32(x: number): number {
  if (x === 0) return 32;
  return 31 - Math.clz32(x & -x);
}

/**
 * The position of the lowest 0 bit at or above bit 12 of a 64-bit value given as halves, or 64 when bits
 * 63:12 are all ones. AMD-Vi encodes both the NextLevel=7 page size and the S=1 invalidation size this
 * way: the run of 1s that starts at bit 12 says how large the naturally aligned block is.
 */
export function firstZeroAtOrAbove12(lo: number, hi: number): number {
  const loZeros = (~lo >>> 12) & 0xfffff;
  if (loZeros !== 0) return 12 + ctz32(loZeros);
  const hiZeros = ~hi >>> 0;
  if (hiZeros !== 0) return 32 + ctz32(hiZeros);
  return 64;
}
