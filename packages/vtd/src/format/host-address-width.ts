/**
 * Host address width (HAW): the unit's physical address width. Every address field that ends at bit 63 of
 * its 64-bit word (table pointers, page addresses) treats the bits at and above HAW as reserved. Checked on
 * 32-bit halves so hot paths can use it without BigInt.
 */

/** The widest HAW the formats allow: address fields stop at bit 51 in page-table entries. */
export const MAX_HAW = 52;

/** Mask halves selecting bits [63:haw] of a 64-bit word. `haw` is clamped to 1..64. */
export function aboveHawMask(haw: number): { readonly lo: number; readonly hi: number } {
  const w = Math.max(1, Math.min(64, Math.floor(haw)));
  if (w >= 64) return { lo: 0, hi: 0 };
  if (w >= 32) return { lo: 0, hi: (0xffffffff << (w - 32)) >>> 0 };
  return { lo: (0xffffffff << w) >>> 0, hi: 0xffffffff };
}

/** Whether the 64-bit word (lo, hi) has any bit at or above `haw` set. */
export function hasBitsAboveHaw(lo: number, hi: number, haw: number): boolean {
  const m = aboveHawMask(haw);
  return ((lo & m.lo) | (hi & m.hi)) !== 0;
}

/** Bits [63:haw] as a bigint mask (construction-time tables, never hot paths). */
export function aboveHawMaskBig(haw: number): bigint {
  const m = aboveHawMask(haw);
  return (BigInt(m.hi) << 32n) | BigInt(m.lo);
}

/**
 * Throws RangeError for an address an encoder must not write: not 2^alignShift aligned, or at or above HAW
 * (encoders take trusted input, so this catches bugs; decoders never throw).
 */
export function assertTableAddress(address: number, alignShift: number, haw: number): void {
  if (!Number.isSafeInteger(address) || address < 0 || address % 2 ** alignShift !== 0 || address >= 2 ** Math.min(haw, MAX_HAW)) {
    throw new RangeError(`address 0x${address.toString(16)} is not 2^${alignShift}-aligned below 2^${haw}`);
  }
}
