/**
 * Little-endian byte assembly and parsing for byte-oriented firmware tables (ACPI), whose sub-structures
 * have odd lengths that do not fit a bit-layout table.
 */
export class ByteWriter {
  private buffer = new Uint8Array(256);
  private view = new DataView(this.buffer.buffer);
  private length = 0;

  get offset(): number {
    return this.length;
  }

  /** Claims n bytes, growing the buffer if needed; callers must read `buffer`/`view` only after this. */
  private reserve(n: number): number {
    const at = this.length;
    if (at + n > this.buffer.length) {
      const next = new Uint8Array(Math.max(this.buffer.length * 2, at + n));
      next.set(this.buffer);
      this.buffer = next;
      this.view = new DataView(next.buffer);
    }
    this.length += n;
    return at;
  }

  u8(v: number): this {
    const at = this.reserve(1);
    this.view.setUint8(at, v);
    return this;
  }

  u16(v: number): this {
    const at = this.reserve(2);
    this.view.setUint16(at, v, true);
    return this;
  }

  u32(v: number): this {
    const at = this.reserve(4);
    this.view.setUint32(at, v >>> 0, true);
    return this;
  }

  u64(v: number | bigint): this {
    const at = this.reserve(8);
    this.view.setBigUint64(at, BigInt(v), true);
    return this;
  }

  bytes(b: Uint8Array): this {
    const at = this.reserve(b.length);
    this.buffer.set(b, at);
    return this;
  }

  /** Fixed-width ASCII, space-padded as ACPI identifiers are; longer text is refused. */
  ascii(text: string, width: number, pad = " "): this {
    if (text.length > width || !/^[\x20-\x7e]*$/.test(text)) throw new RangeError(`ACPI id ${JSON.stringify(text)} does not fit ${width} bytes`);
    for (const ch of text.padEnd(width, pad)) this.u8(ch.charCodeAt(0));
    return this;
  }

  zeros(n: number): this {
    this.reserve(n);
    return this;
  }

  /** Overwrites a 16-bit value already written (length fields known only at the end). */
  patchU16(at: number, v: number): void {
    this.view.setUint16(at, v, true);
  }

  patchU32(at: number, v: number): void {
    this.view.setUint32(at, v >>> 0, true);
  }

  patchU8(at: number, v: number): void {
    this.view.setUint8(at, v);
  }

  finish(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}

/** Bounds-checked little-endian reads; a read past the end throws RangeError (callers treat it as malformed input). */
export class ByteReader {
  private readonly view: DataView;

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get length(): number {
    return this.bytes.length;
  }

  private check(at: number, n: number): void {
    if (at < 0 || at + n > this.bytes.length) throw new RangeError(`read of ${n} bytes at ${at} past the end (${this.bytes.length})`);
  }

  u8(at: number): number {
    this.check(at, 1);
    return this.view.getUint8(at);
  }

  u16(at: number): number {
    this.check(at, 2);
    return this.view.getUint16(at, true);
  }

  u32(at: number): number {
    this.check(at, 4);
    return this.view.getUint32(at, true);
  }

  u64(at: number): bigint {
    this.check(at, 8);
    return this.view.getBigUint64(at, true);
  }

  ascii(at: number, width: number): string {
    this.check(at, width);
    return String.fromCharCode(...this.bytes.subarray(at, at + width));
  }

  slice(at: number, n: number): Uint8Array {
    this.check(at, n);
    return this.bytes.subarray(at, at + n);
  }
}
