import { decodeLayout, encodeLayout, hasReservedBits, rawBits, type Fields, type Layout } from "@viommu/core";

/**
 * Hyper-V hypercall parameters are C structures at byte offsets in a 4 KiB guest page (packed, little-endian),
 * not bit-level descriptors. A `ByteLayout` declares one such structure as data: each field a name (the Linux
 * header's member name), a byte offset and a codec. Bit fields inside a member (flags words, ids) reuse core's
 * bit `Layout` through the `bits` codec, so every bit position stays declared as data too.
 *
 * Numbers vs bigint: a `u64` member decodes to bigint (partition ids, device ids and GPAs use all 64 bits,
 * e.g. HV_PARTITION_ID_SELF = 2^64 − 1); u8/u16/u32 members and bit fields up to 53 bits decode to numbers.
 */

/** A flat field record, as `viommu decode` prints it: nested member names joined with ".". */
export type FlatValue = number | bigint | boolean | string;
export type FlatFields = Record<string, FlatValue>;

/** How one member is read from and written to bytes. `I` is what encoding accepts (partial for structures). */
export interface ByteCodec<T, I = T> {
  readonly size: number;
  read(view: DataView, offset: number): T;
  /** Writes a trusted value; throws RangeError when it does not fit (a caller bug, never guest input). */
  write(view: DataView, offset: number, value: I): void;
  /** Adds the member's decoded fields to `out` under `prefix`. */
  flatten(value: T, prefix: string, out: FlatFields): void;
  /** Why these bytes are malformed (reserved bits set), or undefined. Never throws for in-bounds bytes. */
  problem(view: DataView, offset: number): string | undefined;
}

// Method parameters are bivariant, so any codec is assignable to this constraint.
export type AnyByteCodec = ByteCodec<unknown, never>;
export type CodecValue<C> = C extends ByteCodec<infer T, infer _I> ? T : never;
export type CodecInit<C> = C extends ByteCodec<infer _T, infer I> ? I : never;

export interface ByteField<C extends AnyByteCodec = AnyByteCodec> {
  readonly name: string;
  readonly offset: number;
  readonly codec: C;
  /** A reserved / padding member: must read as zero in guest input. */
  readonly reserved?: true;
  /** Another view of bytes an earlier member already covers (a C union); exempt from the overlap check. */
  readonly union?: true;
}

export interface ByteLayout<Fs extends readonly ByteField[] = readonly ByteField[]> {
  /** The Linux header's structure name. */
  readonly name: string;
  readonly size: number;
  readonly fields: Fs;
}

export type ByteFields<B extends ByteLayout> = {
  [F in B["fields"][number] as F["name"]]: CodecValue<F["codec"]>;
};

/** What encoding accepts: any subset of members, nested structures partial too; missing members are zero. */
export type ByteInit<B extends ByteLayout> = {
  [F in B["fields"][number] as F["name"]]?: CodecInit<F["codec"]>;
};

function join(prefix: string, name: string): string {
  return prefix === "" ? name : `${prefix}.${name}`;
}

function scalarCodec(size: 1 | 2 | 4): ByteCodec<number> {
  return {
    size,
    read(view, offset): number {
      return size === 1 ? view.getUint8(offset) : size === 2 ? view.getUint16(offset, true) : view.getUint32(offset, true);
    },
    write(view, offset, value): void {
      if (!Number.isInteger(value) || value < 0 || value >= 2 ** (8 * size)) throw new RangeError(`${value} does not fit ${size} bytes`);
      if (size === 1) view.setUint8(offset, value);
      else if (size === 2) view.setUint16(offset, value, true);
      else view.setUint32(offset, value, true);
    },
    flatten(value, prefix, out): void {
      out[prefix] = value;
    },
    problem(): undefined {
      return undefined;
    },
  };
}

export const u8: ByteCodec<number> = scalarCodec(1);
export const u16: ByteCodec<number> = scalarCodec(2);
export const u32: ByteCodec<number> = scalarCodec(4);

export const u64: ByteCodec<bigint, bigint | number> = {
  size: 8,
  read(view, offset): bigint {
    return view.getBigUint64(offset, true);
  },
  write(view, offset, value): void {
    const v = BigInt(value);
    if (v < 0n || v >= 1n << 64n) throw new RangeError(`${value} does not fit 8 bytes`);
    view.setBigUint64(offset, v, true);
  },
  flatten(value, prefix, out): void {
    out[prefix] = value;
  },
  problem(): undefined {
    return undefined;
  },
};

/** `n` reserved bytes (a C `u8 padding[n]`, n ≤ 8), read as one little-endian bigint. */
export function padding(n: number): ByteCodec<bigint, bigint | number> {
  if (!Number.isInteger(n) || n < 1 || n > 8) throw new RangeError(`padding of ${n} bytes`);
  return {
    size: n,
    read(view, offset): bigint {
      let v = 0n;
      for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(view.getUint8(offset + i));
      return v;
    },
    write(view, offset, value): void {
      let rest = BigInt(value);
      if (rest < 0n || rest >= 1n << BigInt(8 * n)) throw new RangeError(`${value} does not fit ${n} bytes`);
      for (let i = 0; i < n; i++) {
        view.setUint8(offset + i, Number(rest & 0xffn));
        rest >>= 8n;
      }
    },
    flatten(value, prefix, out): void {
      out[prefix] = value;
    },
    problem(): undefined {
      return undefined;
    },
  };
}

/**
 * A member of `size` bytes holding bit fields declared by a core bit `Layout` (32 bits wide for members up to 4
 * bytes, 64 for 8-byte members). Shorter members are zero-extended, so the layout's reserved mask covers exactly
 * the member's undeclared bits.
 */
export function bits<L extends Layout>(layout: L, size: 1 | 2 | 4 | 8): ByteCodec<Fields<L>, Partial<Fields<L>>> {
  if (layout.bits !== (size === 8 ? 64 : 32)) throw new Error(`${layout.name}: a ${size}-byte member needs a ${size === 8 ? 64 : 32}-bit layout`);
  for (const f of layout.fields) {
    if (f.bit + f.width > size * 8) throw new Error(`${layout.name}.${f.name} lies outside a ${size}-byte member`);
  }
  const load = (view: DataView, offset: number): Uint32Array => {
    const raw = rawBits(layout.bits);
    if (size === 1) raw[0] = view.getUint8(offset);
    else if (size === 2) raw[0] = view.getUint16(offset, true);
    else raw[0] = view.getUint32(offset, true);
    if (size === 8) raw[1] = view.getUint32(offset + 4, true);
    return raw;
  };
  return {
    size,
    read(view, offset): Fields<L> {
      return decodeLayout(layout, load(view, offset));
    },
    write(view, offset, value): void {
      const raw = encodeLayout(layout, value);
      if (size === 1) view.setUint8(offset, raw[0]!);
      else if (size === 2) view.setUint16(offset, raw[0]!, true);
      else view.setUint32(offset, raw[0]!, true);
      if (size === 8) view.setUint32(offset + 4, raw[1]!, true);
    },
    flatten(value, prefix, out): void {
      for (const [k, v] of Object.entries(value as Record<string, number | bigint>)) out[join(prefix, k)] = v;
    },
    problem(view, offset): string | undefined {
      return hasReservedBits(layout, load(view, offset)) ? `${layout.name}: reserved bits set` : undefined;
    },
  };
}

/** A nested structure member. */
export function struct<B extends ByteLayout>(layout: B): ByteCodec<ByteFields<B>, ByteInit<B>> {
  return {
    size: layout.size,
    read(view, offset): ByteFields<B> {
      return readFields(layout, view, offset);
    },
    write(view, offset, value): void {
      writeFields(layout, view, offset, value);
    },
    flatten(value, prefix, out): void {
      flattenFields(layout, value, prefix, out);
    },
    problem(view, offset): string | undefined {
      return fieldsProblem(layout, view, offset);
    },
  };
}

/** Declares a byte structure as data. Throws on a member outside the structure or overlapping another (a table bug). */
export function defineByteLayout<const Fs extends readonly ByteField[]>(name: string, size: number, fields: Fs): ByteLayout<Fs> {
  const covered = new Uint8Array(size);
  const names = new Set<string>();
  for (const f of fields) {
    if (names.has(f.name)) throw new Error(`${name}: duplicate member ${f.name}`);
    names.add(f.name);
    if (!Number.isInteger(f.offset) || f.offset < 0 || f.offset + f.codec.size > size) {
      throw new Error(`${name}.${f.name}: bytes [${f.offset}, ${f.offset + f.codec.size}) outside ${size} bytes`);
    }
    if (f.union) continue;
    for (let b = f.offset; b < f.offset + f.codec.size; b++) {
      if (covered[b]) throw new Error(`${name}.${f.name}: overlaps another member at byte ${b}`);
      covered[b] = 1;
    }
  }
  return { name, size, fields };
}

function readFields<B extends ByteLayout>(layout: B, view: DataView, base: number): ByteFields<B> {
  const out: Record<string, unknown> = {};
  for (const f of layout.fields) out[f.name] = f.codec.read(view, base + f.offset);
  return out as ByteFields<B>;
}

function writeFields<B extends ByteLayout>(layout: B, view: DataView, base: number, values: ByteInit<B>): void {
  const record = values as Record<string, unknown>;
  const known = new Set(layout.fields.map((f) => f.name));
  for (const key of Object.keys(record)) if (!known.has(key)) throw new RangeError(`${layout.name}: no member ${key}`);
  for (const f of layout.fields) {
    const v = record[f.name];
    if (v === undefined) continue;
    (f.codec as ByteCodec<unknown, unknown>).write(view, base + f.offset, v);
  }
}

function flattenFields<B extends ByteLayout>(layout: B, value: ByteFields<B>, prefix: string, out: FlatFields): void {
  const record = value as Record<string, unknown>;
  for (const f of layout.fields) (f.codec as ByteCodec<unknown, unknown>).flatten(record[f.name], join(prefix, f.name), out);
}

function isZero(view: DataView, offset: number, size: number): boolean {
  for (let i = 0; i < size; i++) if (view.getUint8(offset + i) !== 0) return false;
  return true;
}

function fieldsProblem(layout: ByteLayout, view: DataView, base: number): string | undefined {
  for (const f of layout.fields) {
    if (f.reserved) {
      if (!isZero(view, base + f.offset, f.codec.size)) return `${layout.name}.${f.name}: reserved member is not zero`;
      continue;
    }
    const p = f.codec.problem(view, base + f.offset);
    if (p !== undefined) return `${layout.name}.${f.name}: ${p}`;
  }
  return undefined;
}

export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes a structure at `offset`. The caller has checked that `offset + layout.size` bytes exist. */
export function readStruct<B extends ByteLayout>(layout: B, bytes: Uint8Array, offset = 0): ByteFields<B> {
  if (offset < 0 || offset + layout.size > bytes.length) throw new RangeError(`${layout.name}: ${layout.size} bytes at ${offset} exceed ${bytes.length}`);
  return readFields(layout, viewOf(bytes), offset);
}

/** Encodes `values` (missing members zero) into `into` at `offset`, or into a fresh zeroed buffer. */
export function writeStruct<B extends ByteLayout>(layout: B, values: ByteInit<B>, into: Uint8Array = new Uint8Array(layout.size), offset = 0): Uint8Array {
  if (offset < 0 || offset + layout.size > into.length) throw new RangeError(`${layout.name}: ${layout.size} bytes at ${offset} exceed ${into.length}`);
  writeFields(layout, viewOf(into), offset, values);
  return into;
}

export function flattenStruct<B extends ByteLayout>(layout: B, value: ByteFields<B>, prefix = ""): FlatFields {
  const out: FlatFields = {};
  flattenFields(layout, value, prefix, out);
  return out;
}

/** Why the structure at `offset` is malformed (a reserved member or bit set), or undefined. */
export function structProblem(layout: ByteLayout, bytes: Uint8Array, offset = 0): string | undefined {
  if (offset < 0 || offset + layout.size > bytes.length) return `${layout.name}: needs ${layout.size} bytes at ${offset}, ${bytes.length} present`;
  return fieldsProblem(layout, viewOf(bytes), offset);
}
