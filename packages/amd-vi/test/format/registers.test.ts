import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { decodeLayout, encodeLayout, fromWords64, toHex64, type Layout } from "@viommu/core";
import {
  AMDVI_MMIO_SIZE,
  MmioOffset,
  QEMU_DEFAULT_EFR,
  STATUS_READ_ONLY_MASK,
  STATUS_W1C_MASK,
  amdViMmioRegisters,
  baseAddressLowLayout,
  capabilityHeaderLayout,
  commandBufferBaseLayout,
  commandBufferTailLayout,
  controlLayout,
  decodeControl,
  decodeDeviceTableBase,
  decodeEfr,
  decodeEfr2,
  decodeExclusionBase,
  decodeGaLogEntry,
  decodeStatus,
  decodeXtInterruptControl,
  deviceTableBaseLayout,
  deviceTableBytes,
  deviceTableEntries,
  deviceTableSizeFor,
  efr2Layout,
  efrLayout,
  efrSnpSupported,
  encodeCommandBufferBase,
  encodeDeviceTableBase,
  encodeEventLogBase,
  encodeGaLogBase,
  encodeXtInterruptControl,
  eventLogBaseLayout,
  exclusionLimitInclusive,
  gaLogBaseLayout,
  gaLogHeadLayout,
  gaLogTailAddressLayout,
  gatsMaxLevels,
  hatsMaxLevels,
  inExclusionRange,
  maxPasid,
  miscInfo0Layout,
  mmioRegisterAt,
  pprLogBaseLayout,
  rangeLayout,
  ringAdvance,
  ringBytes,
  ringEntries,
  ringFull,
  ringLengthCodeFor,
  ringLengthCodeValid,
  ringPointer,
  statusAfterWrite,
  statusLayout,
  xtInterruptControlLayout,
} from "../../src/format/index.js";

/** Checks a layout against the spec's table: every named field sits at exactly the listed bits. */
function expectPositions(layout: Layout, table: readonly (readonly [string, number, number])[]): void {
  for (const [name, bit, width] of table) {
    const f = layout.field(name);
    expect({ name, bit: f.bit, width: f.width }).toEqual({ name, bit, width });
  }
}

describe("MMIO register map (spec x86.md B1, Linux MMIO_*_OFFSET)", () => {
  const linuxOffsets: [string, number][] = [
    ["DeviceTableBase", 0x0000],
    ["CommandBufferBase", 0x0008],
    ["EventLogBase", 0x0010],
    ["Control", 0x0018],
    ["ExclusionBase", 0x0020],
    ["ExclusionLimit", 0x0028],
    ["ExtendedFeature", 0x0030],
    ["PprLogBase", 0x0038],
    ["GaLogBase", 0x00e0],
    ["GaLogTailAddress", 0x00e8],
    ["MsiAddressLow", 0x015c],
    ["MsiAddressHigh", 0x0160],
    ["MsiData", 0x0164],
    ["XtGeneralInterruptControl", 0x0170],
    ["XtPprInterruptControl", 0x0178],
    ["XtGaLogInterruptControl", 0x0180],
    ["ExtendedFeature2", 0x01a0],
    ["CommandBufferHead", 0x2000],
    ["CommandBufferTail", 0x2008],
    ["EventLogHead", 0x2010],
    ["EventLogTail", 0x2018],
    ["Status", 0x2020],
    ["PprLogHead", 0x2030],
    ["PprLogTail", 0x2038],
    ["GaLogHead", 0x2040],
    ["GaLogTail", 0x2048],
    ["PerformanceCounterConfig", 0x4000],
  ];
  it.each(linuxOffsets)("places %s at 0x%s as Linux does", (name, offset) => {
    expect(mmioRegisterAt(offset)?.name).toBe(name);
  });

  it("has no two registers overlapping and nothing but the counter block beyond the 16 KiB window", () => {
    const sorted = [...amdViMmioRegisters].sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.offset).toBeGreaterThanOrEqual(sorted[i - 1]!.offset + sorted[i - 1]!.bytes);
    expect(sorted.filter((r) => r.offset >= AMDVI_MMIO_SIZE).map((r) => r.name)).toEqual(["PerformanceCounterConfig"]);
    expect(MmioOffset.Status).toBe(0x2020);
  });
});

describe("Device Table Base (B1: [8:0] Size, [51:12] base)", () => {
  it("decodes the value Linux writes for a 2 MiB table (64K DeviceIDs): size 0x1FF", () => {
    const f = decodeDeviceTableBase(fromWords64(["0x00000001234001ff"]));
    expect(f).toEqual({ Size: 0x1ff, DevTabBase: 0x123400000 });
    expect(deviceTableBytes(0x1ff)).toBe(2 * 1024 * 1024);
    expect(deviceTableEntries(0x1ff)).toBe(65536);
    expect(deviceTableSizeFor(0xffff)).toBe(0x1ff);
    expect(deviceTableSizeFor(0x7f)).toBe(0);
  });
  it("encodes base and size", () => {
    expect(toHex64(encodeDeviceTableBase(0x123400000, 0x1ff))).toEqual(["0x00000001234001ff"]);
    expectPositions(deviceTableBaseLayout, [["Size", 0, 9], ["DevTabBase", 12, 40]]);
  });
});

describe("ring base registers (B1: [51:12] base, [59:56] length code)", () => {
  it("decodes Linux's command buffer base (MMIO_CMD_SIZE_512 = 9 << 56)", () => {
    expect(decodeLayout(commandBufferBaseLayout, fromWords64(["0x0900000123456000"]))).toEqual({ ComBase: 0x123456000, ComLen: 9 });
    expect(ringEntries(9, 16)).toBe(512);
    expect(ringBytes(9)).toBe(8192);
  });
  it("decodes Linux's event log base (EVT_LEN_MASK = 9 << 56) and PPR log base", () => {
    expect(decodeLayout(eventLogBaseLayout, fromWords64(["0x0900000000abc000"]))).toEqual({ EventBase: 0xabc000, EventLen: 9 });
    expect(decodeLayout(pprLogBaseLayout, fromWords64(["0x0900000000abd000"]))).toEqual({ PPRLogBase: 0xabd000, PPRLen: 9 });
  });
  it("reads Linux's GA log length 8 as 512 eight-byte entries in 4 KiB (GA_LOG_SIZE_512)", () => {
    expect(decodeLayout(gaLogBaseLayout, fromWords64(["0x0800000000def000"]))).toEqual({ GALogBase: 0xdef000, GALen: 8 });
    expect(ringEntries(8, 8)).toBe(512);
    expect(ringBytes(8)).toBe(4096);
  });
  it("encodes the same values", () => {
    expect(toHex64(encodeCommandBufferBase(0x123456000, 9))).toEqual(["0x0900000123456000"]);
    expect(toHex64(encodeEventLogBase(0xabc000, 9))).toEqual(["0x0900000000abc000"]);
    expect(toHex64(encodeGaLogBase(0xdef000, 8))).toEqual(["0x0800000000def000"]);
  });
  it.each([
    [7, false],
    [8, true],
    [15, true],
    [16, false],
  ])("length code %i valid = %s (0–7 reserved, 8 = 256 commands minimum)", (code, valid) => {
    expect(ringLengthCodeValid(code)).toBe(valid);
  });
  it("maps ring sizes back to length codes and refuses impossible sizes", () => {
    expect(ringLengthCodeFor(8192)).toBe(9);
    expect(ringLengthCodeFor(512 * 1024)).toBe(15);
    expect(() => ringLengthCodeFor(2048)).toThrow(RangeError);
  });
});

describe("head and tail pointers (B1: [18:4])", () => {
  it("decodes a tail pointer as the byte offset", () => {
    expect(decodeLayout(commandBufferTailLayout, fromWords64(["0x00000000000001f0"]))).toEqual({ CmdTailPtr: 0x1f0 });
    expect(decodeLayout(commandBufferTailLayout, fromWords64(["0xffffffffffffffff"]))).toEqual({ CmdTailPtr: 0x7fff0 });
    expect(decodeLayout(gaLogHeadLayout, fromWords64(["0x0000000000000018"]))).toEqual({ GAHdPtr: 0x18 });
  });
  it("masks pointers and wraps the ring", () => {
    expect(ringPointer(0xffffffff, 16)).toBe(0x7fff0);
    expect(ringPointer(0x1ff, 8)).toBe(0x1f8);
    expect(ringAdvance(0x1ff0, 16, 8192)).toBe(0);
    expect(ringFull(0x20, 0x10, 16, 8192)).toBe(true);
    expect(ringFull(0x00, 0x10, 16, 8192)).toBe(false);
  });
});

describe("Control register (B2.1)", () => {
  const spec: [string, number, number][] = [
    ["IommuEn", 0, 1],
    ["HtTunEn", 1, 1],
    ["EventLogEn", 2, 1],
    ["EventIntEn", 3, 1],
    ["ComWaitIntEn", 4, 1],
    ["InvTimeOut", 5, 3],
    ["PassPW", 8, 1],
    ["ResPassPW", 9, 1],
    ["Coherent", 10, 1],
    ["Isoc", 11, 1],
    ["CmdBufEn", 12, 1],
    ["PPRLogEn", 13, 1],
    ["PPRIntEn", 14, 1],
    ["PPREn", 15, 1],
    ["GTEn", 16, 1],
    ["GAEn", 17, 1],
    ["CRW", 18, 4],
    ["SmiFEn", 22, 1],
    ["SlfWBdis", 23, 1],
    ["SmiFLogEn", 24, 1],
    ["GAMEn", 25, 3],
    ["GALogEn", 28, 1],
    ["GAIntEn", 29, 1],
    ["DualPprLogEn", 30, 2],
    ["DualEventLogEn", 32, 2],
    ["DevTblSegEn", 34, 3],
    ["PrivAbrtEn", 37, 2],
    ["PprAutoRspEn", 39, 1],
    ["MarcEn", 40, 1],
    ["BlkStopMrkEn", 41, 1],
    ["PprAutoRspAon", 42, 1],
    ["NumIntRemapMode", 43, 2],
    ["EPHEn", 45, 1],
    ["HADUpdate", 46, 2],
    ["GDUpdateDis", 48, 1],
    ["XTEn", 50, 1],
    ["IntCapXTEn", 51, 1],
    ["vCmdEn", 52, 1],
    ["vIommuEn", 53, 1],
    ["GAUpdateDis", 54, 1],
    ["GAPPIEn", 55, 1],
    ["GCR3TRPMode", 58, 1],
    ["IRTCacheDis", 59, 1],
    ["SNPAVICEn", 61, 3],
  ];
  it("puts every field at the spec's bit position", () => expectPositions(controlLayout, spec));

  it("decodes IommuEn | EventLogEn | EventIntEn | ComWaitIntEn | InvTimeOut = 1 s | CmdBufEn (0x109D)", () => {
    const f = decodeControl(fromWords64(["0x000000000000109d"]));
    expect(f).toMatchObject({ IommuEn: 1, HtTunEn: 0, EventLogEn: 1, EventIntEn: 1, ComWaitIntEn: 1, InvTimeOut: 4, CmdBufEn: 1, GAEn: 0 });
  });
  it("decodes Linux's vAPIC/x2APIC set: GAEn, GAMEn = 1, GALogEn, GAIntEn, XTEn, IntCapXTEn", () => {
    const f = decodeControl(fromWords64(["0x000c000032020000"]));
    expect(f).toMatchObject({ GAEn: 1, GAMEn: 1, GALogEn: 1, GAIntEn: 1, XTEn: 1, IntCapXTEn: 1, IommuEn: 0 });
  });
  it.each([
    ["0x0000080000000000", "NumIntRemapMode", 1],
    ["0x0400000000000000", "GCR3TRPMode", 1],
    ["0x0800000000000000", "IRTCacheDis", 1],
    ["0x2000000000000000", "SNPAVICEn", 1],
  ])("decodes %s as %s = %i (Linux CONTROL_* bit)", (word, name, value) => {
    expect(decodeControl(fromWords64([word]))[name]).toBe(value);
  });
});

describe("Extended Feature Register (B2.2) and EFR2 (B2.3)", () => {
  const spec: [string, number, number][] = [
    ["PrefSup", 0, 1],
    ["PPRSup", 1, 1],
    ["XTSup", 2, 1],
    ["NXSup", 3, 1],
    ["GTSup", 4, 1],
    ["GAPPISup", 5, 1],
    ["IASup", 6, 1],
    ["GASup", 7, 1],
    ["HESup", 8, 1],
    ["PCSup", 9, 1],
    ["HATS", 10, 2],
    ["GATS", 12, 2],
    ["GLXSup", 14, 2],
    ["SmiFSup", 16, 2],
    ["SmiFRC", 18, 3],
    ["GAMSup", 21, 3],
    ["DualPprLogSup", 24, 2],
    ["DualEventLogSup", 28, 2],
    ["SATSSup", 31, 1],
    ["PASmax", 32, 5],
    ["USSup", 37, 1],
    ["DevTblSegSup", 38, 2],
    ["PprOvrflwEarlySup", 40, 1],
    ["PPRAutoRspSup", 41, 1],
    ["MarcSup", 42, 2],
    ["BlkStopMrkSup", 44, 1],
    ["PerfOptSup", 45, 1],
    ["MsiCapMmioSup", 46, 1],
    ["GIoSup", 48, 1],
    ["HASup", 49, 1],
    ["EPHSup", 50, 1],
    ["AttrFWSup", 51, 1],
    ["HDSup", 52, 1],
    ["InvIotlbTypeSup", 54, 1],
    ["vIommuSup", 55, 1],
    ["VmGuardIOSup", 56, 1],
    ["VmTableSize", 57, 4],
    ["GAUpdateDisSup", 61, 1],
    ["SNPSup", 63, 1],
  ];
  it("puts every EFR field at the spec's bit position", () => expectPositions(efrLayout, spec));
  it("puts every EFR2 field at the spec's bit position", () =>
    expectPositions(efr2Layout, [
      ["SEVSNPIOSup", 1, 1],
      ["GCR3TRPModeSup", 3, 1],
      ["SNPAVICSup", 5, 3],
      ["NumIntRemapSup", 8, 2],
      ["HtRangeIgnore", 11, 1],
    ]));

  it("decodes QEMU's default EFR 0x29D3 (PrefSup, PPRSup, GTSup, IASup, GASup, HESup, HATS = GATS = 2)", () => {
    expect(QEMU_DEFAULT_EFR).toBe(0x29d3n);
    const f = decodeEfr(fromWords64(["0x00000000000029d3"]));
    expect(f).toMatchObject({ PrefSup: 1, PPRSup: 1, XTSup: 0, NXSup: 0, GTSup: 1, IASup: 1, GASup: 1, HESup: 1, PCSup: 0, HATS: 2, GATS: 2, SNPSup: 0 });
  });
  it("decodes SNPSup (bit 63), PASmax = 15 and GIoSup (Linux FEATURE_SNP, FEATURE_PASMAX, FEATURE_GIOSUP)", () => {
    const f = decodeEfr(fromWords64(["0x8001000f00000000"]));
    expect(f).toMatchObject({ SNPSup: 1, GIoSup: 1, PASmax: 15 });
    expect(efrSnpSupported(0x80010000)).toBe(true);
    expect(efrSnpSupported(0x00010000)).toBe(false);
    expect(maxPasid(15)).toBe(0xffff);
  });
  it("decodes QEMU numint2k (EFR2 bit 8) and SNPAVICSup = 1 (bits 7:5)", () => {
    expect(decodeEfr2(fromWords64(["0x0000000000000120"]))).toMatchObject({ NumIntRemapSup: 1, SNPAVICSup: 1, SEVSNPIOSup: 0 });
  });
  it("maps HATS and GATS to table levels as Linux computes them", () => {
    expect([0, 1, 2, 3].map(hatsMaxLevels)).toEqual([4, 5, 6, undefined]);
    expect([0, 1, 2].map(gatsMaxLevels)).toEqual([4, 5, undefined]);
  });
});

describe("Status register (B2.5)", () => {
  it("follows Linux for bits 8–10 (GALogRun, GALogOverflow, GAInt), not Xen", () =>
    expectPositions(statusLayout, [
      ["EventOverflow", 0, 1],
      ["EventLogInt", 1, 1],
      ["ComWaitInt", 2, 1],
      ["EventLogRun", 3, 1],
      ["CmdBufRun", 4, 1],
      ["PPROverflow", 5, 1],
      ["PPRInt", 6, 1],
      ["PPRLogRun", 7, 1],
      ["GALogRun", 8, 1],
      ["GALogOverflow", 9, 1],
      ["GAInt", 10, 1],
    ]));
  it("decodes EventOverflow | EventLogRun | CmdBufRun (0x19)", () => {
    expect(decodeStatus(fromWords64(["0x0000000000000019"]))).toMatchObject({ EventOverflow: 1, EventLogRun: 1, CmdBufRun: 1, EventLogInt: 0 });
  });
  it("uses QEMU's low-byte masks (RO 0x98, W1C 0x67) and clears only written W1C bits", () => {
    expect(STATUS_READ_ONLY_MASK & 0xff).toBe(0x98);
    expect(STATUS_W1C_MASK & 0xff).toBe(0x67);
    expect(statusAfterWrite(0x1f, 0x1f)).toBe(0x18);
    expect(statusAfterWrite(0x406, 0x400)).toBe(0x006);
  });
});

describe("exclusion base / limit (B1)", () => {
  it("decodes ExEn, Allow and the base; the limit's low 12 bits read as ones", () => {
    expect(decodeExclusionBase(fromWords64(["0x00000000fee00003"]))).toEqual({ ExEn: 1, Allow: 1, ExclusionBase: 0xfee00000 });
    expect(exclusionLimitInclusive(0xfeeff000, 0)).toBe(0xfeefffff);
    expect(inExclusionRange(0xfeefffff, 0xfee00001, 0, 0xfeeff000, 0)).toBe(true);
    expect(inExclusionRange(0xfef00000, 0xfee00001, 0, 0xfeeff000, 0)).toBe(false);
    expect(inExclusionRange(0xfee00000, 0xfee00000, 0, 0xfeeff000, 0)).toBe(false);
  });
});

describe("XT interrupt control registers (B2.4, Linux union intcapxt)", () => {
  it("encodes x2APIC destination 0x12345678, vector 0x41, physical", () => {
    expect(toHex64(encodeXtInterruptControl({ destination: 0x12345678, vector: 0x41, logical: false }))).toEqual(["0x1200004134567800"]);
  });
  it("decodes the same word back, destination joined", () => {
    expect(decodeXtInterruptControl(fromWords64(["0x1200004134567804"]))).toMatchObject({ DestMode: 1, Vector: 0x41, Destination_23_0: 0x345678, Destination_31_24: 0x12, Destination: 0x12345678 });
    expectPositions(xtInterruptControlLayout, [["DestMode", 2, 1], ["Destination_23_0", 8, 24], ["Vector", 32, 8], ["DeliveryMode", 40, 1], ["Destination_31_24", 56, 8]]);
  });
});

describe("GA log (B1, B5.3: Linux GA_TAG, GA_DEVID, GA_REQ_TYPE)", () => {
  it("decodes a GUEST_NR entry", () => {
    expect(decodeGaLogEntry(fromWords64(["0x10000010deadbeef"]))).toEqual({ GATag: 0xdeadbeef, DeviceID: 0x10, Type: 1 });
  });
  it("decodes the tail address register ([51:3])", () => {
    expect(decodeLayout(gaLogTailAddressLayout, fromWords64(["0x0000000012345678"]))).toEqual({ GATAddr: 0x12345678 });
  });
});

describe("PCI capability block (B1)", () => {
  it("decodes QEMU's capability header 0x1F03000F (AMDVI_CAPAB_FEATURES)", () => {
    const raw = new Uint32Array([0x1f03000f]);
    expect(decodeLayout(capabilityHeaderLayout, raw)).toEqual({ CapID: 0xf, CapPtr: 0, CapType: 3, CapRev: 0, IotlbSup: 1, HtTunnel: 1, NpCache: 1, EFRSup: 1, CapExt: 1 });
  });
  it("decodes QEMU's misc register (GVAsize 2, PAsize 40, VAsize 48)", () => {
    expect(decodeLayout(miscInfo0Layout, new Uint32Array([0x00182840]))).toMatchObject({ GVAsize: 2, PAsize: 40, VAsize: 48, MsiNum: 0 });
  });
  it("decodes the base address low register and the range register", () => {
    expect(decodeLayout(baseAddressLowLayout, new Uint32Array([0xfed80001]))).toEqual({ Enable: 1, BaseAddressLo: 0xfed80000 });
    expect(decodeLayout(rangeLayout, new Uint32Array([0xff008080]))).toEqual({ UnitID: 0, RngValid: 1, BusNumber: 0x80, FirstDevice: 0, LastDevice: 0xff });
  });
});

describe("register layouts round-trip random words", () => {
  const full64 = [controlLayout, efrLayout, efr2Layout, statusLayout, deviceTableBaseLayout, commandBufferBaseLayout, xtInterruptControlLayout];
  it("encode(decode(x)) keeps exactly the defined bits", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (word) => {
        for (const layout of full64) {
          const raw = fromWords64([word]);
          const again = encodeLayout(layout, decodeLayout(layout, raw));
          expect(again[0]).toBe((raw[0]! & ~layout.reservedMask[0]!) >>> 0);
          expect(again[1]).toBe((raw[1]! & ~layout.reservedMask[1]!) >>> 0);
        }
      }),
    );
  });
});
