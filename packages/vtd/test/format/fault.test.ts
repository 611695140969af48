import fc from "fast-check";
import { checkProperty } from "../support.js";
import { describe, expect, it } from "vitest";
import { fromWords64, toWords64 } from "@viommu/core";
import {
  decodeFaultRecord,
  decodePageRequest,
  encodeFaultRecord,
  encodePageRequest,
  faultReason,
  faultReasonName,
  faultRecordInterruptIndex,
  faultRecordLayout,
  faultRequestType,
  FaultRequestType,
  interruptFaultInfo,
  pageRequestQueueEntries,
  VtdFaultReason,
  vtdFaultReasons,
  vtdStructures,
} from "../../src/format/index.js";

const hex = (words: readonly bigint[]): string[] => words.map((w) => `0x${w.toString(16).padStart(16, "0")}`);

describe("fault recording register (VT-d §11.4.14)", () => {
  /**
   * The high qwords QEMU 7.2 wrote for a read fault by 00:05.0 without PASID (../shared/spec/x86.md PART C):
   * legacy mode records PP = 0, PV = 0xFFFF; scalable mode PP = 1, PV = 0 (RID_PASID). FI is hand-picked.
   */
  const vectors = [
    {
      name: "QEMU 7.2 legacy-mode read fault (FR 6, PV 0xFFFF, T1 = 1)",
      words: [0x0000_0000_dead_b000n, 0x40ff_ff06_0000_0028n],
      fields: { FI: 0xdead_b000n, SID: 0x28, T2: 0, PRIV: 0, EXE: 0, PP: 0, FR: 6, PV: 0xffff, AT: 0, T1: 1, F: 0 },
      reason: "READ",
    },
    {
      name: "QEMU 7.2 scalable-mode read fault (PP = 1, PV = 0)",
      words: [0x0000_0000_dead_b000n, 0x4000_0006_8000_0028n],
      fields: { FI: 0xdead_b000n, SID: 0x28, T2: 0, PRIV: 0, EXE: 0, PP: 1, FR: 6, PV: 0, AT: 0, T1: 1, F: 0 },
      reason: "READ",
    },
    {
      name: "valid page-request fault (T2 = 1, T1 = 0) with PASID 0xFFFFF, privileged execute, AT 2",
      words: [0xffff_ffff_ffff_f000n, 0xafff_ff85_7000_0200n],
      fields: { FI: 0xffff_ffff_ffff_f000n, SID: 0x200, T2: 1, PRIV: 1, EXE: 1, PP: 0, FR: 0x85, PV: 0xfffff, AT: 2, T1: 0, F: 1 },
      reason: "SM_WRITE",
    },
    {
      name: "interrupt-remapping fault on index 0x12: IRTE not present",
      words: [0x0012_0000_0000_0000n, 0x8000_0022_0000_ff00n],
      fields: { FI: 0x0012_0000_0000_0000n, SID: 0xff00, T2: 0, PRIV: 0, EXE: 0, PP: 0, FR: 0x22, PV: 0, AT: 0, T1: 0, F: 1 },
      reason: "IR_ENTRY_P",
    },
  ];
  for (const v of vectors) {
    it(`decodes ${v.name}`, () => {
      expect(decodeFaultRecord(fromWords64(v.words))).toEqual(v.fields);
      expect(hex(toWords64(encodeFaultRecord(v.fields)))).toEqual(hex(v.words));
      const d = vtdStructures.find((s) => s.id === "fault-record")!.decode(fromWords64(v.words));
      expect([d.name, d.code]).toEqual([v.reason, v.fields.FR]);
    });
  }

  it("reads the request type from T2:T1 and the interrupt index from FI[63:48]", () => {
    expect(faultRequestType(vectors[0]!.fields)).toBe(FaultRequestType.READ);
    expect(faultRequestType(vectors[2]!.fields)).toBe(FaultRequestType.PAGE);
    expect(faultRequestType({ T1: 1, T2: 1 })).toBe(FaultRequestType.ATOMIC_OP);
    expect(faultRequestType({ T1: 0, T2: 0 })).toBe(FaultRequestType.WRITE);
    expect(faultRecordInterruptIndex(fromWords64(vectors[3]!.words))).toBe(0x12);
    expect(interruptFaultInfo(0x12)).toBe(0x0012_0000_0000_0000n);
  });

  it("reserves bits [11:0] and [91:80]", () => {
    expect(hex(toWords64(faultRecordLayout.reservedMask))).toEqual(hex([0xfffn, 0x0fff_0000n]));
  });

  it("decodes any 128 bits, naming unknown reasons UNKNOWN", () => {
    const d = vtdStructures.find((s) => s.id === "fault-record")!;
    expect(d.decode(fromWords64([0n, 0x0000_0033_0000_0000n])).name).toBe("UNKNOWN");
    checkProperty(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (lo, hi) => void d.decode(fromWords64([lo, hi]))));
  });
});

describe("fault reason codes (VT-d §7, ../shared/spec/x86.md A7.2)", () => {
  const specCodes = [
    ...[0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xa, 0xb, 0xc, 0xd, 0xe],
    ...[0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26],
    ...[0x30, 0x31, 0x32, 0x38, 0x39, 0x3a, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x50, 0x51, 0x52, 0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d],
    ...[0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x90, 0x91],
  ];

  it("lists every code of the spec file, plus the posted-interrupt codes 0x27-0x29, each once", () => {
    expect(vtdFaultReasons.map((r) => r.code)).toEqual([...specCodes.slice(0, 22), 0x27, 0x28, 0x29, ...specCodes.slice(22)]);
    expect(new Set(vtdFaultReasons.map((r) => r.name)).size).toBe(vtdFaultReasons.length);
    for (const r of vtdFaultReasons) expect(r.description.length).toBeGreaterThan(10);
  });

  it("categorises codes as Linux decodes them: < 0x20 legacy, 0x20-0x2F interrupt remapping, >= 0x30 scalable", () => {
    for (const r of vtdFaultReasons) {
      expect(r.category).toBe(r.code < 0x20 ? "legacy" : r.code < 0x30 ? "interrupt-remapping" : "scalable");
    }
  });

  it("uses QEMU's names and the spec's condition ids", () => {
    expect(VtdFaultReason.PAGING_ENTRY_RSVD).toBe(0xc);
    expect(VtdFaultReason.IR_SID_ERR).toBe(0x26);
    expect(VtdFaultReason.PASID_TABLE_ENTRY_INV).toBe(0x5b);
    expect(VtdFaultReason.FS_BIT_UPDATE_FAILED).toBe(0x91);
    expect(faultReason(0x1)!.conditions).toEqual(["LRT.2"]);
    expect(faultReason(0x8)!.conditions).toEqual(["LRT.1"]);
    expect(faultReason(0x91)!.conditions).toEqual(["SFL.10"]);
    expect(faultReasonName(0x33)).toBe("UNKNOWN");
  });

  it("marks as qualified (suppressed by FPD) exactly QEMU's vtd_qualified_faults and the IRTE-found interrupt faults", () => {
    const qualified = vtdFaultReasons.filter((r) => r.qualified).map((r) => r.code);
    expect(qualified).toEqual([0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0xc, 0xd, 0xe, 0x22, 0x24, 0x26, 0x51, 0x59, 0x5b, 0x70, 0x71, 0x72, 0x73, 0x80, 0x81, 0x85, 0x87, 0x91]);
  });
});

describe("page request descriptor (VT-d §7.5.1)", () => {
  const words = [0x0031_2345_0200_0101n, 0x0000_7fff_1234_5d2fn, 0xaaaan, 0xbbbbn];
  const fields = {
    TYPE: 1,
    PP: 1,
    PDP: 0,
    RID: 0x200,
    PASID: 0x12345,
    ER: 1,
    PM: 1,
    RR: 1,
    WR: 1,
    LPIG: 1,
    PRGI: 0x1a5,
    ADDR: 0x7fff_1234_5000n,
    PRIVATE_DATA0: 0xaaaan,
    PRIVATE_DATA1: 0xbbbbn,
  };

  it("decodes the fields Linux's decode_prq_descriptor prints (rid, addr, r/w/x/p/l, pasid, index)", () => {
    expect(decodePageRequest(fromWords64(words))).toEqual(fields);
    expect(hex(toWords64(encodePageRequest(fields)))).toEqual(hex(words));
    expect(vtdStructures.find((s) => s.id === "page-request")!.decode(fromWords64(words)).name).toBe("PAGE_REQ");
  });

  it("sizes the queue at 32 bytes a descriptor (Linux PRQ_ORDER 4: 2048 entries)", () => {
    expect(pageRequestQueueEntries(4)).toBe(2048);
    expect(pageRequestQueueEntries(0)).toBe(128);
  });
});
