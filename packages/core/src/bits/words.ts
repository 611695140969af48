/**
 * Hardware structures (descriptors, table entries, event records) are held as a `Uint32Array` of
 * little-endian 32-bit halves: element 0 holds bits 0..31, element 1 bits 32..63, and so on. That keeps
 * every structure width (64 to 512 bits) in one representation the hot paths can read without BigInt.
 * Specifications and the command line speak in 64-bit words, lowest first; these helpers convert at the edge.
 */

/** A structure's raw bits, 32 at a time, lowest first. */
export type RawBits = Uint32Array;

const U64_MASK = (1n << 64n) - 1n;

export function rawBits(bitCount: number): RawBits {
  if (!Number.isInteger(bitCount) || bitCount <= 0 || bitCount % 32 !== 0) {
    throw new RangeError(`structure width ${bitCount} is not a positive multiple of 32`);
  }
  return new Uint32Array(bitCount / 32);
}

/** Parses one 64-bit word given as hex text ("0x…" or bare hex) or bigint. */
export function parseWord64(word: string | bigint): bigint {
  let value: bigint;
  if (typeof word === "bigint") {
    value = word;
  } else {
    const text = word.trim().toLowerCase();
    const digits = text.startsWith("0x") ? text.slice(2) : text;
    if (!/^[0-9a-f]{1,16}$/.test(digits)) throw new RangeError(`not a 64-bit hex word: ${JSON.stringify(word)}`);
    value = BigInt(`0x${digits}`);
  }
  if (value < 0n || value > U64_MASK) throw new RangeError(`word out of 64-bit range: ${value}`);
  return value;
}

/** Builds raw bits from 64-bit words, lowest first; missing high words are zero. */
export function fromWords64(words: readonly (string | bigint)[], bitCount = words.length * 64): RawBits {
  const raw = rawBits(bitCount);
  if (words.length * 64 > bitCount) throw new RangeError(`${words.length} words do not fit in ${bitCount} bits`);
  words.forEach((word, i) => {
    const value = parseWord64(word);
    raw[2 * i] = Number(value & 0xffffffffn);
    raw[2 * i + 1] = Number(value >> 32n);
  });
  return raw;
}

/** The 64-bit words of raw bits, lowest first, as bigint. */
export function toWords64(raw: RawBits): bigint[] {
  const words: bigint[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    words.push((BigInt(raw[i + 1] ?? 0) << 32n) | BigInt(raw[i]!));
  }
  return words;
}

/** The 64-bit words of raw bits, lowest first, as zero-padded "0x…" text. */
export function toHex64(raw: RawBits): string[] {
  return toWords64(raw).map((w) => `0x${w.toString(16).padStart(16, "0")}`);
}

/** Copies `bitCount` bits of little-endian bytes into raw bits. */
export function fromBytes(bytes: Uint8Array, offset: number, bitCount: number): RawBits {
  const raw = rawBits(bitCount);
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, bitCount / 8);
  for (let i = 0; i < raw.length; i++) raw[i] = view.getUint32(i * 4, true);
  return raw;
}

/** Writes raw bits as little-endian bytes at `offset`. */
export function toBytes(raw: RawBits, into: Uint8Array = new Uint8Array(raw.length * 4), offset = 0): Uint8Array {
  const view = new DataView(into.buffer, into.byteOffset + offset, raw.length * 4);
  for (let i = 0; i < raw.length; i++) view.setUint32(i * 4, raw[i]!, true);
  return into;
}

export function rawEquals(a: RawBits, b: RawBits): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
