import { describe, expect, it } from "vitest";
import { toWords64 } from "@viommu/core";
import { decodeCap } from "../../src/format/cap.js";
import { decodeEcap } from "../../src/format/ecap.js";
import { emulatedRegisters } from "../../src/vmm/emulated-capabilities.js";
import { vtdBed } from "../support.js";

/** A VT-d unit the guest has not touched (no driver init): registers at their reset values. */
function fresh(mode: "nested" | "shadow" | "ir-only" = "nested") {
  const b = vtdBed(mode, undefined, { noInit: true });
  const vm = b.bed.vms[0]!.vm;
  const base = b.device.mmioBase;
  return {
    ...b,
    r32: (o: number): number => Number(vm.mmioRead(base + o, 4)),
    r64: (o: number): bigint => vm.mmioRead(base + o, 8),
    w32: (o: number, v: number): void => vm.mmioWrite(base + o, 4, BigInt(v >>> 0)),
    w64: (o: number, v: bigint): void => vm.mmioWrite(base + o, 8, v),
  };
}

describe("VT-d register file: identification and read-only registers", () => {
  it("advertises caching mode when DMA is translated and not in IR-only mode", () => {
    expect(decodeCap(emulatedRegisters("nested").cap).CM).toBe(1);
    expect(decodeCap(emulatedRegisters("shadow").cap).CM).toBe(1);
    expect(decodeCap(emulatedRegisters("ir-only").cap).CM).toBe(0);
  });

  it("places eight fault-recording registers at CAP.FRO × 16 and the IOTLB registers at ECAP.IRO × 16", () => {
    const u = fresh();
    const cap = decodeCap(Uint32Array.of(u.r32(0x08), u.r32(0x0c)));
    const ecap = decodeEcap(Uint32Array.of(u.r32(0x10), u.r32(0x14)));
    expect([cap.FRO * 16, cap.NFR + 1, ecap.IRO * 16]).toEqual([0x220, 8, 0xf0]);
    expect(ecap).toMatchObject({ QI: 1, IR: 1, EIM: 1, SMTS: 1, FLTS: 1, SLTS: 0, NEST: 0 });
  });

  it("advertises 20-bit PASIDs (ECAP.PASID, PSS = 19) when nesting, where the host attaches each guest PASID, and none when shadowing", () => {
    const nested = fresh("nested");
    expect(decodeEcap(Uint32Array.of(nested.r32(0x10), nested.r32(0x14)))).toMatchObject({ PASID: 1, PSS: 19, PRS: 1 });
    const shadow = fresh("shadow");
    expect(decodeEcap(Uint32Array.of(shadow.r32(0x10), shadow.r32(0x14)))).toMatchObject({ PASID: 0, PSS: 0 });
  });

  it("ignores writes to CAP, ECAP, VER, GSTS, IQH and reserved offsets, which read 0", () => {
    const u = fresh();
    const before = [u.r64(0x08), u.r64(0x10), u.r32(0x00), u.r32(0x1c), u.r64(0x80)];
    u.w64(0x08, 0n);
    u.w64(0x10, 0n);
    u.w32(0x00, 0xff);
    u.w32(0x1c, 0xffff_ffff);
    u.w64(0x80, 0x40n);
    expect([u.r64(0x08), u.r64(0x10), u.r32(0x00), u.r32(0x1c), u.r64(0x80)]).toEqual(before);
    expect(u.r64(0x08)).toBe(toWords64(emulatedRegisters("nested").cap)[0]);
    for (const reserved of [0x30, 0x48, 0x4c, 0x98, 0x1f0]) {
      u.w32(reserved, 0xdead_beef);
      expect(u.r32(reserved)).toBe(0);
    }
  });
});

describe("VT-d register file: GCMD / GSTS handshakes", () => {
  it("reads GCMD as 0 and reflects each command in GSTS", () => {
    const u = fresh();
    u.w32(0x18, 0x8000_0000);
    expect(u.r32(0x18)).toBe(0);
    expect(u.r32(0x1c) >>> 31).toBe(1);
    u.w32(0x18, 0);
    expect(u.r32(0x1c) >>> 31).toBe(0);
  });

  it("latches RTADDR only on SRTP, every time SRTP is written as 1 (one-shot)", () => {
    const u = fresh();
    u.w64(0x20, 0x1234_5000n | (1n << 10n));
    expect(u.device.translator.rootTable).toBe(0);
    u.w32(0x18, 1 << 30);
    expect([u.device.translator.rootTable, u.device.translator.ttm]).toEqual([0x1234_5000, 1]);
    expect(u.r32(0x1c) & (1 << 30)).not.toBe(0);
    u.w64(0x20, 0x5000n);
    u.w32(0x18, 1 << 30);
    expect([u.device.translator.rootTable, u.device.translator.ttm]).toEqual([0x5000, 0]);
    // RTADDR bits [9:0] are reserved.
    u.w64(0x20, 0x5fffn);
    expect(u.r64(0x20)).toBe(0x5c00n);
  });

  it("enables queued invalidation with IQA latched, and refuses to disable it while descriptors are pending", () => {
    const u = fresh();
    u.w64(0x90, 0x10_0000n | (1n << 11n) | 1n);
    u.w32(0x18, 1 << 26);
    expect(u.r32(0x1c) & (1 << 26)).not.toBe(0);
    expect(u.r64(0x90)).toBe(0x10_0000n | (1n << 11n) | 1n);
    expect(u.device.queue.descriptorBytes).toBe(32);
    // A descriptor that cannot be fetched stops the queue (IQE) with IQH short of IQT: QIE stays set.
    u.w32(0x88, 0x20);
    u.w32(0x18, 0);
    expect(u.r32(0x1c) & (1 << 26)).not.toBe(0);
  });

  it("acts on TE, IRE and CFI only when the written bit differs from the status, and keeps the others", () => {
    const u = fresh();
    u.w32(0x18, (1 << 25) | (1 << 23));
    expect(u.r32(0x1c) & ((1 << 25) | (1 << 23))).toBe((1 << 25) | (1 << 23));
    expect(u.device.remapper.enabled).toBe(true);
    u.w32(0x18, 1 << 25);
    expect(u.r32(0x1c) & ((1 << 25) | (1 << 23))).toBe(1 << 25);
    expect(u.device.remapper.compatibilityAllowed).toBe(false);
  });
});

describe("VT-d register file: access sizes and write rules", () => {
  it("reads and writes 64-bit registers by halves and 32-bit pairs with one 8-byte access", () => {
    const u = fresh();
    u.w32(0x20, 0xabcd_e000);
    u.w32(0x24, 0x12);
    expect(u.r64(0x20)).toBe(0x12_abcd_e000n);
    expect(u.r32(0x24)).toBe(0x12);
    u.w64(0x3c, 0xfee0_2000_0000_0041n);
    expect([u.r32(0x3c), u.r32(0x40)]).toEqual([0x41, 0xfee0_2000]);
  });

  it("keeps FEDATA [15:0], FEADDR [31:2], FEUADDR (ECAP.EIM) and resets FECTL.IM to 1", () => {
    const u = fresh();
    expect(u.r32(0x38)).toBe(0x8000_0000);
    u.w32(0x3c, 0xffff_ffff);
    u.w32(0x40, 0xffff_ffff);
    u.w32(0x44, 0xffff_ffff);
    expect([u.r32(0x3c), u.r32(0x40), u.r32(0x44)]).toEqual([0xffff, 0xffff_fffc, 0xffff_ffff]);
    u.w32(0x38, 0x4000_0000);
    expect(u.r32(0x38)).toBe(0);
  });

  it("keeps IQA.DW (scalable mode is offered) and IRTA.EIME (x2APIC is offered), and drops IRTA's reserved bits", () => {
    const u = fresh();
    u.w64(0xb8, 0xffff_ffff_ffff_ffffn);
    expect(u.r64(0xb8)).toBe(0xffff_ffff_ffff_f80fn);
  });

  it("performs a register-based context invalidation on CCMD.ICC and answers it in CAIG with ICC clear", () => {
    const u = fresh();
    u.w64(0x28, (1n << 63n) | (1n << 61n));
    expect(u.r64(0x28)).toBe((1n << 61n) | (1n << 59n));
  });

  it("performs a register-based IOTLB invalidation on IOTLB.IVT and answers it in IAIG with IVT clear", () => {
    const u = fresh();
    u.w64(0xf0, 0x5000n | 2n);
    u.w64(0xf8, (1n << 63n) | (3n << 60n) | (7n << 32n));
    expect(u.r64(0xf8)).toBe((3n << 60n) | (3n << 57n) | (7n << 32n));
    expect(u.r64(0xf0)).toBe(0n);
  });
});
