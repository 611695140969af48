import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromWords64, jsonFields } from "@viommu/core";
import { amdViStructures } from "../../src/format/index.js";

function decoder(id: string): (typeof amdViStructures)[number] {
  const d = amdViStructures.find((s) => s.id === id);
  if (!d) throw new Error(`no decoder ${id}`);
  return d;
}

describe("amdViStructures (viommu decode --vendor amd-vi)", () => {
  it("has exactly the command-line ids with their word counts", () => {
    expect(amdViStructures.map((s) => [s.id, s.words])).toEqual([
      ["cmd", [2]],
      ["dte", [4]],
      ["event", [2]],
      ["ppr", [2]],
      ["pte-v1", [1]],
      ["pte-v2", [1]],
      ["irte32", [1]],
      ["irte128", [2]],
      ["efr", [1]],
      ["control", [1]],
    ]);
  });

  it.each([
    ["cmd", ["0x3000123400000000", "0x7ffffffffffff003"], "INVALIDATE_IOMMU_PAGES", 3, { DomainID: 0x1234, S: 1, PDE: 1 }],
    ["dte", ["0x3", "0x0", "0x1", "0x0"], "DTE", 1, { V: 1, TV: 1, IV: 1, Mode: 0 }],
    ["event", ["0x2030000500000010", "0x000000000dead000"], "IO_PAGE_FAULT", 2, { DeviceID: 0x10, PR: 1, RW: 1 }],
    ["ppr", ["0x1124000300010100", "0x7fff12345000"], "PAGE_SERVICE_REQUEST", 1, { DeviceID: 0x100, Tag: 3 }],
    ["pte-v1", ["0x6000000123456401"], "PDE", 2, { PR: 1, NextLevel: 2, Address: 0x123456000, IR: 1, IW: 1 }],
    ["pte-v1", ["0x60000000abcd9e01"], "PTE", 7, { NextLevel: 7, PageSize: 0x4000 }],
    ["pte-v1", ["0x0"], "NOT_PRESENT", 0, { PR: 0 }],
    ["pte-v2", ["0x00000000abc000e7"], "PTE", 1, { P: 1, RW: 1, US: 1, A: 1, D: 1, PS: 1, Address: 0xabc00000, NX: 0 }],
    ["irte32", ["0x00300101"], "IRTE", 1, { Vector: 0x30, Destination: 1 }],
    ["irte128", ["0x0000000034567801", "0x1200000000000041"], "REMAPPED", 0, { Destination: 0x12345678, Vector: 0x41 }],
    ["efr", ["0x29d3"], "EFR", 0, { HATS: 2, GATS: 2, GASup: 1 }],
    ["control", ["0x109d"], "CONTROL", 0, { IommuEn: 1, CmdBufEn: 1, InvTimeOut: 4 }],
  ])("%s decodes %j as %s", (id, words, name, code, fields) => {
    const d = decoder(id).decode(fromWords64(words));
    expect(d.name).toBe(name);
    expect(d.code).toBe(code);
    expect(d.fields).toMatchObject(fields);
  });

  it("prints fields wider than 53 bits as hex text in JSON", () => {
    const d = decoder("cmd").decode(fromWords64(["0x3000123400000000", "0x7ffffffffffff003"]));
    expect(jsonFields(d.fields)["Address"]).toBe("0x7ffffffffffff000");
  });

  it.each(amdViStructures.map((s) => [s.id, s.words[0]!] as const))("%s never throws for random %i-word input", (id, words) => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { minLength: words, maxLength: words }), (ws) => {
        const d = decoder(id).decode(fromWords64(ws));
        expect(typeof d.name).toBe("string");
        expect(Number.isInteger(d.code)).toBe(true);
        jsonFields(d.fields);
      }),
    );
  });
});
