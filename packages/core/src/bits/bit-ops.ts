import type { RawBits } from "./words.js";

/**
 * Bit extraction and insertion on raw bits without BigInt. Values up to 53 bits are exact JS numbers;
 * wider fields go through the `…Big` variants. These run on hot paths (page walks, queue consume), so they
 * allocate nothing.
 */

export const MAX_NUMBER_BITS = 53;

/** 2^i for i in 0..63: on hot paths a table lookup is far cheaper than `**` with a variable exponent. */
export const POW2: Float64Array = Float64Array.from({ length: 64 }, (_, i) => 2 ** i);
const TWO_32 = 0x1_0000_0000;

function checkSpan(raw: RawBits, bit: number, width: number, max: number): void {
  if (width < 1 || width > max || bit < 0 || bit + width > raw.length * 32) {
    throw new RangeError(`bits [${bit + width - 1}:${bit}] outside a ${raw.length * 32}-bit structure (max width ${max})`);
  }
}

/** Reads `width` (1..53) bits starting at `bit`. */
export function getBits(raw: RawBits, bit: number, width: number): number {
  checkSpan(raw, bit, width, MAX_NUMBER_BITS);
  const index = bit >>> 5;
  const offset = bit & 31;
  // Within one 32-bit word (most fields): one shift and mask, no loop.
  if (offset + width <= 32) return width === 32 ? raw[index]! >>> 0 : ((raw[index]! >>> offset) & (POW2[width]! - 1)) >>> 0;
  let value = 0;
  let scale = 1;
  let pos = bit;
  let left = width;
  while (left > 0) {
    const index = pos >>> 5;
    const offset = pos & 31;
    const take = Math.min(32 - offset, left);
    const chunk = take === 32 ? raw[index]! : (raw[index]! >>> offset) & ((1 << take) - 1) >>> 0;
    value += (chunk >>> 0) * scale;
    scale *= 2 ** take;
    pos += take;
    left -= take;
  }
  return value;
}

/** Writes `width` (1..53) bits starting at `bit`; the value must fit. */
export function setBits(raw: RawBits, bit: number, width: number, value: number): void {
  checkSpan(raw, bit, width, MAX_NUMBER_BITS);
  if (!Number.isInteger(value) || value < 0 || value >= POW2[width]!) {
    throw new RangeError(`value ${value} does not fit in ${width} bits`);
  }
  const offset = bit & 31;
  // Within one 32-bit word (most fields): one masked write, no loop.
  if (offset + width <= 32) {
    const index = bit >>> 5;
    const mask = width === 32 ? 0xffffffff : ((POW2[width]! - 1) * POW2[offset]!) >>> 0;
    raw[index] = ((raw[index]! & ~mask) | ((value * POW2[offset]!) & mask)) >>> 0;
    return;
  }
  let pos = bit;
  let left = width;
  let rest = value;
  while (left > 0) {
    const index = pos >>> 5;
    const offset = pos & 31;
    const take = Math.min(32 - offset, left);
    const span = 2 ** take;
    const chunk = rest % span;
    rest = Math.floor(rest / span);
    const mask = take === 32 ? 0xffffffff : ((1 << take) - 1) << offset;
    raw[index] = ((raw[index]! & ~mask) | ((chunk << offset) & mask)) >>> 0;
    pos += take;
    left -= take;
  }
}

/** Reads any width as bigint (edges only). */
export function getBitsBig(raw: RawBits, bit: number, width: number): bigint {
  checkSpan(raw, bit, width, raw.length * 32);
  let value = 0n;
  for (let i = width - 1; i >= 0; i--) {
    const pos = bit + i;
    value = (value << 1n) | BigInt((raw[pos >>> 5]! >>> (pos & 31)) & 1);
  }
  return value;
}

/** Writes any width from a bigint (edges only); the value must fit. */
export function setBitsBig(raw: RawBits, bit: number, width: number, value: bigint): void {
  checkSpan(raw, bit, width, raw.length * 32);
  if (value < 0n || value >> BigInt(width) !== 0n) throw new RangeError(`value ${value} does not fit in ${width} bits`);
  for (let i = 0; i < width; i++) {
    const pos = bit + i;
    const one = Number((value >> BigInt(i)) & 1n);
    const index = pos >>> 5;
    const mask = 1 << (pos & 31);
    raw[index] = (one ? raw[index]! | mask : raw[index]! & ~mask) >>> 0;
  }
}

/**
 * Reads bits [bit, bit+width) of a 64-bit value given as its two 32-bit halves. For page-table entries
 * read from memory as (lo, hi) without building a RawBits. Width up to 53.
 */
export function bits64(lo: number, hi: number, bit: number, width: number): number {
  if (bit >= 32) return width >= 32 ? hi >>> (bit - 32) : (hi >>> (bit - 32)) & (2 ** width - 1);
  const loPart = lo >>> bit;
  const loWidth = 32 - bit;
  if (width <= loWidth) return width === 32 ? loPart >>> 0 : loPart & (2 ** width - 1);
  const hiWidth = width - loWidth;
  const hiPart = hiWidth >= 32 ? hi >>> 0 : hi & (2 ** hiWidth - 1);
  return (loPart >>> 0) + hiPart * 2 ** loWidth;
}

/** Bit `bit` (0..63) of a 64-bit value given as halves. */
export function bit64(lo: number, hi: number, bit: number): boolean {
  return bit < 32 ? ((lo >>> bit) & 1) === 1 : ((hi >>> (bit - 32)) & 1) === 1;
}

/**
 * The address held in bits [lowBit, highBit] of a 64-bit value given as halves, in place (the bits keep
 * their weight, lower bits zero). highBit is at most 52 so the result is an exact number.
 */
export function address64(lo: number, hi: number, lowBit: number, highBit: number): number {
  const loHigh = highBit >= 31 ? 0xffffffff : (2 ** (highBit + 1) - 1) >>> 0;
  const loPart = lowBit >= 32 ? 0 : (lo & ((0xffffffff << lowBit) >>> 0) & loHigh) >>> 0;
  const hiBits = highBit - 31;
  let hiPart = hiBits <= 0 ? 0 : (hi & (hiBits >= 32 ? 0xffffffff : (1 << hiBits) - 1)) >>> 0;
  if (lowBit > 32) hiPart = (hiPart & ~((1 << (lowBit - 32)) - 1)) >>> 0;
  return loPart + hiPart * TWO_32;
}

/** Splits a non-negative integer below 2^53 into 32-bit halves, writing them into `out[0]`, `out[1]`. */
export function splitHalves(value: number, out: Uint32Array | number[], at = 0): void {
  out[at] = value >>> 0;
  out[at + 1] = Math.floor(value / TWO_32) >>> 0;
}

/** Joins 32-bit halves into a number; exact while hi < 2^21. */
export function joinHalves(lo: number, hi: number): number {
  return (hi >>> 0) * TWO_32 + (lo >>> 0);
}
