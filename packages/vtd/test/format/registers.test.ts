import fc from "fast-check";
import { checkProperty } from "../support.js";
import { describe, expect, it } from "vitest";
import { decodeLayout, encodeLayout, fromWords64, jsonFields, toWords64, type Layout } from "@viommu/core";
import {
  aflogLayout,
  ccmdLayout,
  DescriptorWidth,
  feaddrLayout,
  fectlLayout,
  fedataLayout,
  fstsLayout,
  gcmdLayout,
  gstsLayout,
  invalidationQueueEntries,
  invalidationQueueIndex,
  iotlbRegLayout,
  iqaLayout,
  iqercdLayout,
  iqhLayout,
  iqtLayout,
  irtaLayout,
  irtEntries,
  ivaLayout,
  pmenLayout,
  pqaLayout,
  prsLayout,
  registerAt,
  rtaddrLayout,
  TranslationTableMode,
  verLayout,
  vtdCapabilityPlacedRegisters,
  vtdRegisterMap,
  vtdStructures,
} from "../../src/format/index.js";

describe("VT-d register map (VT-d chapter 11)", () => {
  /** Offsets as Linux (DMAR_*_REG) and QEMU (hw/i386/intel_iommu_internal.h) define them. */
  const known: [string, number, number][] = [
    ["VER", 0x0, 32], ["CAP", 0x8, 64], ["ECAP", 0x10, 64], ["GCMD", 0x18, 32], ["GSTS", 0x1c, 32], ["RTADDR", 0x20, 64],
    ["CCMD", 0x28, 64], ["FSTS", 0x34, 32], ["FECTL", 0x38, 32], ["FEDATA", 0x3c, 32], ["FEADDR", 0x40, 32], ["FEUADDR", 0x44, 32],
    ["AFLOG", 0x58, 64], ["PMEN", 0x64, 32], ["PLMBASE", 0x68, 32], ["PLMLIMIT", 0x6c, 32], ["PHMBASE", 0x70, 64], ["PHMLIMIT", 0x78, 64],
    ["IQH", 0x80, 64], ["IQT", 0x88, 64], ["IQA", 0x90, 64], ["ICS", 0x9c, 32], ["IECTL", 0xa0, 32], ["IEDATA", 0xa4, 32],
    ["IEADDR", 0xa8, 32], ["IEUADDR", 0xac, 32], ["IQERCD", 0xb0, 64], ["IRTA", 0xb8, 64], ["PQH", 0xc0, 64], ["PQT", 0xc8, 64],
    ["PQA", 0xd0, 64], ["PRS", 0xdc, 32], ["PECTL", 0xe0, 32], ["PEDATA", 0xe4, 32], ["PEADDR", 0xe8, 32], ["PEUADDR", 0xec, 32],
    ["MTRRCAP", 0x100, 64], ["MTRRDEF", 0x108, 64], ["MTRR_FIX64K_00000", 0x120, 64], ["MTRR_FIX4K_F8000", 0x170, 64],
    ["MTRR_PHYSBASE0", 0x180, 64], ["MTRR_PHYSMASK9", 0x218, 64], ["PERFCAP", 0x300, 64], ["ECMD", 0x400, 64], ["ECCAP", 0x430, 64],
    ["VCMD", 0xe00, 64], ["VCRSP", 0xe10, 64], ["VCCAP", 0xe30, 64],
  ];
  for (const [name, offset, width] of known) {
    it(`places ${name} at 0x${offset.toString(16)} (${width}-bit)`, () => {
      expect(registerAt(offset)).toMatchObject({ name, offset, width });
    });
  }

  it("has no overlapping registers, in address order", () => {
    let end = 0;
    for (const r of vtdRegisterMap) {
      expect(r.offset!).toBeGreaterThanOrEqual(end);
      end = r.offset! + r.width / 8;
    }
    expect(vtdRegisterMap.map((r) => r.name)).toHaveLength(new Set(vtdRegisterMap.map((r) => r.name)).size);
    expect(vtdCapabilityPlacedRegisters.map((r) => r.name)).toEqual(["IVA", "IOTLB", "FRCD"]);
  });
});

/** Register values worked out by hand from VT-d §11.4, and the values the real guest wrote (translations.json). */
const vectors: { what: string; layout: Layout; value: bigint; fields: Record<string, number | bigint> }[] = [
  { what: "VER of QEMU (1.0)", layout: verLayout, value: 0x10n, fields: { MIN: 0, MAX: 1 } },
  { what: "GCMD enabling translation, QI, IR and latching IRTA", layout: gcmdLayout, value: 0x8700_0000n, fields: { TE: 1, QIE: 1, IRE: 1, SIRTP: 1, CFI: 0, WBF: 0, EAFL: 0, SFL: 0, SRTP: 0 } },
  { what: "GSTS with TES, RTPS, QIES, IRES, IRTPS, CFIS", layout: gstsLayout, value: 0xc780_0000n, fields: { TES: 1, RTPS: 1, QIES: 1, IRES: 1, IRTPS: 1, CFIS: 1, WBFS: 0, AFLS: 0, FLS: 0 } },
  { what: "RTADDR the real guest wrote (legacy)", layout: rtaddrLayout, value: 0x0387_f000n, fields: { TTM: TranslationTableMode.LEGACY, RTA: 0x0387_f000n } },
  { what: "RTADDR with TTM = scalable (Linux DMA_RTADDR_SMT)", layout: rtaddrLayout, value: 0x0387_f400n, fields: { TTM: TranslationTableMode.SCALABLE, RTA: 0x0387_f000n } },
  { what: "RTADDR with TTM = abort-DMA", layout: rtaddrLayout, value: 0xc00n, fields: { TTM: TranslationTableMode.ABORT_DMA, RTA: 0n } },
  { what: "CCMD device-selective with FM 3", layout: ccmdLayout, value: 0xe000_0003_0200_0009n, fields: { ICC: 1, CIRG: 3, CAIG: 0, FM: 3, SID: 0x200, DID: 9 } },
  { what: "CCMD global completed (CAIG 1, ICC 0)", layout: ccmdLayout, value: 0x2800_0000_0000_0000n, fields: { ICC: 0, CIRG: 1, CAIG: 1, FM: 0, SID: 0, DID: 0 } },
  { what: "IOTLB_REG domain-selective with drains", layout: iotlbRegLayout, value: 0xa003_0009_0000_0000n, fields: { IVT: 1, IIRG: 2, IAIG: 0, DR: 1, DW: 1, DID: 9 } },
  { what: "IVA of 4 pages at 0xFFFFE000, leaf hint", layout: ivaLayout, value: 0xffff_e042n, fields: { ADDR: 0xffff_e000n, IH: 1, AM: 2 } },
  { what: "FSTS with PPF, IQE and FRI 3", layout: fstsLayout, value: 0x312n, fields: { PFO: 0, PPF: 1, AFO: 0, APF: 0, IQE: 1, ICE: 0, ITE: 0, PRO: 0, FRI: 3 } },
  { what: "FECTL masked with a pending event", layout: fectlLayout, value: 0xc000_0000n, fields: { IM: 1, IP: 1 } },
  { what: "FEDATA", layout: fedataLayout, value: 0x4021n, fields: { IMD: 0x4021, EIMD: 0 } },
  { what: "FEADDR", layout: feaddrLayout, value: 0xfee0_0000n, fields: { MA: 0xfee0_0000 } },
  { what: "IQA the real guest wrote (128-bit descriptors, one page)", layout: iqaLayout, value: 0x019e_a000n, fields: { QS: 0, DW: DescriptorWidth.DW_128, IQA: 0x019e_a000n } },
  { what: "IQA a scalable-mode Linux guest wrote (DW = 1, QS = 1)", layout: iqaLayout, value: 0x019f_4801n, fields: { QS: 1, DW: DescriptorWidth.DW_256, IQA: 0x019f_4000n } },
  { what: "IQH at descriptor 4 of a 128-bit queue", layout: iqhLayout, value: 0x40n, fields: { QH: 0x40 } },
  { what: "IQT at the last descriptor of a 256-entry 128-bit queue", layout: iqtLayout, value: 0xff0n, fields: { QT: 0xff0 } },
  { what: "IQERCD", layout: iqercdLayout, value: 0x0200_0100_0000_0004n, fields: { IQEI: 4, ITESID: 0x100, ICESID: 0x200 } },
  { what: "IRTA the real guest wrote (65536 entries, xAPIC)", layout: irtaLayout, value: 0x01a0_000fn, fields: { S: 15, EIME: 0, IRTA: 0x01a0_0000n } },
  { what: "IRTA with EIME", layout: irtaLayout, value: 0x01a0_080fn, fields: { S: 15, EIME: 1, IRTA: 0x01a0_0000n } },
  { what: "PQA as Linux writes it (PRQ_ORDER 4)", layout: pqaLayout, value: 0x1234_5004n, fields: { PQS: 4, PQA: 0x1234_5000n } },
  { what: "PRS with PPR and PRO", layout: prsLayout, value: 0x3n, fields: { PPR: 1, PRO: 1 } },
  { what: "PMEN enabling protected memory", layout: pmenLayout, value: 0x8000_0001n, fields: { EPM: 1, PRS: 1 } },
  { what: "AFLOG with a 4-page log at 0x55000", layout: aflogLayout, value: 0x5_5400n, fields: { FLS: 2, FLA: 0x5_5000n } },
];

function rawOf(layout: Layout, value: bigint): Uint32Array {
  return layout.bits === 32 ? Uint32Array.of(Number(value)) : fromWords64([value]);
}

function valueOf(raw: Uint32Array): bigint {
  return raw.length === 1 ? BigInt(raw[0]!) : toWords64(raw)[0]!;
}

describe("register field layouts (VT-d §11.4)", () => {
  for (const v of vectors) {
    it(`decodes and encodes ${v.what}`, () => {
      expect(decodeLayout(v.layout, rawOf(v.layout, v.value))).toEqual(v.fields);
      expect(valueOf(encodeLayout(v.layout, v.fields as never))).toBe(v.value);
    });
  }

  it("sizes the invalidation queue from QS and DW, and turns QH/QT offsets into indexes", () => {
    expect(invalidationQueueEntries(0, DescriptorWidth.DW_128)).toBe(256);
    expect(invalidationQueueEntries(1, DescriptorWidth.DW_256)).toBe(256);
    expect(invalidationQueueEntries(7, DescriptorWidth.DW_128)).toBe(32768);
    expect(invalidationQueueIndex(0x40, DescriptorWidth.DW_128)).toBe(4);
    expect(invalidationQueueIndex(0x40, DescriptorWidth.DW_256)).toBe(2);
    expect(irtEntries(15)).toBe(65536);
    expect(irtEntries(0)).toBe(2);
  });
});

describe("vtdStructures", () => {
  it("offers exactly the command-line structure ids, with their widths in 64-bit words", () => {
    expect(vtdStructures.map((s) => [s.id, s.words])).toEqual([
      ["inv-desc", [2, 4]],
      ["root-entry", [2]],
      ["context-entry", [2]],
      ["sm-context-entry", [4]],
      ["pasid-dir-entry", [1]],
      ["pasid-entry", [8]],
      ["sl-pte", [1]],
      ["fl-pte", [1]],
      ["irte", [2]],
      ["fault-record", [2]],
      ["page-request", [4]],
      ["cap", [1]],
      ["ecap", [1]],
    ]);
  });

  it("decode any bits of every accepted size without throwing, into JSON-safe fields", () => {
    for (const s of vtdStructures) {
      for (const words of s.words) {
        checkProperty(
          fc.property(fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { minLength: words, maxLength: words }), (w) => {
            const d = s.decode(fromWords64(w));
            expect(typeof d.name).toBe("string");
            expect(Number.isInteger(d.code)).toBe(true);
            JSON.stringify(jsonFields(d.fields));
          }),
          { numRuns: 40 },
        );
      }
    }
  });

  it("names the QEMU fixture's CAP and ECAP", () => {
    const cap = vtdStructures.find((s) => s.id === "cap")!.decode(fromWords64([0x00d2_008c_222f_0606n]));
    expect([cap.name, cap.fields.MGAW, cap.fields.FRO]).toEqual(["CAP_REG", 47, 0x22]);
    const ecap = vtdStructures.find((s) => s.id === "ecap")!.decode(fromWords64([0xf00f5en]));
    expect([ecap.name, ecap.fields.IRO, ecap.fields.DT]).toEqual(["ECAP_REG", 0xf, 1]);
  });
});
