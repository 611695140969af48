import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { decodeLayout, encodeLayout, fromWords64, hasReservedBits, rawBits, toHex64 } from "@viommu/core";
import {
  STE_NESTING_ALLOWED_MASK,
  SteConfig,
  cdTableSlot,
  checkNestedVste,
  decodeCd,
  decodeSte,
  encodeCd,
  encodeSte,
  granuleFromTg0,
  l1CdLayout,
  l1StdEntries,
  l1StdLayout,
  l1StdReaches,
  mairAttribute,
  stage1Geometry,
  steConfigName,
  steLayout,
  steStage1Enabled,
  steStage2Enabled,
  strtabL1Index,
  strtabL2Index,
  cdLayout,
} from "../../src/format/index.js";
import { fixtureJson, words, type FixtureTranslations } from "./fixtures.js";

const fixture = fixtureJson<FixtureTranslations>("translations.json");
const zero6 = ["0", "0", "0", "0", "0", "0"];

describe("level-1 stream table descriptor (IHI0070 §5.1, spec §1.5)", () => {
  it("decodes the L1STDs Linux wrote: Span 9 (256 STEs), L2Ptr", () => {
    expect(decodeLayout(l1StdLayout, words("0x0000000054460009"))).toEqual({ Span: 9, L2Ptr: 0x54460000 });
    expect(decodeLayout(l1StdLayout, words("0x0000000054464009"))).toEqual({ Span: 9, L2Ptr: 0x54464000 });
    expect(toHex64(encodeLayout(l1StdLayout, { Span: 9, L2Ptr: 0x54460000 }))).toEqual(["0x0000000054460009"]);
  });

  it.each([
    // span, split, sid, reaches
    [9, 8, 0x20, true],
    [9, 8, 0x1ff, true],
    [0, 8, 0x20, false],
    [10, 8, 0x20, false],
    [1, 8, 0x100, true],
    [1, 8, 0x101, false],
    [3, 8, 0x103, true],
    [3, 8, 0x104, false],
  ])("Span %d with SPLIT %d %s StreamID 0x%s", (span, split, sid, reaches) => {
    expect(l1StdReaches(span, split, sid)).toBe(reaches);
  });

  it("splits a StreamID into L1 and L2 indexes", () => {
    expect(strtabL1Index(0x128, 8)).toBe(1);
    expect(strtabL2Index(0x128, 8)).toBe(0x28);
    expect(l1StdEntries(9)).toBe(256);
    expect(l1StdEntries(0)).toBe(0);
  });
});

describe("Stream Table Entry (IHI0070 §5.2, spec §1.6)", () => {
  const ste = fixture.translations[0]!.at_dump.walk.find((s) => s.what === "ste")!;

  it("decodes a stage-1 STE a Linux 6.1 guest wrote (Config 5, linear CD, S1DSS=SSID0, WBRA/ISH CD fetch)", () => {
    const f = decodeSte(fromWords64(ste.val as string[]));
    expect(f).toMatchObject({
      V: 1,
      Config: SteConfig.S1Translate,
      S1Fmt: 0,
      S1ContextPtr: 0x5a4e1000,
      S1CDMax: 0,
      S1DSS: 2,
      S1CIR: 1,
      S1COR: 1,
      S1CSH: 3,
      EATS: 0,
      STRW: 0,
      SHCFG: 0,
      MEV: 0,
      S2VMID: 0,
      S2TTB: 0,
    });
    expect(steConfigName(f.Config)).toBe("S1_TRANS");
    expect(hasReservedBits(steLayout, fromWords64(ste.val as string[]))).toBe(false);
  });

  it("decodes Linux's abort and bypass STEs (dw1 SHCFG = incoming, spec §9.15)", () => {
    const abort = decodeSte(words("0x0000000000000001", "0x0000100000000000", ...zero6));
    expect(abort).toMatchObject({ V: 1, Config: SteConfig.Abort, SHCFG: 1 });
    const bypass = decodeSte(words("0x0000000000000009", "0x0000100000000000", ...zero6));
    expect(bypass).toMatchObject({ V: 1, Config: SteConfig.Bypass, SHCFG: 1 });
    expect(steConfigName(bypass.Config)).toBe("BYPASS");
    expect(steConfigName(2)).toBe("UNKNOWN");
  });

  it("encodes and decodes a stage-2 STE field by field (hand-assembled dw2/dw3)", () => {
    // dw2: S2VMID 5 | VTCR{T0SZ 25, SL0 1, IR0 1, OR0 1, SH0 3, TG 0, PS 5} << 32 | S2AA64 | S2PTW | S2R.
    const hex = ["0x0000000000000d", "0", "0x044d355900000005", "0x0000000041000000", "0", "0", "0", "0"];
    const f = decodeSte(fromWords64(hex));
    expect(f).toMatchObject({
      V: 1,
      Config: SteConfig.S2Translate,
      S2VMID: 5,
      S2T0SZ: 25,
      S2SL0: 1,
      S2IR0: 1,
      S2OR0: 1,
      S2SH0: 3,
      S2TG: 0,
      S2PS: 5,
      S2AA64: 1,
      S2ENDI: 0,
      S2AFFD: 0,
      S2PTW: 1,
      S2HD: 0,
      S2HA: 0,
      S2S: 0,
      S2R: 1,
      S2TTB: 0x41000000,
    });
    expect(toHex64(encodeSte(f))).toEqual(toHex64(fromWords64(hex)));
  });

  it.each([
    ["MEV", 83],
    ["S2FWB", 89],
    ["S1STALLD", 91],
    ["DRE", 76],
    ["DCP", 81],
    ["PPAR", 82],
    ["MTCFG", 100],
    ["S2ENDI", 180],
    ["S2AFFD", 181],
    ["S2HD", 183],
    ["S2HA", 184],
    ["S2S", 185],
  ] as const)("places single-bit field %s at bit %d", (name, bit) => {
    const raw = rawBits(512);
    raw[bit >>> 5] = (1 << (bit & 31)) >>> 0;
    const f = decodeSte(raw) as unknown as Record<string, number>;
    expect(f[name]).toBe(1);
    expect(Object.entries(f).filter(([, v]) => v !== 0)).toHaveLength(1);
  });

  it.each([
    ["EATS", 1, "0x0000000010000000"],
    ["EATS", 2, "0x0000000020000000"],
    ["STRW", 2, "0x0000000080000000"],
    ["SHCFG", 3, "0x0000300000000000"],
    ["MemAttr", 0xf, "0x0000000f00000000"],
    ["ALLOCCFG", 0xf, "0x000001e000000000"],
    ["NSCFG", 3, "0x0000c00000000000"],
    ["PRIVCFG", 3, "0x0003000000000000"],
    ["INSTCFG", 3, "0x000c000000000000"],
    ["CONT", 0xf, "0x000000000001e000"],
  ] as const)("places dw1 field %s = %d as %s", (name, value, dw1) => {
    expect(toHex64(encodeSte({ [name]: value }))[1]).toBe(dw1);
  });

  it("classifies Config values by the stages they enable", () => {
    expect([0, 4, 5, 6, 7].map((c) => [steStage1Enabled(c), steStage2Enabled(c)])).toEqual([
      [false, false],
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ]);
  });

  it("decodes any 512 bits and re-encodes what the layout covers", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 16, maxLength: 16 }), (halves) => {
        const raw = Uint32Array.from(halves);
        const covered = raw.map((w, i) => w & ~steLayout.reservedMask[i]!);
        expect([...encodeSte(decodeSte(raw))]).toEqual([...covered]);
      }),
    );
  });
});

describe("nested vSTE rules (Linux arm_smmu_validate_vste, iommufd.md §3.6)", () => {
  const s1 = ["0x000000005a4e100b", "0x00000000000000d6"];

  it("allows exactly V, Config, S1Fmt, S1ContextPtr, S1CDMax (dw0) and S1DSS, S1CIR/COR/CSH, S1STALLD, EATS (dw1)", () => {
    expect(toHex64(STE_NESTING_ALLOWED_MASK)).toEqual(["0xf80fffffffffffff", "0x00000000380000ff"]);
  });

  it("accepts a guest stage-1 vSTE unchanged", () => {
    const r = checkNestedVste(fromWords64(s1));
    expect(r.ok).toBe(true);
    if (r.ok) {
      expect(toHex64(r.vste)).toEqual(s1);
      expect(r.enableAts).toBe(false);
    }
  });

  it("takes EATS=translate as a request for ATS and clears it from the vSTE", () => {
    const r = checkNestedVste(fromWords64([s1[0]!, "0x00000000100000d6"]));
    expect(r).toMatchObject({ ok: true, enableAts: true });
    if (r.ok) expect(toHex64(r.vste)[1]).toBe("0x00000000000000d6");
  });

  it("turns V = 0 into an all-zero abort vSTE whatever else is set", () => {
    const r = checkNestedVste(fromWords64(["0xfffffffffffffffe", "0xffffffffffffffff"]));
    expect(r.ok).toBe(true);
    if (r.ok) expect(toHex64(r.vste)).toEqual(["0x0000000000000000", "0x0000000000000000"]);
  });

  it.each([
    ["a stage-2 bit (SHCFG)", ["0x000000005a4e100b", "0x00001000000000d6"]],
    ["MEV", ["0x000000005a4e100b", "0x00000000000800d6"]],
    ["S1ContextPtr bit 52", ["0x001000005a4e100b", "0x00000000000000d6"]],
    ["Config S2 translate", ["0x000000005a4e100d", "0x00000000000000d6"]],
    ["Config nested", ["0x000000005a4e100f", "0x00000000000000d6"]],
    ["reserved Config 2", ["0x0000000000000005", "0"]],
    ["EATS split-stage", ["0x000000005a4e100b", "0x00000000200000d6"]],
  ])("rejects %s with EIO", (_what, hex) => {
    expect(checkNestedVste(fromWords64(hex))).toMatchObject({ ok: false, errno: "EIO" });
  });

  it("never throws on random vSTEs", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 4, maxLength: 4 }), (halves) => {
        const r = checkNestedVste(Uint32Array.from(halves));
        if (r.ok) expect(r.vste).toHaveLength(4);
      }),
    );
  });
});

describe("Context Descriptor (IHI0070 §5.4, spec §1.7)", () => {
  const cds = new Map<string, readonly string[]>();
  for (const t of fixture.translations) {
    const cd = t.at_dump.walk.find((s) => s.what === "cd")!;
    cds.set((cd.val as string[]).join(), cd.val as string[]);
  }

  it("finds the five distinct CDs of the fixture", () => {
    expect(cds.size).toBe(5);
  });

  it("decodes every CD Linux wrote: 48-bit 4K TTB0, WBWA ISH walks, EPD1, IPS 44, AA64, R, A, ASET, unique ASID", () => {
    const asids = new Set<number>();
    for (const hex of cds.values()) {
      const raw = fromWords64(hex);
      const f = decodeCd(raw);
      expect(f).toMatchObject({
        T0SZ: 16,
        TG0: 0,
        IR0: 1,
        OR0: 1,
        SH0: 3,
        EPD0: 0,
        ENDI: 0,
        T1SZ: 0,
        EPD1: 1,
        V: 1,
        IPS: 4,
        AFFD: 0,
        TBI: 0,
        AA64: 1,
        HD: 0,
        HA: 0,
        S: 0,
        R: 1,
        A: 1,
        ASET: 1,
        TTB1: 0,
        MAIR0: 0xf404ff44,
        MAIR1: 0xffffffff,
        AMAIR0: 0,
        AMAIR1: 0,
      });
      expect(f.TTB0 % 4096).toBe(0);
      asids.add(f.ASID);
      expect(hasReservedBits(cdLayout, raw)).toBe(false);
      expect(toHex64(encodeCd(f))).toEqual(hex);
    }
    expect([...asids].sort()).toEqual([1, 2, 3, 4, 5]);
  });

  it("matches each CD's ASID and TTB0 with the walk that used it", () => {
    for (const t of fixture.translations) {
      const walk = t.at_dump.walk;
      const cd = decodeCd(fromWords64(walk.find((s) => s.what === "cd")!.val as string[]));
      expect(cd.ASID).toBe(t.at_dump.asid);
      expect(cd.TTB0).toBe(Number(walk.find((s) => s.what === "pte" && s.level === 0)!.addr) & ~0xfff);
      const g = stage1Geometry(granuleFromTg0(cd.TG0)!, cd.T0SZ);
      expect(g.ok && g.geometry.startLevel).toBe(4);
    }
  });

  it("reads MAIR attributes Linux programs: NC, WB RWA, Device-nGnRE, inner-NC/outer-WB", () => {
    expect([0, 1, 2, 3, 4].map((i) => mairAttribute(0xf404ff44, 0xffffffff, i))).toEqual([0x44, 0xff, 0x04, 0xf4, 0xff]);
  });

  it.each([
    ["TG1", 2, 0, "0x0000000000800000"],
    ["T1SZ", 16, 0, "0x0000000000100000"],
    ["SH1", 3, 0, "0x0000000030000000"],
    ["WXN", 1, 0, "0x0000001000000000"],
    ["UWXN", 1, 0, "0x0000002000000000"],
    ["PAN", 1, 0, "0x0000010000000000"],
    ["HD", 1, 0, "0x0000040000000000"],
    ["HA", 1, 0, "0x0000080000000000"],
    ["S", 1, 0, "0x0000100000000000"],
    ["AFFD", 1, 0, "0x0000000800000000"],
    ["TBI", 1, 0, "0x0000004000000000"],
    ["NSCFG0", 1, 1, "0x0000000000000001"],
    ["HAD0", 1, 1, "0x0000000000000002"],
    ["HWU0g62", 1, 1, "0x8000000000000000"],
    ["HAD1", 1, 2, "0x0000000000000002"],
    ["TTB1", 0x123456789000, 2, "0x0000123456789000"],
    ["HWU1g59", 1, 2, "0x1000000000000000"],
    ["AMAIR1", 0xdeadbeef, 4, "0xdeadbeef00000000"],
  ] as const)("places %s = %s in dw%d as %s", (name, value, dw, hex) => {
    expect(toHex64(encodeCd({ [name]: value }))[dw]).toBe(hex);
  });

  it("decodes the level-1 CD descriptor", () => {
    expect(decodeLayout(l1CdLayout, words("0x0000000041230001"))).toEqual({ V: 1, L2Ptr: 0x41230000 });
  });

  it.each([
    [0, 5, { twoLevel: false, cdIndex: 5 }],
    [3, 5, { twoLevel: false, cdIndex: 5 }],
    [1, 130, { twoLevel: true, l1Index: 2, cdIndex: 2 }],
    [2, 2049, { twoLevel: true, l1Index: 2, cdIndex: 1 }],
  ] as const)("S1Fmt %d locates SubstreamID %d", (fmt, ssid, slot) => {
    expect(cdTableSlot(fmt, ssid)).toEqual(slot);
  });
});
