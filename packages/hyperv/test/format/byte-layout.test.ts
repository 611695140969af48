import { describe, expect, it } from "vitest";
import { defineLayout } from "@viommu/core";
import { bits, defineByteLayout, padding, readStruct, structProblem, u16, u32, u64, writeStruct } from "../../src/format/index.js";

describe("byte layouts are checked as data", () => {
  it("refuses a member outside the structure, an overlap and a duplicate name", () => {
    expect(() => defineByteLayout("t", 4, [{ name: "a", offset: 2, codec: u32 }] as const)).toThrow(/outside/);
    expect(() => defineByteLayout("t", 8, [{ name: "a", offset: 0, codec: u32 }, { name: "b", offset: 2, codec: u16 }] as const)).toThrow(/overlaps/);
    expect(() => defineByteLayout("t", 8, [{ name: "a", offset: 0, codec: u32 }, { name: "a", offset: 4, codec: u32 }] as const)).toThrow(/duplicate/);
    expect(() => bits(defineLayout("w", 32, [{ name: "x", bit: 8, width: 1 }] as const), 1)).toThrow(/outside/);
  });

  it("reads little-endian members at their offsets and flags reserved members and bits", () => {
    const flags = defineLayout("flags", 32, [{ name: "on", bit: 0, width: 1 }] as const);
    const t = defineByteLayout("t", 16, [
      { name: "a", offset: 0, codec: u64 },
      { name: "f", offset: 8, codec: bits(flags, 1) },
      { name: "pad", offset: 9, codec: padding(3), reserved: true },
      { name: "b", offset: 12, codec: u32 },
    ] as const);
    const bytes = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 1, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde);
    expect(readStruct(t, bytes)).toEqual({ a: 0x0807060504030201n, f: { on: 1 }, pad: 0n, b: 0xdeadbeef });
    expect(Array.from(writeStruct(t, readStruct(t, bytes)))).toEqual(Array.from(bytes));
    expect(structProblem(t, bytes)).toBeUndefined();
    expect(structProblem(t, Uint8Array.of(...bytes.subarray(0, 8), 3, ...bytes.subarray(9)))).toMatch(/reserved bits/);
    expect(structProblem(t, Uint8Array.of(...bytes.subarray(0, 10), 1, ...bytes.subarray(11)))).toMatch(/reserved member/);
    expect(structProblem(t, bytes.subarray(0, 15))).toMatch(/needs 16 bytes/);
    expect(() => writeStruct(t, { b: 2 ** 32 })).toThrow(RangeError);
  });
});
