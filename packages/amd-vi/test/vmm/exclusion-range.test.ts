import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, HostServices, newWalkResult, NO_PASID, Perm, resolveToken, unwrap } from "@viommu/core";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { amdViWalkTool } from "../../src/tools/walk-tool.js";
import { DATA_GPA, IOVA, mapOne, oneVm } from "../support.js";

/**
 * The exclusion range (spec x86.md B1, B3): Exclusion Base [0] ExEn, [1] Allow, [51:12] base; Exclusion Range
 * Limit [51:12] with the low 12 bits reading as ones (inclusive); DTE bit 103 EX. With ExEn, DMA inside
 * [base, limit] is forwarded untranslated from every device when Allow is set, else from devices whose DTE
 * has EX. QEMU stores the registers and applies nothing ("unused for now", hw/i386/amd_iommu.h).
 */
const DEVTAB = 0x1_0000;
const ROOT = 0x2_0000;
const BASE = 0x40_0000;
const LIMIT_REG = 0x40_1000; // covers [0x40_0000, 0x40_1fff]

/** A device table with one DTE for DeviceID 0x10: V, TV, Mode 1 over an empty table, IR/IW as given. */
function setup(dte: { ex?: boolean; tv?: boolean; ir?: boolean; reserved?: boolean } = {}) {
  const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 24 });
  // Bits [6:2] are reserved (an ILLEGAL_DEV_TABLE_ENTRY when set).
  const w0 = 1 | (dte.tv === false ? 0 : 2) | (dte.reserved ? 1 << 2 : 0) | (1 << 9) | ROOT;
  const w1 = dte.ir === false ? 0 : (1 << 29) | (1 << 30);
  const w3 = dte.ex ? 1 << 7 : 0;
  memory.writeWords(DEVTAB + 0x10 * 32, Uint32Array.of(w0, w1, 7, w3, 0, 0, 0, 0));
  return (registers: { base?: bigint; limit?: bigint }) => {
    const walk = unwrap(amdViWalkTool.prepare(memory, { DEV_TAB_BASE: BigInt(DEVTAB), EXCL_BASE: registers.base ?? 0n, EXCL_LIMIT: registers.limit ?? 0n }));
    // The answer without the entries read (test/tools/walk-steps.test.ts checks those).
    return (iova: number, write = false, pasid?: number) => {
      const { steps: _steps, ...answer } = walk({ rid: 0x10, iova, write, pasid });
      return answer;
    };
  };
}

const untranslated = (iova: number) => ({ ok: true, output: iova, pageSize: 0x1000, read: true, write: true });
const pageFault = { ok: false, fault: { code: 2, name: "IO_PAGE_FAULT" } };
const ExEn = 1n;
const Allow = 2n;

describe("the exclusion range in the IOMMU's walk (spec-derived cases)", () => {
  it("ExEn clear: the range is ignored, whatever Allow and EX say", () => {
    const walk = setup({ ex: true })({ base: BigInt(BASE) | Allow, limit: BigInt(LIMIT_REG) });
    expect(walk(BASE)).toEqual(pageFault);
  });

  it("ExEn without Allow: only a device whose DTE has EX is excluded", () => {
    expect(setup({ ex: false })({ base: BigInt(BASE) | ExEn, limit: BigInt(LIMIT_REG) })(BASE + 8)).toEqual(pageFault);
    expect(setup({ ex: true })({ base: BigInt(BASE) | ExEn, limit: BigInt(LIMIT_REG) })(BASE + 8)).toEqual(untranslated(BASE + 8));
  });

  it("ExEn with Allow: every device is excluded, EX or not", () => {
    expect(setup({ ex: false })({ base: BigInt(BASE) | ExEn | Allow, limit: BigInt(LIMIT_REG) })(BASE + 0x1008, true)).toEqual(untranslated(BASE + 0x1008));
  });

  it("the limit is inclusive of its low 12 bits (they read as ones); the base is the first excluded byte", () => {
    const walk = setup({ ex: true })({ base: BigInt(BASE) | ExEn, limit: BigInt(LIMIT_REG) });
    expect(walk(LIMIT_REG + 0xfff)).toEqual(untranslated(LIMIT_REG + 0xfff));
    expect(walk(LIMIT_REG + 0x1000)).toEqual(pageFault);
    expect(walk(BASE)).toEqual(untranslated(BASE));
    expect(walk(BASE - 1)).toEqual(pageFault);
  });

  it("excluded DMA is untranslated with full access: the DTE's IR/IW and TV do not apply inside the range", () => {
    expect(setup({ ex: true, ir: false })({ base: BigInt(BASE) | ExEn, limit: BigInt(LIMIT_REG) })(BASE, true)).toEqual(untranslated(BASE));
    expect(setup({ ex: true, tv: false })({ base: BigInt(BASE) | ExEn, limit: BigInt(LIMIT_REG) })(BASE)).toEqual(untranslated(BASE));
  });

  it("a malformed DTE is still ILLEGAL_DEV_TABLE_ENTRY inside the range; a request with a PASID is translated", () => {
    expect(setup({ ex: true, reserved: true })({ base: BigInt(BASE) | ExEn | Allow, limit: BigInt(LIMIT_REG) })(BASE)).toEqual({ ok: false, fault: { code: 1, name: "ILLEGAL_DEV_TABLE_ENTRY" } });
    expect(setup({ ex: true })({ base: BigInt(BASE) | ExEn | Allow, limit: BigInt(LIMIT_REG) })(BASE, false, 1)).toEqual(pageFault);
  });

  it("a limit below the base excludes nothing", () => {
    expect(setup({ ex: true })({ base: BigInt(BASE + 0x2000) | ExEn | Allow, limit: BigInt(BASE) })(BASE + 0x2000)).toEqual(pageFault);
  });
});

describe("the exclusion range on the emulated IOMMU", () => {
  const write = (t: ReturnType<typeof oneVm>, base: bigint, limit: bigint): void => {
    t.v.vm.mmioWrite(t.device.mmioBase + MmioOffset.ExclusionLimit, 8, limit);
    t.v.vm.mmioWrite(t.device.mmioBase + MmioOffset.ExclusionBase, 8, base);
  };

  it("emulated devices: DMA inside the range is untranslated once the guest enables it, and translated again when it disables it", () => {
    const t = oneVm({ mode: "shadow", eventInterrupts: "vmm" });
    mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    const out = newWalkResult();
    t.device.translateEmulated(0x10, NO_PASID, DATA_GPA, true, out);
    expect(out.ok).toBe(false);
    write(t, BigInt(DATA_GPA) | ExEn | Allow, BigInt(DATA_GPA));
    t.device.translateEmulated(0x10, NO_PASID, DATA_GPA + 0xff8, true, out);
    expect(out).toMatchObject({ ok: true, output: DATA_GPA + 0xff8 });
    t.device.translateEmulated(0x10, NO_PASID, IOVA, false, out);
    expect(out).toMatchObject({ ok: true, output: DATA_GPA });
    write(t, BigInt(DATA_GPA) | Allow, BigInt(DATA_GPA));
    t.device.translateEmulated(0x10, NO_PASID, DATA_GPA, true, out);
    expect(out.ok).toBe(false);
  });

  it("shadow mode: a passthrough device reaches guest RAM inside the range untranslated; the guest's tables elsewhere; nothing once disabled", () => {
    const t = oneVm({ mode: "shadow", eventInterrupts: "vmm" });
    const dev = t.v.devices[0]!.device;
    mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    expect(dev.read(DATA_GPA + 0x4000, 4).ok).toBe(false);
    write(t, BigInt(DATA_GPA + 0x4000) | ExEn | Allow, BigInt(DATA_GPA + 0x5000));
    expect(dev.write(DATA_GPA + 0x5ff0, Uint8Array.of(7)).ok).toBe(true);
    expect(t.v.vm.memory.read8(DATA_GPA + 0x5ff0)).toBe(7);
    expect(dev.read(DATA_GPA + 0x6000, 4).ok).toBe(false);
    expect(dev.read(IOVA, 4).ok).toBe(true);
    // EX is needed without Allow; the driver's DTE has none.
    write(t, BigInt(DATA_GPA + 0x4000) | ExEn, BigInt(DATA_GPA + 0x5000));
    expect(dev.read(DATA_GPA + 0x4000, 4).ok).toBe(false);
    expect(dev.read(IOVA, 4).ok).toBe(true);
    expect(t.bed.platform.host.memory.violations).toEqual([]);
  });

  it("nested mode: a device on a nested domain cannot be given an exclusion range; its DTE is refused visibly", () => {
    const t = oneVm({ eventInterrupts: "vmm" });
    const dev = t.v.devices[0]!.device;
    mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    write(t, BigInt(DATA_GPA) | ExEn | Allow, BigInt(DATA_GPA));
    expect(t.driver.readEvents().map((e) => [e.name, e.rid])).toEqual([["ILLEGAL_DEV_TABLE_ENTRY", 0x10]]);
    expect(resolveToken(t.v.vm.container, HostServices).log.entries({ vm: t.v.vm.id, kind: "configuration-refused" })).toEqual([expect.objectContaining({ errno: "EOPNOTSUPP" })]);
    expect(dev.read(IOVA, 4).ok).toBe(false);
    // Disabling the range gives the device its nested domain back.
    write(t, 0n, 0n);
    expect(dev.read(IOVA, 4).ok).toBe(true);
    expect(dev.read(DATA_GPA, 4).ok).toBe(false);
  });

  it("the range survives save and restore", () => {
    const t = oneVm({ mode: "shadow", eventInterrupts: "vmm" });
    mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    write(t, BigInt(DATA_GPA) | ExEn | Allow, BigInt(DATA_GPA));
    const blob = t.device.save();
    const fresh = unwrap((t.device.constructor as typeof import("../../src/vmm/amd-vi-device.js").AmdViDevice).create({ ...t.device.options, mmioBase: 0xfec0_0000, instance: 5 }));
    unwrap(fresh.restore(blob));
    const out = newWalkResult();
    fresh.translateEmulated(0x10, NO_PASID, DATA_GPA + 8, false, out);
    expect(out).toMatchObject({ ok: true, output: DATA_GPA + 8, perms: Perm.All });
    fresh.destroy();
  });
});
