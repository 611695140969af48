import { describe, expect, it } from "vitest";
import { decodeLayout, encodeLayout } from "@viommu/core";
import { EventType } from "../../src/format/event-record.js";
import { idr0Layout, idr1Layout, IdrStallModel } from "../../src/format/id-registers.js";
import { encodeSte, SteConfig, SteEats, SteS1Dss, SteS1Fmt, type SteFields } from "../../src/format/stream-table-entry.js";
import { DEFAULT_SMMUV3_HW } from "../../src/hw/smmuv3-hw-config.js";
import { smmuFeatures, type SmmuFeatures } from "../../src/translate/smmu-features.js";
import { decodeSteSettings } from "../../src/translate/ste-config.js";
import { streamTableConfig } from "../../src/translate/stream-table-lookup.js";

/** The modelled host SMMU with some IDR0 / IDR1 fields changed. */
function features(idr0: Partial<Record<string, number>> = {}, idr1: Partial<Record<string, number>> = {}): SmmuFeatures {
  const idr = [...DEFAULT_SMMUV3_HW.idr];
  idr[0] = encodeLayout(idr0Layout, { ...decodeLayout(idr0Layout, Uint32Array.of(idr[0]!)), ...idr0 })[0]!;
  idr[1] = encodeLayout(idr1Layout, { ...decodeLayout(idr1Layout, Uint32Array.of(idr[1]!)), ...idr1 })[0]!;
  return smmuFeatures(idr);
}

const S2 = { S2T0SZ: 16, S2SL0: 2, S2TG: 0, S2PS: 5, S2AA64: 1, S2TTB: 0x1000 } as const;
const S1 = { Config: SteConfig.S1Translate, S1ContextPtr: 0x4000 } as const;

function ste(fields: Partial<SteFields>): Uint32Array {
  return encodeSte({ V: 1, ...fields });
}

/**
 * The architecture's SteIllegal() (IHI0070 §5.2, "STE validity", as pseudocode) and the field definitions of §5.2:
 * what is ILLEGAL (C_BAD_STE), what is reserved but behaves as another value, what is IGNORED.
 */
describe("STE validity as IHI0070 §5.2 defines it", () => {
  const f = features();
  it.each([
    ["V = 0", ste({ V: 0, Config: SteConfig.Bypass })],
    ["S1CDMax beyond SSIDSIZE", ste({ ...S1, S1CDMax: 21 })],
    ["S1STALLD on an SMMU that cannot stall", ste({ ...S1, S1STALLD: 1 })],
    ["split-stage ATS outside a nested STE", ste({ ...S1, EATS: SteEats.S1Check })],
    ["full ATS with stage-2 stalls (S2S), SMMUv3.1+", ste({ Config: SteConfig.S2Translate, ...S2, EATS: SteEats.Translate, S2S: 1 })],
    ["STRW EL2 on a stage-1-only STE without IDR0.HYP", ste({ ...S1, STRW: 2 })],
  ])("%s is ILLEGAL: C_BAD_STE", (_what, raw) => {
    expect(decodeSteSettings(raw, f)).toBe(EventType.C_BAD_STE);
  });

  it("Config 0b001–0b011 are Reserved and behave as 0b000: abort, no event", () => {
    for (const config of [0b000, 0b001, 0b010, 0b011]) expect(decodeSteSettings(ste({ Config: config }), f)).toMatchObject({ config: SteConfig.Abort, stage1: undefined });
  });

  it("S1Fmt is IGNORED without substreams, even a 2-level format on an SMMU without CD2L; 0b11 behaves as linear", () => {
    const noCd2l = features({ CD2L: 0 });
    expect(decodeSteSettings(ste({ ...S1, S1Fmt: SteS1Fmt.TwoLevel4K, S1CDMax: 0 }), noCd2l)).toMatchObject({ stage1: { fmt: SteS1Fmt.Linear, cdMax: 0 } });
    expect(decodeSteSettings(ste({ ...S1, S1Fmt: SteS1Fmt.TwoLevel4K, S1CDMax: 2 }), noCd2l)).toBe(EventType.C_BAD_STE);
    expect(decodeSteSettings(ste({ ...S1, S1Fmt: 3, S1CDMax: 2 }), noCd2l)).toMatchObject({ stage1: { fmt: SteS1Fmt.Linear, cdMax: 2 } });
    expect(decodeSteSettings(ste({ ...S1, S1Fmt: 3, S1CDMax: 0 }), f)).toMatchObject({ stage1: { fmt: SteS1Fmt.Linear } });
  });

  it("S1DSS 0b11 behaves as terminate; S1CDMax (and with it S1DSS) is IGNORED without SSIDSIZE", () => {
    expect(decodeSteSettings(ste({ ...S1, S1CDMax: 2, S1DSS: 3 }), f)).toMatchObject({ stage1: { dss: SteS1Dss.Terminate } });
    expect(decodeSteSettings(ste({ ...S1, S1CDMax: 31, S1DSS: 3 }), features({}, { SSIDSIZE: 0 }))).toMatchObject({ stage1: { cdMax: 0 } });
  });

  it("S1STALLD is legal where stalls exist (STALL_MODEL 0)", () => {
    expect(decodeSteSettings(ste({ ...S1, S1STALLD: 1 }), features({ STALL_MODEL: IdrStallModel.StallAndTerminate }))).toMatchObject({ config: SteConfig.S1Translate });
  });

  it("EATS is IGNORED without IDR0.ATS and on a bypass STE; 0b11 behaves as 0b00 without DPT; split-stage is legal on a nested STE", () => {
    expect(decodeSteSettings(ste({ ...S1, EATS: SteEats.S1Check }), features({ ATS: 0 }))).toMatchObject({ eats: SteEats.Abort });
    expect(decodeSteSettings(ste({ Config: SteConfig.Bypass, EATS: 3 }), f)).toMatchObject({ config: SteConfig.Bypass, eats: 0 });
    expect(decodeSteSettings(ste({ ...S1, EATS: 3 }), f)).toMatchObject({ eats: SteEats.Abort });
    expect(decodeSteSettings(ste({ ...S1, ...S2, Config: SteConfig.Nested, EATS: SteEats.S1Check }), f)).toMatchObject({ eats: SteEats.S1Check });
    expect(decodeSteSettings(ste({ ...S1, ...S2, Config: SteConfig.Nested, EATS: SteEats.S1Check }), features({ NS1ATS: 1 }))).toBe(EventType.C_BAD_STE);
  });

  it("STRW is IGNORED when stage 2 translates", () => {
    expect(decodeSteSettings(ste({ ...S1, ...S2, Config: SteConfig.Nested, STRW: 2 }), f)).toMatchObject({ config: SteConfig.Nested });
  });
});

describe("the stream table STRTAB_BASE_CFG describes (IHI0070 §6.3.25)", () => {
  const f = features();
  it("takes a reserved SPLIT as 6, reserved FMT values as linear, and LOG2SIZE capped at SIDSIZE", () => {
    expect([0, 5, 7, 9, 11, 31].map((split) => streamTableConfig(0, 16, split, 1, f).split)).toEqual([6, 6, 6, 6, 6, 6]);
    expect([8, 10].map((split) => streamTableConfig(0, 16, split, 1, f).split)).toEqual([8, 10]);
    expect(streamTableConfig(0, 8, 10, 1, f)).toMatchObject({ split: 8, twoLevel: true });
    expect([2, 3].map((fmt) => streamTableConfig(0, 8, 8, fmt, f).twoLevel)).toEqual([false, false]);
    expect(streamTableConfig(0, 40, 8, 0, f).log2Size).toBe(16);
  });
});
