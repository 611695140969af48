import fc from "fast-check";
import { checkProperty } from "../support.js";
import { describe, expect, it } from "vitest";
import { fromWords64, toWords64 } from "@viommu/core";
import {
  decodeIrte,
  decodeIrtePosted,
  decodeIrteRemapped,
  decodeMsi,
  encodeCompatMsi,
  encodeIrtePosted,
  encodeIrteRemapped,
  encodeRemappableMsi,
  irteBusRangeSid,
  irteDestination,
  irteDst,
  irtEntries,
  irteHasReservedBits,
  irtePostedDescriptorAddress,
  irteSourceIdValid,
  irtaLayout,
  isRemappableMsi,
  remappableMsiIndex,
  SourceValidationType,
  vtdStructures,
} from "../../src/format/index.js";
import { decodeLayout } from "@viommu/core";
import { readMemoryRange, rawAt } from "./fixtures.js";

const hex = (words: readonly bigint[]): string[] => words.map((w) => `0x${w.toString(16).padStart(16, "0")}`);

describe("remappable and compatibility-format MSIs (VT-d §5.1.2)", () => {
  it("encodes a handle as Linux fill_msi_msg does: 0xFEE base, format bit, SHV, handle[14:0] at [19:5], handle[15] at bit 2", () => {
    expect(encodeRemappableMsi(0x10)).toEqual({ addressLo: 0xfee0_0218, addressHi: 0, data: 0 });
    expect(encodeRemappableMsi(0x8000)).toEqual({ addressLo: 0xfee0_001c, addressHi: 0, data: 0 });
    expect(encodeRemappableMsi(0xffff, 5)).toEqual({ addressLo: 0xfeef_fffc, addressHi: 0, data: 5 });
  });

  const indexCases = [
    { what: "handle 0x10, SHV, sub-handle 0", lo: 0xfee0_0218, hi: 0, data: 0, index: 0x10 },
    { what: "handle 0x10 plus sub-handle 3 (multi-MSI)", lo: 0xfee0_0218, hi: 0, data: 3, index: 0x13 },
    { what: "handle 0x8000 via bit 2", lo: 0xfee0_001c, hi: 0, data: 0, index: 0x8000 },
    { what: "SHV clear ignores the data (I/O APIC style)", lo: 0xfee0_0210, hi: 0, data: 0xffff_ffff, index: 0x10 },
    { what: "a non-zero upper address (fault 0x20)", lo: 0xfee0_0218, hi: 1, data: 0, index: -1 },
    { what: "a base other than 0xFEE (fault 0x20)", lo: 0xfed0_0218, hi: 0, data: 0, index: -1 },
    { what: "data[31:16] with SHV (fault 0x20)", lo: 0xfee0_0218, hi: 0, data: 0x1_0000, index: -1 },
  ];
  for (const c of indexCases) {
    it(`finds the IRTE index of ${c.what}`, () => {
      expect(remappableMsiIndex(c.lo, c.hi, c.data)).toBe(c.index);
      const d = decodeMsi(c.lo, c.hi, c.data);
      expect(d.format).toBe("remappable");
      if (d.format === "remappable") expect(d.reservedFault).toBe(c.index < 0);
    });
  }

  it("decodes a compatibility-format MSI: destination 1, vector 0x31, level assert", () => {
    expect(isRemappableMsi(0xfee0_1000)).toBe(false);
    expect(decodeMsi(0xfee0_100c, 0, 0x4031)).toEqual({
      format: "compatibility",
      address: { DM: 1, RH: 1, INTERRUPT_FORMAT: 0, DEST_ID: 1, ADDR_BASE: 0xfee, ADDR_UPPER: 0 },
      data: { VECTOR: 0x31, DELIVERY_MODE: 0, LEVEL: 1, TRIGGER_MODE: 0 },
    });
    expect(encodeCompatMsi({ DM: 1, RH: 1, DEST_ID: 1 }, { VECTOR: 0x31, LEVEL: 1 })).toEqual({ addressLo: 0xfee0_100c, addressHi: 0, data: 0x4031 });
  });

  it("decodes any address and data without throwing", () => {
    checkProperty(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), (lo, hi, data) => {
        const d = decodeMsi(lo, hi, data);
        if (d.format === "remappable" && !d.reservedFault) expect(remappableMsiIndex(lo, hi, data)).toBe(d.index);
      }),
    );
  });
});

describe("interrupt remapping table entries (VT-d §9.10, §9.11)", () => {
  it("decodes a remapped IRTE: the real guest's I/O APIC entry 0 (vector 0x23 to logical APIC 1, SID 0xFF00)", () => {
    const raw = fromWords64([0x0000_0100_0023_000dn, 0x4_ff00n]);
    const f = decodeIrteRemapped(raw);
    expect(f).toEqual({ P: 1, FPD: 0, DM: 1, RH: 1, TM: 0, DLM: 0, AVAIL: 0, IM: 0, V: 0x23, DST: 0x100, SID: 0xff00, SQ: 0, SVT: 1 });
    expect(irteDestination(f.DST, false)).toBe(1);
    expect(hex(toWords64(encodeIrteRemapped({ P: 1, DM: 1, RH: 1, V: 0x23, DST: irteDst(1, false), SID: 0xff00, SVT: SourceValidationType.VERIFY_SID })))).toEqual(
      hex([0x0000_0100_0023_000dn, 0x4_ff00n]),
    );
  });

  it("decodes a posted IRTE with its descriptor address split over [63:38] and [127:96]", () => {
    const words = [0x2345_67c0_0045_c001n, 0x0000_0001_0007_0100n];
    const f = decodeIrtePosted(fromWords64(words));
    expect(f).toEqual({ P: 1, FPD: 0, AVAIL: 0, URG: 1, IM: 1, VV: 0x45, PDA_LO: 0x2345_67c0, SID: 0x100, SQ: 3, SVT: 1, PDA_HI: 1 });
    expect(irtePostedDescriptorAddress(f)).toBe(0x1_2345_67c0n);
    expect(hex(toWords64(encodeIrtePosted({ P: 1, URG: 1, VV: 0x45, SID: 0x100, SQ: 3, SVT: 1, pda: 0x1_2345_67c0n })))).toEqual(hex(words));
    expect(decodeIrte(fromWords64(words))).toEqual({
      name: "POSTED",
      code: 1,
      fields: { P: 1, FPD: 0, AVAIL: 0, URG: 1, IM: 1, VV: 0x45, SID: 0x100, SQ: 3, SVT: 1, PDA: 0x1_2345_67c0n },
    });
  });

  const reservedCases = [
    { what: "remapped bit 12", words: [0x1001n, 0n], eime: true, reserved: true },
    { what: "remapped bit 24", words: [0x0100_0001n, 0n], eime: true, reserved: true },
    { what: "remapped bit 84", words: [0x1n, 0x10_0000n], eime: true, reserved: true },
    { what: "xAPIC DST bits [39:32]", words: [0x0000_0001_0000_0001n, 0n], eime: false, reserved: true },
    { what: "xAPIC DST bits [63:48]", words: [0x0001_0000_0000_0001n, 0n], eime: false, reserved: true },
    { what: "the same DST bits in x2APIC mode", words: [0x0001_0001_0000_0001n, 0n], eime: true, reserved: false },
    { what: "posted bit 2", words: [0x8005n, 0n], eime: true, reserved: true },
    { what: "posted bit 24", words: [0x0100_8001n, 0n], eime: true, reserved: true },
    { what: "posted bit 84", words: [0x8001n, 0x10_0000n], eime: true, reserved: true },
  ];
  for (const c of reservedCases) {
    it(`${c.reserved ? "flags" : "accepts"} ${c.what}`, () => expect(irteHasReservedBits(fromWords64(c.words), c.eime)).toBe(c.reserved));
  }

  it("validates source ids with the SQ masks and bus ranges", () => {
    expect(irteSourceIdValid(SourceValidationType.VERIFY_SID, 0, 0x0200, 0x0200)).toBe(true);
    expect(irteSourceIdValid(SourceValidationType.VERIFY_SID, 0, 0x0200, 0x0201)).toBe(false);
    expect(irteSourceIdValid(SourceValidationType.VERIFY_SID, 3, 0x00f8, 0x00ff)).toBe(true);
    expect(irteSourceIdValid(SourceValidationType.VERIFY_SID, 1, 0x0200, 0x0204)).toBe(true);
    expect(irteSourceIdValid(SourceValidationType.VERIFY_SID, 1, 0x0200, 0x0202)).toBe(false);
    // SVT 10b: start bus in SID[15:8], end bus in SID[7:0] (VT-d §9.10; Linux set_irte_verify_bus writes
    // (start_bus << 8) | end_bus), both inclusive.
    for (const [bus, valid] of [[1, false], [2, true], [4, true], [5, true], [6, false]] as const) {
      expect(irteSourceIdValid(SourceValidationType.VERIFY_BUS, 0, 0x0205, bus << 8), `bus ${bus}`).toBe(valid);
    }
    // Start above end is an empty range: no bus passes.
    expect([0, 2, 3, 5, 0xff].some((bus) => irteSourceIdValid(SourceValidationType.VERIFY_BUS, 0, 0x0502, bus << 8))).toBe(false);
    expect(irteBusRangeSid(2, 5)).toBe(0x0205);
    expect(irteSourceIdValid(SourceValidationType.NONE, 0, 0, 0x1234)).toBe(true);
    expect(irteSourceIdValid(SourceValidationType.RESERVED, 0, 0, 0)).toBe(false);
  });

  it("decodes any 128 bits as an irte structure without throwing", () => {
    const d = vtdStructures.find((s) => s.id === "irte")!;
    checkProperty(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (lo, hi) => void d.decode(fromWords64([lo, hi]))));
  });
});

describe("the interrupt remapping table the real Linux 6.1 guest left in memory (IRTA 0x1A0000F)", () => {
  it("holds 20 present remapped entries that Linux wrote and our encoder reproduces bit for bit", async () => {
    const irta = decodeLayout(irtaLayout, fromWords64([0x0000_0000_01a0_000fn]));
    expect([irta.IRTA, irta.EIME, irtEntries(irta.S)]).toEqual([0x01a0_0000n, 0, 65536]);
    const table = await readMemoryRange(0x01a0_0000, 4096);
    const entries: { index: number; V: number; SID: number; apic: number }[] = [];
    for (let index = 0; index < 256; index++) {
      const raw = rawAt(table, 16 * index, 128);
      if (raw.every((w) => w === 0)) continue;
      expect(irteHasReservedBits(raw, false)).toBe(false);
      const f = decodeIrteRemapped(raw);
      // What Linux's intel_irq_remapping prepare_irte writes in xAPIC mode: present, logical destination with
      // redirection hint, fixed delivery, source-id verification of the whole requester id.
      expect(f).toMatchObject({ P: 1, FPD: 0, DM: 1, RH: 1, TM: 0, DLM: 0, IM: 0, SQ: 0, SVT: SourceValidationType.VERIFY_SID });
      expect([...encodeIrteRemapped({ P: 1, DM: 1, RH: 1, V: f.V, DST: irteDst(irteDestination(f.DST, false), false), SID: f.SID, SVT: 1 })]).toEqual([...raw]);
      entries.push({ index, V: f.V, SID: f.SID, apic: irteDestination(f.DST, false) });
    }
    expect(entries).toHaveLength(20);
    // I/O APIC pins (SID 0xFF00 from the DMAR IOAPIC scope on bus 0xFF) and MSIs of 00:04.0, 00:06.0, 00:07.0,
    // 00:08.0, 01:00.0 and 02:00.0.
    expect(entries.slice(0, 6).map((e) => [e.index, e.SID, e.V, e.apic])).toEqual([
      [0, 0xff00, 0x23, 1],
      [1, 0xff00, 0x30, 1],
      [3, 0xff00, 0x24, 1],
      [7, 0xff00, 0x24, 2],
      [8, 0xff00, 0x21, 2],
      [11, 0xff00, 0x23, 2],
    ]);
    expect([...new Set(entries.slice(6).map((e) => e.SID))].sort((a, b) => a - b)).toEqual([0x20, 0x30, 0x38, 0x40, 0x100, 0x200]);
  });
});
