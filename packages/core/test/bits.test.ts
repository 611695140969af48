import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  address64,
  bits64,
  decodeLayout,
  decodeLayoutInto,
  defineLayout,
  encodeLayout,
  fromWords64,
  getBits,
  getBitsBig,
  hasReservedBits,
  jsonFieldValue,
  setBits,
  setBitsBig,
  toHex64,
} from "../src/bits/index.js";

const demo = defineLayout("DEMO", 128, [
  { name: "Type", bit: 0, width: 4 },
  { name: "Straddle", bit: 28, width: 8 },
  { name: "ADDR", bit: 76, width: 52, shift: 12, big: true },
  { name: "Small", bit: 64, width: 12, shift: 0 },
] as const);

describe("bit fields", () => {
  it("reads a field that straddles two 32-bit halves", () => {
    const raw = fromWords64(["0x0000000ab0000000", "0"]);
    expect(getBits(raw, 28, 8)).toBe(0xab);
  });

  it("reads 53-bit fields exactly", () => {
    const raw = fromWords64(["0x001fffffffffffff"]);
    expect(getBits(raw, 0, 53)).toBe(2 ** 53 - 1);
  });

  it("rejects a value wider than its field", () => {
    const raw = fromWords64(["0"]);
    expect(() => setBits(raw, 4, 3, 8)).toThrow(RangeError);
  });

  it("matches a BigInt reference on random spans", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 0, max: 127 }), fc.integer({ min: 1, max: 53 }), (v, bit, width) => {
        fc.pre(bit + width <= 128);
        const raw = fromWords64([v & ((1n << 64n) - 1n), v >> 64n]);
        const expected = Number((v >> BigInt(bit)) & ((1n << BigInt(width)) - 1n));
        expect(getBits(raw, bit, width)).toBe(expected);
        expect(getBitsBig(raw, bit, width)).toBe(BigInt(expected));
        const copy = raw.slice();
        setBits(copy, bit, width, expected);
        expect([...copy]).toEqual([...raw]);
        setBitsBig(copy, bit, width, 0n);
        expect(getBits(copy, bit, width)).toBe(0);
      }),
    );
  });

  it("bits64 and address64 agree with BigInt on random 64-bit entries", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.integer({ min: 0, max: 63 }), fc.integer({ min: 1, max: 53 }), (v, bit, width) => {
        fc.pre(bit + width <= 64);
        const lo = Number(v & 0xffffffffn);
        const hi = Number(v >> 32n);
        expect(bits64(lo, hi, bit, width)).toBe(Number((v >> BigInt(bit)) & ((1n << BigInt(width)) - 1n)));
      }),
    );
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 12, max: 52 }), (v, low, high) => {
        fc.pre(low <= high);
        const lo = Number(v & 0xffffffffn);
        const hi = Number(v >> 32n);
        const mask = ((1n << BigInt(high + 1)) - 1n) & ~((1n << BigInt(low)) - 1n);
        expect(address64(lo, hi, low, high)).toBe(Number(v & mask));
      }),
    );
  });
});

describe("layouts", () => {
  it("decodes shifted address fields and wide fields as declared", () => {
    const raw = fromWords64(["0x00000001a000000f", "0x123456789abcd000"]);
    const d = decodeLayout(demo, raw);
    expect(d.Type).toBe(0xf);
    expect(d.Straddle).toBe(0x1a);
    expect(d.ADDR).toBe(0x123456789abcd000n);
    expect(d.Small).toBe(0);
  });

  it("decodes into a reused record with the same values as a fresh decode", () => {
    const raw = fromWords64(["0x00000001a000000f", "0x123456789abcd000"]);
    const reused = decodeLayout(demo, fromWords64(["0", "0"]));
    expect(decodeLayoutInto(demo, raw, reused)).toBe(reused);
    expect(reused).toEqual(decodeLayout(demo, raw));
  });

  it("encodes to the same words it decodes", () => {
    const raw = encodeLayout(demo, { Type: 3, ADDR: 0xfedcba9876543000n, Small: 0x5a5 });
    expect(toHex64(raw)).toEqual(["0x0000000000000003", "0xfedcba98765435a5"]);
  });

  it("refuses a misaligned address for a shifted field", () => {
    expect(() => encodeLayout(demo, { ADDR: 0x1001n })).toThrow(RangeError);
  });

  it("reports set reserved bits", () => {
    expect(hasReservedBits(demo, fromWords64(["0x10", "0"]))).toBe(true);
    expect(hasReservedBits(demo, fromWords64(["0xf", "0"]))).toBe(false);
  });

  it("refuses overlapping fields and undeclared wide fields", () => {
    expect(() => defineLayout("X", 64, [{ name: "a", bit: 0, width: 8 }, { name: "b", bit: 7, width: 2 }])).toThrow(/overlaps/);
    expect(() => defineLayout("X", 64, [{ name: "a", bit: 0, width: 60 }])).toThrow(/big/);
  });

  it("prints wide values as hex text in JSON", () => {
    expect(jsonFieldValue(2n ** 60n)).toBe("0x1000000000000000");
    expect(jsonFieldValue(5n)).toBe(5);
  });
});
