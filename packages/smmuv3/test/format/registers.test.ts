import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { decodeLayout, encodeLayout, fromWords64, rawBits } from "@viommu/core";
import {
  CmdqError,
  GERROR_ERR_MASK,
  GerrorBit,
  addressSizeBits,
  addressSizeCode,
  aidrLayout,
  cmdqBaseLayout,
  cmdqConsLayout,
  cmdqErrorName,
  cmdqProdLayout,
  cr0Layout,
  cr1Layout,
  cr2Layout,
  effectiveOutputBits,
  eventqBaseLayout,
  eventqConsLayout,
  eventqProdLayout,
  gbpaLayout,
  gerrorActive,
  gerrorLayout,
  gerrorRaise,
  idr0Layout,
  idr1Layout,
  idr3Layout,
  idr5Layout,
  iidrLayout,
  irqCfg0Layout,
  irqCfg2Layout,
  irqCtrlLayout,
  priqProdLayout,
  queueAdvance,
  queueBaseAddress,
  queueEmpty,
  queueFree,
  queueFull,
  queueIndex,
  queuePointer,
  queueUsed,
  queueWrap,
  registerAt,
  registerByName,
  smmuRegisterMap,
  strtabBaseCfgLayout,
  strtabBaseLayout,
} from "../../src/format/index.js";
import { fixtureJson, type FixtureTranslations } from "./fixtures.js";

/** A 32-bit register value as raw bits. */
function reg32(value: number): Uint32Array {
  const raw = rawBits(32);
  raw[0] = value >>> 0;
  return raw;
}

describe("register map (IHI0070 §6.2, spec §1.1)", () => {
  it.each([
    ["IDR0", 0x000, 32, 0],
    ["IIDR", 0x018, 32, 0],
    ["AIDR", 0x01c, 32, 0],
    ["CR0ACK", 0x024, 32, 0],
    ["GBPA", 0x044, 32, 0],
    ["IRQ_CTRLACK", 0x054, 32, 0],
    ["GERRORN", 0x064, 32, 0],
    ["GERROR_IRQ_CFG0", 0x068, 64, 0],
    ["GERROR_IRQ_CFG2", 0x074, 32, 0],
    ["STRTAB_BASE", 0x080, 64, 0],
    ["STRTAB_BASE_CFG", 0x088, 32, 0],
    ["CMDQ_BASE", 0x090, 64, 0],
    ["CMDQ_PROD", 0x098, 32, 0],
    ["CMDQ_CONS", 0x09c, 32, 0],
    ["EVTQ_BASE", 0x0a0, 64, 0],
    ["EVTQ_IRQ_CFG0", 0x0b0, 64, 0],
    ["EVTQ_IRQ_CFG1", 0x0b8, 32, 0],
    ["PRIQ_BASE", 0x0c0, 64, 0],
    ["PRIQ_IRQ_CFG2", 0x0dc, 32, 0],
    ["EVTQ_PROD", 0x100a8, 32, 1],
    ["EVTQ_CONS", 0x100ac, 32, 1],
    ["PRIQ_PROD", 0x100c8, 32, 1],
    ["PRIQ_CONS", 0x100cc, 32, 1],
  ] as const)("%s is at offset %i, %i bits, page %i", (name, offset, width, page) => {
    const info = registerByName(name);
    expect(info).toMatchObject({ offset, width, page });
    expect(registerAt(offset)?.name).toBe(name);
  });

  it("has no two registers overlapping", () => {
    const sorted = [...smmuRegisterMap].sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < sorted.length; i++) {
      expect(sorted[i]!.offset).toBeGreaterThanOrEqual(sorted[i - 1]!.offset + sorted[i - 1]!.width / 8);
    }
  });

  it("aliases page-1 queue pointers onto page 0 only for page-0-only implementations", () => {
    expect(registerAt(0xa8)).toBeUndefined();
    expect(registerAt(0xa8, true)?.name).toBe("EVTQ_PROD");
    expect(registerAt(0xcc, true)?.name).toBe("PRIQ_CONS");
  });
});

describe("ID registers (IHI0070 §6.3.1–6.3.6, spec §1.2)", () => {
  it("decodes QEMU 7.2's IDR0 (S1P, TTF=AArch64, COHACC, ASID16, TTENDIAN=LE, STALL_MODEL=1, TERM_MODEL, ST_LEVEL=2-level)", () => {
    // Hand-assembled from the bit positions: 0x2 | 2<<2 | 1<<4 | 1<<12 | 2<<21 | 1<<24 | 1<<26 | 1<<27.
    const f = decodeLayout(idr0Layout, reg32(0x0d40101a));
    expect(f).toMatchObject({ S2P: 0, S1P: 1, TTF: 2, COHACC: 1, BTM: 0, HTTU: 0, ASID16: 1, MSI: 0, TTENDIAN: 2, STALL_MODEL: 1, TERM_MODEL: 1, ST_LEVEL: 1, RME_IMPL: 0 });
    expect(encodeLayout(idr0Layout, f)[0]).toBe(0x0d40101a);
  });

  it("decodes IDR1 queue and ID sizes (SIDSIZE 16, EVENTQS 19, CMDQS 19)", () => {
    const f = decodeLayout(idr1Layout, reg32(0x02730010));
    expect(f).toMatchObject({ SIDSIZE: 16, SSIDSIZE: 0, PRIQS: 0, EVENTQS: 19, CMDQS: 19, REL: 0, ECMDQ: 0 });
    expect(decodeLayout(idr1Layout, reg32(0x80000000)).ECMDQ).toBe(1);
  });

  it("decodes QEMU 7.2's IDR3 = 0x1404 as HAD, RIL and BBML = 2 (spec §9.17)", () => {
    expect(decodeLayout(idr3Layout, reg32(0x1404))).toMatchObject({ HAD: 1, RIL: 1, BBML: 2, FWB: 0, STT: 0, XNX: 0 });
  });

  it("decodes IDR5 (OAS 44 bits, 4K and 64K granules, STALL_MAX)", () => {
    const f = decodeLayout(idr5Layout, reg32(0xffff0454));
    expect(f).toEqual({ OAS: 4, GRAN4K: 1, GRAN16K: 0, GRAN64K: 1, VAX: 1, STALL_MAX: 0xffff });
    expect(addressSizeBits(f.OAS)).toBe(44);
  });

  it("decodes IIDR and AIDR", () => {
    expect(decodeLayout(iidrLayout, reg32(0x4c34243b))).toEqual({ Implementer: 0x43b, Revision: 2, Variant: 4, ProductID: 0x4c3 });
    expect(decodeLayout(aidrLayout, reg32(0x1))).toEqual({ ArchMinorRev: 1, ArchMajorRev: 0 });
  });

  it.each([
    [0, 32],
    [1, 36],
    [2, 40],
    [3, 42],
    [4, 44],
    [5, 48],
    [6, 52],
    [7, undefined],
  ])("address-size code %d is %s bits", (code, bits) => {
    expect(addressSizeBits(code)).toBe(bits);
    if (bits !== undefined) expect(addressSizeCode(bits)).toBe(code);
  });

  it("caps the output size at OAS and at 48 bits without the 64K granule", () => {
    expect(effectiveOutputBits(5, 4, 12)).toBe(44);
    expect(effectiveOutputBits(2, 5, 12)).toBe(40);
    expect(effectiveOutputBits(6, 6, 12)).toBe(48);
    expect(effectiveOutputBits(6, 6, 16)).toBe(52);
    expect(effectiveOutputBits(7, 5, 12)).toBe(48);
  });
});

describe("control registers (IHI0070 §6.3.9–6.3.21, spec §1.3, §1.10)", () => {
  it("decodes the CR0/CR1/CR2 values Linux writes", () => {
    expect(decodeLayout(cr0Layout, reg32(0xd))).toEqual({ SMMUEN: 1, PRIQEN: 0, EVTQEN: 1, CMDQEN: 1, ATSCHK: 0, VMW: 0 });
    // ISH write-back tables and queues: TABLE_SH 3, TABLE_OC 1, TABLE_IC 1, QUEUE_SH 3, QUEUE_OC 1, QUEUE_IC 1.
    expect(decodeLayout(cr1Layout, reg32(0xd75))).toEqual({ QUEUE_IC: 1, QUEUE_OC: 1, QUEUE_SH: 3, TABLE_IC: 1, TABLE_OC: 1, TABLE_SH: 3 });
    expect(decodeLayout(cr2Layout, reg32(0x6))).toEqual({ E2H: 0, RECINVSID: 1, PTM: 1 });
    expect(decodeLayout(cr0Layout, reg32(0x1c0)).VMW).toBe(7);
  });

  it("decodes GBPA with UPDATE and ABORT, and QEMU's SHCFG=1 reset value", () => {
    expect(decodeLayout(gbpaLayout, reg32(0x80100000))).toMatchObject({ UPDATE: 1, ABORT: 1, SHCFG: 0 });
    expect(decodeLayout(gbpaLayout, reg32(0x00001000))).toMatchObject({ UPDATE: 0, ABORT: 0, SHCFG: 1 });
    expect(decodeLayout(gbpaLayout, reg32(0x000f3f1f))).toEqual({ MemAttr: 0xf, MTCFG: 1, ALLOCCFG: 0xf, SHCFG: 3, PRIVCFG: 3, INSTCFG: 3, ABORT: 0, UPDATE: 0 });
  });

  it("decodes IRQ_CTRL and the MSI configuration registers", () => {
    expect(decodeLayout(irqCtrlLayout, reg32(0x7))).toEqual({ GERROR_IRQEN: 1, PRIQ_IRQEN: 1, EVTQ_IRQEN: 1 });
    expect(decodeLayout(irqCfg0Layout, fromWords64(["0x000ffffffffffffc"])).ADDR).toBe(2 ** 52 - 4);
    expect(decodeLayout(irqCfg0Layout, fromWords64(["0x0000000008090040"])).ADDR).toBe(0x08090040);
    expect(decodeLayout(irqCfg2Layout, reg32(0x31))).toEqual({ MemAttr: 1, SH: 3 });
  });

  it("names every GERROR bit at its position, with Linux's 0x1fd mask", () => {
    const all = decodeLayout(gerrorLayout, reg32(0x1fd));
    expect(Object.values(all).every((v) => v === 1)).toBe(true);
    expect(Object.values(GerrorBit).reduce((a, b) => a | b, 0)).toBe(GERROR_ERR_MASK);
    expect(decodeLayout(gerrorLayout, reg32(GerrorBit.SFM_ERR))).toMatchObject({ SFM_ERR: 1, CMDQ_ERR: 0 });
  });

  it("raises an error by toggling GERROR only when it is not already active", () => {
    let gerror = 0;
    const gerrorn = 0;
    gerror = gerrorRaise(gerror, gerrorn, GerrorBit.CMDQ_ERR);
    expect(gerrorActive(gerror, gerrorn)).toBe(GerrorBit.CMDQ_ERR);
    expect(gerrorRaise(gerror, gerrorn, GerrorBit.CMDQ_ERR)).toBe(gerror);
    // Software acknowledges by copying GERROR into GERRORN; the next error toggles back to 0.
    expect(gerrorActive(gerror, gerror)).toBe(0);
    expect(gerrorRaise(gerror, gerror, GerrorBit.CMDQ_ERR)).toBe(0);
  });
});

describe("queue registers (IHI0070 §3.5, §6.3.26–6.3.35, spec §1.4, §1.9)", () => {
  const fixture = fixtureJson<FixtureTranslations>("translations.json");

  it("decodes the CMDQ_BASE and EVTQ_BASE a Linux guest wrote", () => {
    expect(decodeLayout(cmdqBaseLayout, fromWords64([fixture.cmdq_base]))).toEqual({ LOG2SIZE: 16, ADDR: 0x54500000, RA: 1 });
    expect(decodeLayout(eventqBaseLayout, fromWords64([fixture.eventq_base]))).toEqual({ LOG2SIZE: 15, ADDR: 0x54600000, WA: 1 });
  });

  it("decodes STRTAB_BASE and STRTAB_BASE_CFG the guest wrote (2-level, SPLIT 8, 2^16 StreamIDs)", () => {
    expect(decodeLayout(strtabBaseLayout, fromWords64([fixture.strtab_base]))).toEqual({ ADDR: 0x5a4d7000, RA: 1 });
    expect(decodeLayout(strtabBaseCfgLayout, reg32(Number(fixture.strtab_base_cfg)))).toEqual({ LOG2SIZE: 16, SPLIT: 8, FMT: 1 });
  });

  it("decodes PROD/CONS with ERR and overflow flags", () => {
    expect(decodeLayout(cmdqConsLayout, reg32(0x01000123))).toEqual({ RD: 0x123, ERR: CmdqError.CERROR_ILL });
    expect(decodeLayout(cmdqProdLayout, reg32(0x000fffff))).toEqual({ WR: 0xfffff });
    expect(decodeLayout(eventqProdLayout, reg32(0x80008005))).toEqual({ WR: 0x8005, OVFLG: 1 });
    expect(decodeLayout(eventqConsLayout, reg32(0x80000004))).toEqual({ RD: 4, OVACKFLG: 1 });
    expect(decodeLayout(priqProdLayout, reg32(0x7))).toEqual({ WR: 7, OVFLG: 0 });
  });

  it.each([
    [0, "CERROR_NONE"],
    [1, "CERROR_ILL"],
    [2, "CERROR_ABT"],
    [3, "CERROR_ATC_INV_SYNC"],
    [4, "UNKNOWN"],
    [0x7f, "UNKNOWN"],
  ])("CMDQ_CONS.ERR %d is %s", (code, name) => {
    expect(cmdqErrorName(code)).toBe(name);
  });

  it.each([
    // prod, cons, log2size, empty, full, used
    [0x000, 0x000, 8, true, false, 0],
    [0x100, 0x000, 8, false, true, 256],
    [0x105, 0x005, 8, false, true, 256],
    [0x005, 0x1ff, 8, false, false, 6],
    [0x103, 0x0ff, 8, false, false, 4],
    [0x80000003, 0x80000003, 4, true, false, 0],
    [0x01000011, 0x00000001, 4, false, true, 16],
  ])("prod %i cons %i (2^%i entries): empty %s, full %s, %d used", (prod, cons, log2, empty, full, used) => {
    expect(queueEmpty(prod, cons, log2)).toBe(empty);
    expect(queueFull(prod, cons, log2)).toBe(full);
    expect(queueUsed(prod, cons, log2)).toBe(used);
    expect(queueFree(prod, cons, log2)).toBe(2 ** log2 - used);
  });

  it("splits a pointer into index and wrap and builds it back", () => {
    expect(queueIndex(0x1ff, 8)).toBe(0xff);
    expect(queueWrap(0x1ff, 8)).toBe(1);
    expect(queuePointer(0xff, 1, 8)).toBe(0x1ff);
    expect(queueWrap(0x8000_0100, 8)).toBe(1);
  });

  it("advances CONS keeping ERR, toggling the wrap bit at the end of the queue", () => {
    expect(queueAdvance(0x010000ff, 8)).toBe(0x01000100);
    expect(queueAdvance(0x010001ff, 8)).toBe(0x01000000);
    expect(queueAdvance(0x80000003, 2, 6)).toBe(0x80000001);
  });

  it("aligns a queue base to its size, at least 32 bytes", () => {
    expect(queueBaseAddress(0x54500000, 16, 16)).toBe(0x54500000);
    expect(queueBaseAddress(0x54500ff0, 8, 16)).toBe(0x54500000);
    expect(queueBaseAddress(0x54500030, 0, 16)).toBe(0x54500020);
  });

  it("advancing never changes the bits above the pointer and stays consistent with queueUsed", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 19 }), fc.integer({ min: 0, max: 1 << 20 }), (reg, log2, n) => {
        const next = queueAdvance(reg, log2, n);
        const high = ~(2 ** (log2 + 1) - 1) >>> 0;
        expect((next & high) >>> 0).toBe((reg & high) >>> 0);
        expect(queueUsed(next, reg, log2)).toBe(n % 2 ** (log2 + 1));
      }),
    );
  });
});
