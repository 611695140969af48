/**
 * Address kinds never mix: an IOVA is what a device puts on the bus, a GPA what the guest believes is
 * physical (ARM calls it IPA), an HPA what the host's memory answers to. Branded numbers cost nothing at
 * run time. Every address is an integer below 2^53, so it stays an exact JS number; wider architectural
 * addresses are refused at the edges (as address-size faults by the vendors).
 */
declare const brand: unique symbol;

export type Iova = number & { readonly [brand]: "Iova" };
export type Gpa = number & { readonly [brand]: "Gpa" };
export type Hpa = number & { readonly [brand]: "Hpa" };
/** ARM's intermediate physical address is the guest physical address: one type, two names. */
export type Ipa = Gpa;

export const ADDRESS_LIMIT = 2 ** 53;

function checked(value: number, kind: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${kind} ${value} is not an integer in [0, 2^53)`);
  return value;
}

export function iova(value: number): Iova {
  return checked(value, "IOVA") as Iova;
}

export function gpa(value: number): Gpa {
  return checked(value, "GPA") as Gpa;
}

export function hpa(value: number): Hpa {
  return checked(value, "HPA") as Hpa;
}

export function isAddress(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

/** `a + n` of the same kind, or undefined when it would leave [0, 2^53). */
export function checkedAdd<A extends number>(a: A, n: number): A | undefined {
  const sum = a + n;
  return Number.isSafeInteger(sum) && sum >= 0 ? (sum as A) : undefined;
}

/** The last address of [start, start + length), or undefined when the range is empty or overflows. */
export function rangeLast<A extends number>(start: A, length: number): A | undefined {
  if (!Number.isSafeInteger(length) || length <= 0) return undefined;
  return checkedAdd(start, length - 1);
}

export function alignDown<A extends number>(a: A, shift: number): A {
  const size = 2 ** shift;
  return (a - (a % size)) as A;
}

export function alignUp<A extends number>(a: A, shift: number): A | undefined {
  const size = 2 ** shift;
  const rem = a % size;
  return rem === 0 ? a : checkedAdd(a, size - rem);
}

export function isAligned(a: number, shift: number): boolean {
  return a % 2 ** shift === 0;
}

/** Whether [aStart, aStart+aLen) and [bStart, bStart+bLen) share any address. */
export function rangesOverlap(aStart: number, aLen: number, bStart: number, bLen: number): boolean {
  return aStart < bStart + bLen && bStart < aStart + aLen;
}

export function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}
