import { describe, expect, it } from "vitest";
import { Testbed, type TestbedOptions } from "@viommu/conformance";
import { toWords64, unwrap, type TranslationMode } from "@viommu/core";
import { decodeCap } from "../../src/format/cap.js";
import { decodeDmar } from "../../src/format/dmar.js";
import { decodeEcap } from "../../src/format/ecap.js";
import { vtdPlugin } from "../../src/plugin.js";
import { vtdWalkTool } from "../../src/vmm/walk-tool.js";
import type { VtdDevice } from "../../src/vmm/vtd-device.js";
import { DATA_GPA, IOVA, mapped, vtdBed } from "../support.js";

/** A bed with `properties`, and the CAP and ECAP its guest reads from the register page. */
function withProperties(mode: TranslationMode, properties: Record<string, string>, extra: Partial<Omit<TestbedOptions, "plugin" | "vms" | "mode">> = {}) {
  const b = vtdBed(mode, undefined, { properties, ...extra });
  const vm = b.bed.vms[0]!.vm;
  const read = (offset: number): Uint32Array => {
    const v = vm.mmioRead(b.device.mmioBase + offset, 8);
    return Uint32Array.of(Number(v & 0xffff_ffffn), Number(v >> 32n));
  };
  return { ...b, cap: decodeCap(read(0x08)), ecap: decodeEcap(read(0x10)) };
}

function refused(mode: TranslationMode, properties: Record<string, string>): string {
  const r = Testbed.create({ plugin: vtdPlugin, mode, properties, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] });
  expect(r.ok).toBe(false);
  if (r.ok) return "";
  expect(r.error.errno).toBe("EINVAL");
  return r.error.message;
}

/** QEMU's intel-iommu properties (hw/i386/intel_iommu.c vtd_properties, x86-iommu.c) and the bits vtd_cap_init sets. */
describe("VT-d device properties under QEMU's names", () => {
  it("declares each property with its values and default, and has no 'scalable-mode' (QEMU names it x-scalable-mode)", () => {
    const names = vtdPlugin.properties!.map((p) => p.name);
    expect(names).toEqual(expect.arrayContaining(["caching-mode", "aw-bits", "eim", "intremap", "device-iotlb", "pt", "x-scalable-mode", "x-pasid-mode", "snoop-control", "fs1gp", "dma-drain"]));
    expect(names).not.toContain("scalable-mode");
    expect(refused("shadow", { "scalable-mode": "on" })).toMatch(/property 'scalable-mode' not found/);
  });

  it("caching-mode: CAP.CM follows it in interrupt-remapping-only mode; off is refused where the VMM must see every map", () => {
    expect(withProperties("ir-only", {}).cap.CM).toBe(0);
    expect(withProperties("ir-only", { "caching-mode": "on" }).cap.CM).toBe(1);
    expect(withProperties("shadow", { "caching-mode": "on" }).cap.CM).toBe(1);
    expect(refused("shadow", { "caching-mode": "off" })).toMatch(/caching-mode=off/);
  });

  it("aw-bits=39: MGAW 38, SAGAW 39-bit only, DMAR HAW 38, and the driver's 3-level tables translate; 57 is refused as QEMU refuses it", () => {
    const b = withProperties("shadow", { "aw-bits": "39" });
    expect([b.cap.MGAW, b.cap.SAGAW]).toEqual([38, 0b0010]);
    expect(withProperties("shadow", {}).cap).toMatchObject({ MGAW: 47, SAGAW: 0b0110 });
    const dmar = decodeDmar(b.device.acpiTables()[0]!.bytes);
    expect(dmar.ok && dmar.table.hostAddressWidth).toBe(39);
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    expect(b.bed.vms[0]!.devices[0]!.device.read(IOVA, 8).ok).toBe(true);
    expect(refused("shadow", { "aw-bits": "57" })).toMatch(/57-bit.*39 and 48/);
    expect(refused("shadow", { "aw-bits": "40" })).toMatch(/39 and 48/);
  });

  it("eim and intremap: ECAP.EIM and ECAP.IR (and the DMAR's INTR_REMAP flag); eim=on without intremap is refused", () => {
    expect(withProperties("shadow", {}).ecap).toMatchObject({ EIM: 1, IR: 1 });
    expect(withProperties("shadow", { eim: "off" }).ecap).toMatchObject({ EIM: 0, IR: 1 });
    const noIr = withProperties("shadow", { intremap: "off" }, { guest: { interruptRemapping: false } });
    expect(noIr.ecap).toMatchObject({ EIM: 0, IR: 0 });
    const dmar = decodeDmar(noIr.device.acpiTables()[0]!.bytes);
    expect(dmar.ok && dmar.table.flags & 1).toBe(0);
    expect(refused("shadow", { intremap: "off", eim: "on" })).toMatch(/eim=on cannot be selected without intremap=on/);
    expect(refused("ir-only", { intremap: "off" })).toMatch(/intremap=off/);
  });

  it("device-iotlb, pt, fs1gp and dma-drain: ECAP.DT, ECAP.PT, CAP.FL1GP, CAP.DRD/DWD", () => {
    expect(withProperties("shadow", {}).ecap).toMatchObject({ DT: 1, PT: 1 });
    expect(withProperties("shadow", { "device-iotlb": "off" }).ecap.DT).toBe(0);
    expect(withProperties("shadow", { pt: "off" }).ecap.PT).toBe(0);
    expect(withProperties("shadow", {}).cap.FL1GP).toBe(1);
    expect(withProperties("shadow", { fs1gp: "off" }).cap.FL1GP).toBe(0);
    expect(withProperties("shadow", {}).cap).toMatchObject({ DRD: 0, DWD: 0 });
    const drain = withProperties("shadow", { "dma-drain": "on" });
    expect(drain.cap).toMatchObject({ DRD: 1, DWD: 1 });
    // The driver then sets DR/DW in its IOTLB flushes, and they complete.
    const d = mapped(drain, 0x10, IOVA, DATA_GPA, 0x1000);
    unwrap(drain.driver.unmap(d, IOVA, 0x1000));
    expect(drain.bed.vms[0]!.devices[0]!.device.read(IOVA, 8).ok).toBe(false);
  });

  it("x-scalable-mode=off: no SMTS, FLTS or PRS, and a guest asking for scalable mode gets legacy; refused for nesting", () => {
    const b = withProperties("shadow", { "x-scalable-mode": "off" }, { guest: { variant: "scalable" } });
    expect(b.ecap).toMatchObject({ SMTS: 0, FLTS: 0, PRS: 0 });
    expect(b.driver.variant).toBe("legacy");
    expect(withProperties("shadow", {}).ecap).toMatchObject({ SMTS: 1, FLTS: 1, PRS: 1 });
    expect(refused("nested", { "x-scalable-mode": "off" })).toMatch(/first-level/);
  });

  it("x-pasid-mode: ECAP.PASID and PSS 19 when nesting (off removes them); on is refused for a shadowing VMM", () => {
    expect(withProperties("nested", {}).ecap).toMatchObject({ PASID: 1, PSS: 19 });
    expect(withProperties("nested", { "x-pasid-mode": "off" }).ecap).toMatchObject({ PASID: 0, PSS: 0 });
    expect(withProperties("shadow", {}).ecap.PASID).toBe(0);
    expect(refused("shadow", { "x-pasid-mode": "on" })).toMatch(/PASID/);
  });

  it("snoop-control=on: ECAP.SC, and a second-level leaf with SNP set translates instead of faulting 0xC", () => {
    const plain = withProperties("shadow", {});
    const snoop = withProperties("shadow", { "snoop-control": "on" });
    expect([plain.ecap.SC, snoop.ecap.SC]).toEqual([0, 1]);
    for (const [b, expected] of [
      [plain, { ok: false, fault: { code: 0xc } }],
      [snoop, { ok: true, output: DATA_GPA }],
    ] as const) {
      mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
      const memory = b.bed.vms[0]!.vm.memory;
      const regs = { RTADDR: b.device.registers.read(0x20, 8), CAP: b.device.registers.read(0x08, 8), ECAP: b.device.registers.read(0x10, 8) };
      const walk = unwrap(vtdWalkTool.prepare(memory, regs));
      const leaf = walk({ rid: 0x10, iova: IOVA, write: false }).steps!.at(-1)!;
      memory.write64(leaf.address, BigInt(leaf.raw[0]!) | (1n << 11n));
      expect(walk({ rid: 0x10, iova: IOVA, write: false })).toMatchObject(expected);
      expect((b.device as VtdDevice).translator.config.sc).toBe(b === snoop);
    }
  });

  it("the same CAP and ECAP as before when no property is given", () => {
    const b = withProperties("nested", {});
    expect(toWords64(b.device.registersModel.cap)[0]).toBe(b.device.registers.read(0x08, 8));
  });
});
