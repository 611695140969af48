import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromWords64 } from "@viommu/core";
import { tegra241Structures } from "../../src/format/index.js";

function decode(id: string, words: string[]): ReturnType<(typeof tegra241Structures)[number]["decode"]> {
  const s = tegra241Structures.find((d) => d.id === id);
  if (!s) throw new Error(`no structure ${id}`);
  expect(s.words).toContain(words.length);
  return s.decode(fromWords64(words));
}

describe("viommu decode --vendor tegra241-cmdqv", () => {
  it("offers one id per register and uAPI structure, once each", () => {
    const ids = tegra241Structures.map((s) => s.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(
      expect.arrayContaining(["config", "param", "status", "cmdq-alloc", "vintf-config", "vintf-status", "sid-match", "sid-replace", "lvcmdq-err-map", "vcmdq-cons", "vcmdq-prod", "vcmdq-base", "vcmdq-cons-indx-base", "hw-info", "viommu-data", "vevent"]),
    );
  });

  it("decodes registers as Linux writes them (spec §4.2–4.4)", () => {
    expect(decode("vintf-config", ["0x20001"])).toMatchObject({ name: "TEGRA241_VINTF_CONFIG", fields: { VINTF_EN: 1, VINTF_VMID: 0, VINTF_HYP_OWN: 1 } });
    expect(decode("cmdq-alloc", ["0x8003"]).fields).toEqual({ CMDQV_CMDQ_ALLOCATED: 1, CMDQV_CMDQ_ALLOC_LVCMDQ: 1, CMDQV_CMDQ_ALLOC_VINTF: 1 });
    expect(decode("param", ["0x4011"]).fields).toMatchObject({ CMDQV_VER: 1, CMDQV_NUM_SID_PER_VM_LOG2: 4 });
    expect(decode("vcmdq-base", ["0x0000000812000013"]).fields).toEqual({ LOG2SIZE: 19, ADDR: 0x812000000 });
    expect(decode("hw-info", ["0x0004010100000000"]).fields).toEqual({ flags: 0, version: 1, log2vcmdqs: 1, log2vsids: 4, __reserved: 0 });
    expect(decode("vevent", ["0x2", "0x1"]).fields).toEqual({ "lvcmdq_err_map[0]": 2n, "lvcmdq_err_map[1]": 1n });
  });

  it("vcmdq-cons names its CONS_INDX.ERR code", () => {
    expect(decode("vcmdq-cons", ["0x01000105"])).toMatchObject({ name: "CERROR_ILL", code: 1, fields: { RD: 0x105, ERR: 1 } });
    expect(decode("vcmdq-cons", ["0x00000000"])).toMatchObject({ name: "CERROR_NONE", code: 0 });
    expect(decode("vcmdq-cons", ["0x7f000000"])).toMatchObject({ name: "UNKNOWN", code: 0x7f });
  });

  it("ignores the high half of a 32-bit register's word", () => {
    expect(decode("vintf-config", ["0xffffffff00020001"]).fields).toEqual({ VINTF_EN: 1, VINTF_VMID: 0, VINTF_HYP_OWN: 1 });
  });

  it("never throws for random words of any accepted size", () => {
    fc.assert(
      fc.property(fc.constantFrom(...tegra241Structures), fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { minLength: 4, maxLength: 4 }), (s, words) => {
        for (const n of s.words) {
          const d = s.decode(fromWords64(words.slice(0, n)));
          expect(typeof d.name).toBe("string");
        }
      }),
    );
  });
});
