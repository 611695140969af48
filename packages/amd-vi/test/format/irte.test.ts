import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromWords64, toHex64 } from "@viommu/core";
import {
  MsiAction,
  classifyMsi,
  decodeIrte128,
  decodeIrte32,
  encodeIrte128Vapic,
  irte128Destination,
  irteAddress,
  irteIndexInTable,
  linuxIrte128,
  linuxIrte32,
  linuxMsiMessage,
  msiIrteIndex,
} from "../../src/format/index.js";

describe("32-bit IRTE (spec x86.md B5.2; Linux irte_prepare)", () => {
  it("vector 0x30 to APIC 1, fixed, physical: 0x00300101", () => {
    expect(linuxIrte32({ vector: 0x30, destination: 1 })).toBe(0x00300101);
    expect(decodeIrte32(new Uint32Array([0x00300101]))).toEqual({
      name: "IRTE",
      code: 1,
      fields: { RemapEn: 1, SupIOPF: 0, IntType: 0, RqEoi: 0, DM: 0, GuestMode: 0, Destination: 1, Vector: 0x30 },
    });
  });
  it("logical destination 0x0F sets DM (bit 6): 0x00300F41", () => {
    expect(linuxIrte32({ vector: 0x30, destination: 0x0f, logical: true })).toBe(0x00300f41);
  });
  it("reads the entry from the low half of a 64-bit word (the CLI form)", () => {
    expect(decodeIrte32(fromWords64(["0xffffffff00300f47"])).fields).toMatchObject({ RemapEn: 1, SupIOPF: 1, IntType: 1, DM: 1, Destination: 0x0f });
  });
});

describe("128-bit IRTE (B5.3; Linux union irte_ga_lo / irte_ga_hi)", () => {
  it("remapped form for x2APIC 0x12345678, vector 0x41 (APICID_TO_IRTE_DEST_LO/HI)", () => {
    const raw = linuxIrte128({ vector: 0x41, destination: 0x12345678 });
    expect(toHex64(raw)).toEqual(["0x0000000034567801", "0x1200000000000041"]);
    const d = decodeIrte128(raw);
    expect(d.name).toBe("REMAPPED");
    expect(d.fields).toMatchObject({ RemapEn: 1, GuestMode: 0, Destination_23_0: 0x345678, Destination_31_24: 0x12, Destination: 0x12345678, Vector: 0x41, GATag: 0 });
    expect(irte128Destination(raw)).toBe(0x12345678);
  });
  it("guest virtual APIC form: valid, GALogIntr, IsRun, GuestMode, APIC 5, GATag 0xCAFE, guest vector 0x20, backing page 0x12345000", () => {
    const raw = fromWords64(["0x0000cafe000005c5", "0x0000000012345020"]);
    const d = decodeIrte128(raw);
    expect(d).toMatchObject({ name: "GUEST_VIRTUAL_APIC", code: 1 });
    expect(d.fields).toMatchObject({ RemapEn: 1, SupIOPF: 0, GALogIntr: 1, GAPPIDis: 0, IsRun: 1, GuestMode: 1, Destination: 5, GATag: 0xcafe, Vector: 0x20, GARootPtr: 0x12345000 });
    expect(toHex64(encodeIrte128Vapic({ RemapEn: 1, GALogIntr: 1, IsRun: 1, Destination_23_0: 5, GATag: 0xcafe, Vector: 0x20, GARootPtr: 0x12345000 }))).toEqual([
      "0x0000cafe000005c5",
      "0x0000000012345020",
    ]);
  });
  it("decodes any 128 bits", () => {
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (a, b) => void decodeIrte128(fromWords64([a, b]))));
  });
});

describe("MSI → IRTE (B5.1; QEMU amdvi_int_remap_msi, Linux fill_msi_msg)", () => {
  it("Linux programs address 0xFEE00000 and data = index; 2K mode adds address bit 2", () => {
    expect(linuxMsiMessage(5, false)).toEqual({ addressLo: 0xfee00000, addressHi: 0, data: 5 });
    expect(linuxMsiMessage(0x600, true)).toEqual({ addressLo: 0xfee00004, addressHi: 0, data: 0x600 });
  });
  it.each([
    ["fixed, index 5", 0xfee00000, 0, 0x005, false, MsiAction.Remap],
    ["index 0x1FF reads as arbitrated", 0xfee00000, 0, 0x1ff, false, MsiAction.Remap],
    ["NMI (data[10:8] = 4)", 0xfee00000, 0, 0x400, false, MsiAction.PassIfNmiPass],
    ["INIT (5)", 0xfee00000, 0, 0x500, false, MsiAction.PassIfInitPass],
    ["ExtINT (7)", 0xfee00000, 0, 0x700, false, MsiAction.PassIfEIntPass],
    ["SMI (2) is an error", 0xfee00000, 0, 0x200, false, MsiAction.Invalid],
    ["index 0x600 in 2K mode with address DM", 0xfee00004, 0, 0x600, true, MsiAction.Remap],
    ["index 0x600 in 2K mode without address DM is ExtINT-like type 6: error", 0xfee00000, 0, 0x600, true, MsiAction.Invalid],
    ["an address outside 0xFEExxxxx", 0xfed00000, 0, 0, false, MsiAction.NotInterrupt],
    ["an address with high bits", 0xfee00000, 1, 0, false, MsiAction.NotInterrupt],
    ["the last 4 bytes of the window", 0xfeeffffc, 0, 0, false, MsiAction.Remap],
  ])("%s", (_what, lo, hi, data, twoK, action) => {
    expect(classifyMsi(lo, hi, data, twoK)).toBe(action);
  });
  it("finds the IRTE at root + index × 4 (or × 16 with GAEn) inside 2^IntTabLen entries", () => {
    expect(msiIrteIndex(0xfff)).toBe(0x7ff);
    expect(irteAddress(0x100080, 5, false)).toBe(0x100094);
    expect(irteAddress(0x100080, 5, true)).toBe(0x1000d0);
    expect(irteIndexInTable(511, 9)).toBe(true);
    expect(irteIndexInTable(512, 9)).toBe(false);
  });
});
