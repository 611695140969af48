import { MAX_NUMBER_BITS, getBits, getBitsBig, setBits, setBitsBig } from "./bit-ops.js";
import { rawBits, type RawBits } from "./words.js";

/**
 * One field of a hardware structure, with the specification's own name and bit position.
 *
 * Number or bigint, on purpose: a field whose decoded value can exceed 2^53 (width + shift > 53) must be
 * declared `big: true` and decodes to a bigint; every other field decodes to a number. `defineLayout`
 * enforces this, so the choice is visible in the layout table and nowhere else.
 */
export interface FieldSpec {
  readonly name: string;
  /** Least significant bit of the field within the structure. */
  readonly bit: number;
  readonly width: number;
  /**
   * The decoded value is the raw field times 2^shift: an address stored without its low bits
   * (e.g. ADDR[51:12] declared with shift 12 decodes to the address itself).
   */
  readonly shift?: number;
  readonly big?: true;
}

export type FieldValue<F extends FieldSpec> = F extends { readonly big: true } ? bigint : number;

/** The decoded record of a layout: every field by name. */
export type Fields<L extends Layout> = {
  [F in L["fields"][number] as F["name"]]: FieldValue<F>;
};

export interface Layout<Fs extends readonly FieldSpec[] = readonly FieldSpec[]> {
  /** The specification's name of the structure. */
  readonly name: string;
  readonly bits: number;
  readonly fields: Fs;
  /** Bits covered by no field (reserved), as raw bits. */
  readonly reservedMask: RawBits;
  /** Looks a field up by name; throws for an unknown name (a bug, not input). */
  field(name: Fs[number]["name"]): FieldSpec;
}

/** Declares a structure layout as data. Throws on overlapping or out-of-range fields (a bug in the table). */
export function defineLayout<const Fs extends readonly FieldSpec[]>(name: string, bits: number, fields: Fs): Layout<Fs> {
  const covered = rawBits(bits);
  const byName = new Map<string, FieldSpec>();
  for (const f of fields) {
    if (byName.has(f.name)) throw new Error(`${name}: duplicate field ${f.name}`);
    byName.set(f.name, f);
    if (!Number.isInteger(f.bit) || !Number.isInteger(f.width) || f.width < 1 || f.bit < 0 || f.bit + f.width > bits) {
      throw new Error(`${name}.${f.name}: bits [${f.bit + f.width - 1}:${f.bit}] outside ${bits} bits`);
    }
    const valueBits = f.width + (f.shift ?? 0);
    if ((valueBits > MAX_NUMBER_BITS) !== (f.big === true)) {
      throw new Error(`${name}.${f.name}: ${valueBits}-bit value must ${f.big ? "not " : ""}be declared big`);
    }
    for (let b = f.bit; b < f.bit + f.width; b++) {
      const index = b >>> 5;
      const mask = 1 << (b & 31);
      if (covered[index]! & mask) throw new Error(`${name}.${f.name}: overlaps another field at bit ${b}`);
      covered[index] = (covered[index]! | mask) >>> 0;
    }
  }
  const reservedMask = covered.map((w) => ~w >>> 0);
  return {
    name,
    bits,
    fields,
    reservedMask,
    field(fieldName: string): FieldSpec {
      const f = byName.get(fieldName);
      if (!f) throw new Error(`${name}: no field ${fieldName}`);
      return f;
    },
  };
}

/** Reads one field's decoded value. */
export function readField(raw: RawBits, f: FieldSpec): number | bigint {
  const shift = f.shift ?? 0;
  if (f.big) return getBitsBig(raw, f.bit, f.width) << BigInt(shift);
  return getBits(raw, f.bit, f.width) * 2 ** shift;
}

/** Writes one field's decoded value; throws if it does not fit or is misaligned for a shifted field. */
export function writeField(raw: RawBits, f: FieldSpec, value: number | bigint): void {
  const shift = f.shift ?? 0;
  if (f.big) {
    const v = BigInt(value);
    const lowMask = (1n << BigInt(shift)) - 1n;
    if (v & lowMask) throw new RangeError(`${f.name}: ${v} is not aligned to 2^${shift}`);
    setBitsBig(raw, f.bit, f.width, v >> BigInt(shift));
    return;
  }
  if (typeof value === "bigint") {
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`${f.name}: ${value} does not fit`);
    value = Number(value);
  }
  const scale = 2 ** shift;
  if (value % scale !== 0) throw new RangeError(`${f.name}: ${value} is not aligned to 2^${shift}`);
  setBits(raw, f.bit, f.width, value / scale);
}

/** Decodes every field of a layout. The raw bits must be exactly the layout's width. */
export function decodeLayout<L extends Layout>(layout: L, raw: RawBits): Fields<L> {
  if (raw.length * 32 !== layout.bits) {
    throw new RangeError(`${layout.name}: expected ${layout.bits} bits, got ${raw.length * 32}`);
  }
  const out: Record<string, number | bigint> = {};
  for (const f of layout.fields) out[f.name] = readField(raw, f);
  return out as Fields<L>;
}

/**
 * Decodes every field into an existing record, for queue consumers that decode one entry after another:
 * number fields allocate nothing (bigint fields still do, by nature).
 */
export function decodeLayoutInto<L extends Layout>(layout: L, raw: RawBits, out: Fields<L>): Fields<L> {
  const record = out as Record<string, number | bigint>;
  for (const f of layout.fields) record[f.name] = readField(raw, f);
  return out;
}

/** Encodes the given fields (others zero). Throws on a value that does not fit: callers pass trusted values. */
export function encodeLayout<L extends Layout>(layout: L, values: Partial<Fields<L>>, into: RawBits = rawBits(layout.bits)): RawBits {
  const record = values as Record<string, number | bigint | undefined>;
  for (const key of Object.keys(record)) {
    const v = record[key];
    if (v === undefined) continue;
    writeField(into, layout.field(key), v);
  }
  return into;
}

/** True when any bit outside the layout's fields is set. */
export function hasReservedBits(layout: Layout, raw: RawBits): boolean {
  for (let i = 0; i < raw.length; i++) if ((raw[i]! & layout.reservedMask[i]!) !== 0) return true;
  return false;
}
