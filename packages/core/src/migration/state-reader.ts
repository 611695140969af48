import { err, ok, type Result } from "../errors/errno.js";
import type { StateValue } from "./state.js";

/** A field that failed validation; caught by `readState`, never seen outside it. */
class StateFieldError extends Error {}

const U64_MAX = (1n << 64n) - 1n;

/**
 * Validates a decoded state stream field by field before anything is applied. A saved stream is input the
 * destination did not produce (a forged or buggy save, another version), so every field is checked for
 * type and range and the first bad one is named by its path (`queue.head`, `faults.records[3]`).
 *
 * Use it in two steps: parse the whole stream into a plain, fully checked value with `readState`, then
 * apply that value, which cannot fail. A refused restore therefore changes nothing.
 */
export class StateReader {
  private constructor(
    private readonly value: StateValue,
    /** Path of this value in the stream, for messages. */
    readonly path: string,
  ) {}

  /** Runs `parse` over `value`; EINVAL naming the first bad field, or the parsed result. */
  static read<T>(value: StateValue, what: string, parse: (r: StateReader) => T): Result<T> {
    try {
      return ok(parse(new StateReader(value, "")));
    } catch (e) {
      if (e instanceof StateFieldError) return err("EINVAL", `${what} state: ${e.message}`);
      throw e;
    }
  }

  private at(name: string | number): string {
    if (typeof name === "number") return `${this.path}[${name}]`;
    return this.path === "" ? name : `${this.path}.${name}`;
  }

  private fail(path: string, why: string): never {
    throw new StateFieldError(`${path === "" ? "the stream" : path} ${why}`);
  }

  private raw(name: string | number): StateValue {
    if (typeof name === "number") {
      if (!Array.isArray(this.value)) this.fail(this.path, "is not an array");
      return this.value[name] as StateValue;
    }
    if (typeof this.value !== "object" || this.value === null || Array.isArray(this.value)) this.fail(this.path, "is not an object");
    if (!Object.prototype.hasOwnProperty.call(this.value, name)) this.fail(this.at(name), "is missing");
    return this.value[name] as StateValue;
  }

  /** Whether the object has `name` (optional fields of newer versions). */
  has(name: string): boolean {
    return typeof this.value === "object" && this.value !== null && !Array.isArray(this.value) && Object.prototype.hasOwnProperty.call(this.value, name);
  }

  /** A nested object. */
  object(name: string | number): StateReader {
    const v = this.raw(name);
    if (typeof v !== "object" || v === null || Array.isArray(v)) this.fail(this.at(name), "is not an object");
    return new StateReader(v, this.at(name));
  }

  /** An array, optionally of exactly `length` elements or at most `maxLength`. */
  array(name: string | number, length?: { exactly?: number; max?: number }): StateReader[] {
    const v = this.raw(name);
    if (!Array.isArray(v)) this.fail(this.at(name), "is not an array");
    if (length?.exactly !== undefined && v.length !== length.exactly) this.fail(this.at(name), `has ${v.length} elements, not ${length.exactly}`);
    if (length?.max !== undefined && v.length > length.max) this.fail(this.at(name), `has ${v.length} elements, more than ${length.max}`);
    return v.map((x, i) => new StateReader(x, this.at(name) + `[${i}]`));
  }

  /** This element as an integer in [min, max] (for readers returned by `array`). */
  asInt(min: number, max: number): number {
    return this.checkInt(this.value, this.path, min, max);
  }

  /** This element as a bigint in [0, max] (for readers returned by `array`). */
  asU64(max: bigint = U64_MAX): bigint {
    return this.checkBig(this.value, this.path, max);
  }

  /** An integer in [min, max]. */
  int(name: string | number, min: number, max: number): number {
    return this.checkInt(this.raw(name), this.at(name), min, max);
  }

  /** An unsigned 32-bit value. */
  u32(name: string | number): number {
    return this.int(name, 0, 0xffff_ffff);
  }

  /** An index into something of `size` elements: [0, size). */
  index(name: string | number, size: number): number {
    if (size <= 0) this.fail(this.at(name), "indexes an empty structure");
    return this.int(name, 0, size - 1);
  }

  /** A 64-bit value saved as a decimal or `0x` string (or a safe integer), at most `max`. */
  u64(name: string | number, max: bigint = U64_MAX): bigint {
    return this.checkBig(this.raw(name), this.at(name), max);
  }

  bool(name: string | number): boolean {
    const v = this.raw(name);
    if (typeof v !== "boolean") this.fail(this.at(name), "is not a boolean");
    return v;
  }

  string(name: string | number, allowed?: readonly string[]): string {
    const v = this.raw(name);
    if (typeof v !== "string") this.fail(this.at(name), "is not a string");
    if (allowed !== undefined && !allowed.includes(v)) this.fail(this.at(name), `is "${v}", not one of ${allowed.join(", ")}`);
    return v;
  }

  /** An integer array whose elements each lie in [min, max]. */
  ints(name: string | number, min: number, max: number, length?: { exactly?: number; max?: number }): number[] {
    return this.array(name, length).map((r) => r.asInt(min, max));
  }

  /** Fails with `why` at `name` unless `condition` holds (cross-field checks). */
  check(condition: boolean, name: string, why: string): void {
    if (!condition) this.fail(this.at(name), why);
  }

  private checkInt(v: StateValue, path: string, min: number, max: number): number {
    if (typeof v !== "number" || !Number.isSafeInteger(v)) this.fail(path, "is not an integer");
    if (v < min || v > max) this.fail(path, `is ${v}, outside [${min}, ${max}]`);
    return v;
  }

  private checkBig(v: StateValue, path: string, max: bigint): bigint {
    let b: bigint;
    if (typeof v === "number" && Number.isSafeInteger(v)) b = BigInt(v);
    else if (typeof v === "string" && /^(0x[0-9a-fA-F]{1,16}|\d{1,20})$/.test(v)) b = BigInt(v);
    else this.fail(path, "is not a 64-bit value");
    if (b < 0n || b > max) this.fail(path, `is 0x${b.toString(16)}, above 0x${max.toString(16)}`);
    return b;
  }
}
