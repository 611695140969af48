import { decodeLayout, encodeLayout, hasReservedBits, type Fields, type Layout } from "@viommu/core";

/**
 * 32- and 64-bit register values to and from their declared fields. Register writes come from a guest, so
 * decoding accepts any value; encoding takes trusted values and throws RangeError for one that does not fit.
 */

export function decodeReg32<L extends Layout>(layout: L, value: number): Fields<L> {
  return decodeLayout(layout, Uint32Array.of(value >>> 0));
}

export function encodeReg32<L extends Layout>(layout: L, fields: Partial<Fields<L>>): number {
  return encodeLayout(layout, fields)[0]!;
}

/** True when the value sets bits the register's layout does not declare. */
export function reg32HasReservedBits(layout: Layout, value: number): boolean {
  return hasReservedBits(layout, Uint32Array.of(value >>> 0));
}

function halves(value: bigint): Uint32Array {
  const v = value & ((1n << 64n) - 1n);
  return Uint32Array.of(Number(v & 0xffffffffn), Number(v >> 32n));
}

export function decodeReg64<L extends Layout>(layout: L, value: bigint): Fields<L> {
  return decodeLayout(layout, halves(value));
}

export function encodeReg64<L extends Layout>(layout: L, fields: Partial<Fields<L>>): bigint {
  const raw = encodeLayout(layout, fields);
  return (BigInt(raw[1]!) << 32n) | BigInt(raw[0]!);
}

export function reg64HasReservedBits(layout: Layout, value: bigint): boolean {
  return hasReservedBits(layout, halves(value));
}

/** Bit `index` of a bitmap held as 32-bit register words, lowest first (error maps, interrupt masks). */
export function bitmapTest(words: ArrayLike<number>, index: number): boolean {
  const word = words[index >>> 5];
  return word !== undefined && ((word >>> (index & 31)) & 1) === 1;
}

/** Sets or clears bit `index` of a bitmap held as 32-bit words; out-of-range indexes are a caller bug. */
export function bitmapSet(words: Uint32Array, index: number, on = true): void {
  if (!Number.isInteger(index) || index < 0 || index >= words.length * 32) throw new RangeError(`bit ${index} outside a ${words.length * 32}-bit map`);
  const mask = 1 << (index & 31);
  words[index >>> 5] = (on ? words[index >>> 5]! | mask : words[index >>> 5]! & ~mask) >>> 0;
}
