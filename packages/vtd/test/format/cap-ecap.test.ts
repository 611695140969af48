import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromWords64, toWords64 } from "@viommu/core";
import {
  capDomainCount,
  capLayout,
  capMgawBits,
  capSupportsLevels,
  decodeCap,
  decodeEcap,
  ecapLayout,
  encodeCap,
  encodeEcap,
  faultRecordOffset,
  iotlbRegisterBlockOffset,
  sagawFor,
} from "../../src/format/index.js";

const ZERO_CAP = Object.fromEntries(capLayout.fields.map((f) => [f.name, 0]));
const ZERO_ECAP = Object.fromEntries(ecapLayout.fields.map((f) => [f.name, 0]));

/**
 * Known register values read by real Linux guests (dmesg "DMAR: dmar0: reg_base_addr fed90000 ver 1:0 cap …
 * ecap …" lines quoted in public mailing-list posts), decoded field by field by hand from the bit positions of
 * VT-d spec §11.4.2 / §11.4.3 (../shared/spec/x86.md A2, A3).
 */
const capVectors = [
  {
    source: "QEMU 7.2 q35, intel-iommu aw-bits=48, caching-mode=off, device-iotlb=on (the fixture's configuration)",
    value: 0x00d2_008c_222f_0606n,
    fields: { ND: 6, SAGAW: 0b00110, MGAW: 47, FRO: 0x22, SLLPS: 3, PSI: 1, NFR: 0, MAMV: 18, DWD: 1, DRD: 1 },
  },
  {
    source: "QEMU q35, aw-bits=39, caching-mode=on",
    value: 0x00d2_008c_2226_0286n,
    fields: { ND: 6, CM: 1, SAGAW: 0b00010, MGAW: 38, FRO: 0x22, SLLPS: 3, PSI: 1, MAMV: 18, DWD: 1, DRD: 1 },
  },
  {
    source: "Intel client platform (real hardware)",
    value: 0x00d2_008c_4066_0462n,
    fields: { ND: 2, PLMR: 1, PHMR: 1, SAGAW: 0b00100, MGAW: 38, ZLR: 1, FRO: 0x40, SLLPS: 3, PSI: 1, MAMV: 18, DWD: 1, DRD: 1 },
  },
  {
    source: "hand-built: every single-bit flag of CAP bits 56–63",
    value: 0xf900_0000_0000_0000n,
    fields: { FL1GP: 1, PI: 1, FL5LP: 1, ECMDS: 1, ESIRTPS: 1, ESRTPS: 1 },
  },
];

const ecapVectors = [
  {
    source: "QEMU 7.2, intremap=on, device-iotlb=on (pairs with cap d2008c222f0606)",
    value: 0x0000_0000_00f0_0f5en,
    fields: { QI: 1, DT: 1, IR: 1, EIM: 1, PT: 1, IRO: 0xf, MHMV: 0xf },
  },
  {
    source: "QEMU, intremap=on, no device-iotlb",
    value: 0x0000_0000_00f0_0f5an,
    fields: { QI: 1, IR: 1, EIM: 1, PT: 1, IRO: 0xf, MHMV: 0xf },
  },
  {
    source: "Intel client platform (real hardware)",
    value: 0x0000_0000_00f0_50dan,
    fields: { QI: 1, IR: 1, EIM: 1, PT: 1, SC: 1, IRO: 0x50, MHMV: 0xf },
  },
  {
    source: "QEMU 7.2 scalable mode (../shared/spec/x86.md PART C): SMTS and SLTS, PSS = 0, no PASID",
    value: 0x0000_4800_80f0_0f4an,
    fields: { QI: 1, IR: 1, PT: 1, IRO: 0xf, MHMV: 0xf, SRS: 1, SMTS: 1, SLTS: 1 },
  },
  {
    source: "hand-built: PSS = 19 (20-bit PASIDs), PASID, FLTS, RPS, PMS, ADMS, RPRIVS",
    value: (19n << 35n) | (1n << 40n) | (1n << 47n) | (1n << 49n) | (1n << 51n) | (1n << 52n) | (1n << 53n),
    fields: { PSS: 19, PASID: 1, FLTS: 1, RPS: 1, PMS: 1, ADMS: 1, RPRIVS: 1 },
  },
];

describe("CAP_REG (VT-d §11.4.2)", () => {
  for (const v of capVectors) {
    it(`decodes ${v.source}`, () => {
      expect(decodeCap(fromWords64([v.value]))).toEqual({ ...ZERO_CAP, ...v.fields });
    });
    it(`encodes ${v.source} back to 0x${v.value.toString(16)}`, () => {
      expect(toWords64(encodeCap(v.fields))).toEqual([v.value]);
    });
  }

  it("derives the QEMU fixture's geometry: 65536 domains, 3- and 4-level tables, 48-bit MGAW, FRCD at 0x220", () => {
    const cap = decodeCap(fromWords64([0x00d2_008c_222f_0606n]));
    expect(capDomainCount(cap.ND)).toBe(65536);
    expect(capSupportsLevels(cap.SAGAW, 3)).toBe(true);
    expect(capSupportsLevels(cap.SAGAW, 4)).toBe(true);
    expect(capSupportsLevels(cap.SAGAW, 5)).toBe(false);
    expect(capMgawBits(cap.MGAW)).toBe(48);
    expect(faultRecordOffset(cap.FRO, 0)).toBe(0x220);
    expect(sagawFor([3, 4])).toBe(cap.SAGAW);
  });

  it("decodes any 64 bits and re-encodes every non-reserved bit", () => {
    const reserved = (1n << 13n) | (1n << 14n) | (1n << 15n) | (1n << 38n) | (1n << 57n) | (1n << 58n);
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (v) => {
        const fields = decodeCap(fromWords64([v]));
        expect(toWords64(encodeCap(fields))).toEqual([v & ~reserved]);
      }),
    );
  });
});

describe("ECAP_REG (VT-d §11.4.3)", () => {
  for (const v of ecapVectors) {
    it(`decodes ${v.source}`, () => {
      expect(decodeEcap(fromWords64([v.value]))).toEqual({ ...ZERO_ECAP, ...v.fields });
    });
    it(`encodes ${v.source}`, () => {
      expect(toWords64(encodeEcap(v.fields))).toEqual([v.value]);
    });
  }

  it("places QEMU's IOTLB registers at 0xF0 (IVA) from ECAP.IRO", () => {
    expect(iotlbRegisterBlockOffset(decodeEcap(fromWords64([0xf00f5en])).IRO)).toBe(0xf0);
  });

  it("leaves the deprecated and reserved bits (5, 18–19, 24, 28, 32, 50, 54–63) unnamed", () => {
    const unnamed = [5, 18, 19, 24, 28, 32, 50, ...Array.from({ length: 10 }, (_, i) => 54 + i)];
    const mask = unnamed.reduce((m, b) => m | (1n << BigInt(b)), 0n);
    expect(toWords64(ecapLayout.reservedMask)).toEqual([mask]);
  });
});
