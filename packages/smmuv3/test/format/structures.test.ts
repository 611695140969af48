import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromWords64, jsonFields } from "@viommu/core";
import { smmuv3Structures } from "../../src/format/index.js";

function decoder(id: string) {
  const d = smmuv3Structures.find((s) => s.id === id);
  if (d === undefined) throw new Error(`no structure ${id}`);
  return d;
}

describe("smmuv3Structures (viommu decode --vendor smmuv3)", () => {
  it("offers exactly the command-line ids with their sizes in 64-bit words", () => {
    expect(smmuv3Structures.map((s) => [s.id, s.words])).toEqual([
      ["cmd", [2]],
      ["ste", [8]],
      ["cd", [8]],
      ["event", [4]],
      ["pri", [2]],
      ["l1-std", [1]],
      ["pte-s1", [1]],
      ["pte-s2", [1]],
      ["idr0", [1]],
      ["idr1", [1]],
      ["idr2", [1]],
      ["idr3", [1]],
      ["idr4", [1]],
      ["idr5", [1]],
    ]);
  });

  it("names a command by its opcode mnemonic", () => {
    expect(decoder("cmd").decode(fromWords64(["0x000000000fc02046", "0"]))).toMatchObject({ name: "CMD_SYNC", code: 0x46, fields: { CS: 2, MSH: 3, MSIAttr: 15 } });
  });

  it("names an STE by its Config and a CD, L1STD and PRI entry by their mnemonic", () => {
    const ste = decoder("ste").decode(fromWords64(["0x000000005a4e100b", "0xd6", "0", "0", "0", "0", "0", "0"]));
    expect(ste).toMatchObject({ name: "S1_TRANS", code: 5, fields: { S1ContextPtr: 0x5a4e1000, S1DSS: 2 } });
    const cd = decoder("cd").decode(fromWords64(["0x0001e204c0003510", "0x40d3d000", "0", "0xfffffffff404ff44", "0", "0", "0", "0"]));
    expect(cd).toMatchObject({ name: "CD", code: 0, fields: { ASID: 1, TTB0: 0x40d3d000, T0SZ: 16 } });
    expect(decoder("l1-std").decode(fromWords64(["0x0000000054460009"]))).toEqual({ name: "L1STD", code: 0, fields: { Span: 9, L2Ptr: 0x54460000 } });
    expect(decoder("pri").decode(fromWords64(["0xf000000300000028", "0x00007fff12345007"]))).toMatchObject({ name: "PRIQ_ENTRY", fields: { StreamID: 0x28, PageAddress: 0x7fff12345000n } });
  });

  it("names an event by its type", () => {
    expect(decoder("event").decode(fromWords64(["0x0000002000000010", "0x0000020800000000", "0x00000000fffff040", "0"]))).toMatchObject({
      name: "F_TRANSLATION",
      code: 0x10,
      fields: { StreamID: 0x20, RnW: 1, CLASS: 2, InputAddr: 0xfffff040n },
    });
  });

  it("classifies page-table descriptors by bits[1:0]", () => {
    expect(decoder("pte-s1").decode(fromWords64(["0x0000000040d34003"]))).toMatchObject({ name: "TABLE_OR_PAGE", code: 3, fields: { NextLevelTableAddress: 0x40d34000, OutputAddress: 0x40d34000, APTable: 0 } });
    expect(decoder("pte-s1").decode(fromWords64(["0x0060000040200f45"]))).toMatchObject({ name: "BLOCK", code: 1, fields: { OutputAddress: 0x40200000, AP: 1, PXN: 1, UXN: 1 } });
    expect(decoder("pte-s2").decode(fromWords64(["0x00000000400007ff"]))).toMatchObject({ name: "TABLE_OR_PAGE", code: 3, fields: { S2AP: 3, MemAttr: 15 } });
    expect(decoder("pte-s2").decode(fromWords64(["0x1234567800000002"]))).toEqual({ name: "INVALID", code: 2, fields: { Valid: 0, Type: 1 } });
  });

  it("decodes an ID register from the low half of its word", () => {
    expect(decoder("idr3").decode(fromWords64(["0xffffffff00001404"]))).toMatchObject({ name: "SMMU_IDR3", fields: { HAD: 1, RIL: 1, BBML: 2 } });
    expect(decoder("idr0").decode(fromWords64(["0x0d40101a"])).fields).toMatchObject({ S1P: 1, ST_LEVEL: 1 });
    expect(decoder("idr4").decode(fromWords64(["0x12345678"])).fields).toEqual({ IMPDEF: 0x12345678 });
  });

  it("decodes any bits of every accepted size without throwing, into JSON-safe fields", () => {
    for (const s of smmuv3Structures) {
      for (const words of s.words) {
        fc.assert(
          fc.property(fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { minLength: words, maxLength: words }), (w) => {
            const d = s.decode(fromWords64(w));
            expect(typeof d.name).toBe("string");
            expect(Number.isInteger(d.code)).toBe(true);
            const json = JSON.stringify(jsonFields(d.fields));
            expect(json.length).toBeGreaterThan(1);
          }),
          { numRuns: 200 },
        );
      }
    }
  });
});
