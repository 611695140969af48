import { describe, expect, it } from "vitest";
import { newWalkResult, NO_PASID, Perm, unwrap } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import { createAmdViPlugin } from "../../src/plugin.js";
import type { AmdViGuestDriver } from "../../src/guest/amd-vi-driver.js";
import type { AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import { amdBed, DATA_GPA, IOVA, mapOne, oneVm, pattern } from "../support.js";

/** The driver's own DTE update (write, INVALIDATE_DEVTAB_ENTRY, COMPLETION_WAIT) for a DTE written by hand. */
function writeDte(driver: AmdViGuestDriver, rid: number, words: Uint32Array): void {
  unwrap((driver as unknown as { writeDte(rid: number, w: Uint32Array): ReturnType<AmdViGuestDriver["detach"]> }).writeDte(rid, words));
}

describe("shadow (emulated IOMMU) mode", () => {
  it("mirrors a 16 KiB v1 page the guest wrote as four NextLevel-7 entries as one mapping", () => {
    for (const backend of ["iommufd", "type1"] as const) {
      const t = oneVm({ mode: "shadow", shadowBackend: backend });
      mapOne(t.v, 0x10, 0x40_0000, DATA_GPA, 0x4000);
      expect(t.device.stats.shadowMappings).toBe(1);
      const r = t.v.devices[0]!.device.write(0x40_0ff0, pattern(0x3010, 3));
      expect(r.ok).toBe(true);
      expect(t.v.vm.memory.readBytes(DATA_GPA + 0xff0, 0x3010)).toEqual(pattern(0x3010, 3));
    }
  });

  it("mirrors PASID 0's v2 table when the guest uses v2 tables (GV, GIoV), and drops it on unmap", () => {
    const t = oneVm({ mode: "shadow", guest: { variant: "v2" } });
    expect(t.driver.mode).toBe("v2");
    const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x2000);
    const dev = t.v.devices[0]!.device;
    expect(dev.write(IOVA + 0x1008, Uint8Array.of(1, 2)).ok).toBe(true);
    expect(t.v.vm.memory.read8(DATA_GPA + 0x1009)).toBe(2);
    unwrap(t.driver.unmap(domain, IOVA + 0x1000, 0x1000));
    expect(dev.read(IOVA + 0x1000, 4).ok).toBe(false);
    expect(dev.read(IOVA, 4).ok).toBe(true);
  });

  it("a read-only guest mapping is mirrored read-only", () => {
    const t = oneVm({ mode: "shadow" });
    mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000, Perm.Read);
    expect(t.v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
    expect(t.v.devices[0]!.device.write(IOVA, new Uint8Array(4)).ok).toBe(false);
  });
});

describe("nested mode: the guest DTE decides the host attachment", () => {
  it("a DTE using v1 tables (Mode ≠ 0) is refused with ILLEGAL_DEV_TABLE_ENTRY, since host translation is not offered (HATS = 3)", () => {
    for (const eventInterrupts of ["vmm", "direct"] as const) {
      const t = oneVm({ eventInterrupts });
      mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
      const dte = t.driver.structures.deviceTable + 0x10 * 32;
      t.v.vm.memory.writeWords(dte, Uint32Array.of(0x2000_0603, 0x6000_0000, 1, 0, 1, 0, 0, 0));
      writeDte(t.driver, 0x10, t.v.vm.memory.readWords(dte, new Uint32Array(8)));
      expect(t.driver.readEvents().map((e) => [e.name, e.rid])).toEqual([["ILLEGAL_DEV_TABLE_ENTRY", 0x10]]);
      expect(t.v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
    }
  });

  it("a DTE with V clear passes DMA untranslated (stage 2 only): IOVA = GPA inside the VM, blocked outside it", () => {
    const t = oneVm();
    const dev = t.v.devices[0]!.device;
    expect(dev.read(DATA_GPA, 4).ok).toBe(false);
    const dte = t.driver.structures.deviceTable + 0x10 * 32;
    t.v.vm.memory.writeWords(dte, Uint32Array.of(0, 0, 0, 0, 1, 0, 0, 0));
    writeDte(t.driver, 0x10, t.v.vm.memory.readWords(dte, new Uint32Array(8)));
    expect(dev.write(DATA_GPA, Uint8Array.of(9)).ok).toBe(true);
    expect(t.v.vm.memory.read8(DATA_GPA)).toBe(9);
    expect(dev.read(t.v.vm.memory.end + 0x1000, 4).ok).toBe(false);
  });
});

describe("IR-only mode", () => {
  it("DMA is untranslated whatever the DTEs say, and the guest gets no DMA domains (HATDis without guest translation)", () => {
    const t = oneVm({ mode: "ir-only", guest: { translation: false } });
    expect(t.driver.mode).toBe("none");
    expect(t.driver.createDomain().ok).toBe(false);
    expect(t.v.devices[0]!.device.write(DATA_GPA + 0x10, Uint8Array.of(5)).ok).toBe(true);
    expect(t.v.vm.memory.read8(DATA_GPA + 0x10)).toBe(5);
  });
});

describe("the emulated-device path", () => {
  it("translates through v1 and v2 guest tables and logs faults with the DTE's DomainID", () => {
    for (const mode of ["shadow", "nested"] as const) {
      const t = oneVm({ mode, eventInterrupts: "vmm" });
      const domain = mapOne(t.v, 0x28, IOVA, DATA_GPA, 0x1000, Perm.Read);
      const out = newWalkResult();
      t.device.translateEmulated(0x28, NO_PASID, IOVA + 0x80, false, out);
      expect(out).toMatchObject({ ok: true, output: DATA_GPA + 0x80 });
      t.device.translateEmulated(0x28, NO_PASID, IOVA + 0x5000, true, out);
      expect(out.ok).toBe(false);
      const events = t.driver.readEvents();
      expect(events).toEqual([expect.objectContaining({ kind: "dma-fault", name: "IO_PAGE_FAULT", rid: 0x28, address: IOVA + 0x5000, write: true })]);
      const qw0 = BigInt(events[0]!.raw[0]!);
      // v1 (shadow): the domain's id; v2 (nested): the device's GCR3 table id (Linux set_dte_gcr3_table).
      const dteDomainId = t.v.vm.memory.read32(t.driver.structures.deviceTable + 0x28 * 32 + 8) & 0xffff;
      expect(Number((qw0 >> 32n) & 0xffffn)).toBe(dteDomainId);
      if (mode === "shadow") expect(dteDomainId).toBe(domain);
    }
  });
});

describe("the hardware vIOMMU (AMD vQUEUE)", () => {
  it("runs the guest's rings with 4 KiB backing pages, invalidating without exits, and takes no pinned, contiguous HW queue", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], backingPageShift: 12, memoryBytes: 2 ** 30 }] });
    const v = bed.vms[0]!;
    const t = { v, driver: v.drivers[0] as AmdViGuestDriver, device: v.iommus[0] as AmdViDevice };
    expect(t.device.hardwareQueues).toBe(true);
    const cmd = t.driver.structures.commandBuffer;
    const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x2000);
    const dev = t.v.devices[0]!.device;
    expect(dev.read(IOVA, 4).ok).toBe(true);
    const exits = t.v.vm.exits.mmio;
    unwrap(t.driver.unmap(domain, IOVA, 0x1000));
    expect(t.v.vm.exits.mmio).toBe(exits);
    expect(dev.read(IOVA, 4).ok).toBe(false);
    // Core's pinned, contiguous HW queue path is not what this hardware takes.
    const viommu = t.v.iommufd.list("VIOMMU")[0]!;
    expect(t.v.iommufd.hwQueueAlloc({ flags: 0, viommuId: viommu.id, type: 2, index: 0, nestingParentIova: cmd, length: 8192 })).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
  });

  it("hands a DTE change to the VMM (one intervention, no exit) and resumes the buffer, so the COMPLETION_WAIT behind it sees the new DTE", () => {
    const t = oneVm();
    const before = { trapped: t.device.stats.trapped, exits: t.v.vm.exits.mmio };
    mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    expect(t.device.stats.trapped - before.trapped).toBe(1);
    expect(t.v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
  });

  it("save and restore carry the hardware ring pointers and the pending guest events", () => {
    const t = oneVm({ eventInterrupts: "direct" });
    mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    t.v.devices[0]!.device.read(IOVA + 0x8000, 4);
    const blob = t.device.save();
    t.device.destroy();
    const fresh = unwrap(
      createAmdViPlugin().createDevice({ vm: t.v.vm, iommufd: t.v.iommufd, unit: t.bed.units[0]!, ioasId: t.v.ioasId, parentHwptId: t.v.parentHwptId, anchorDevId: t.v.devices[0]!.devId, mode: "nested" }),
    ) as AmdViDevice;
    unwrap(fresh.assignDevice(t.v.devices[0]!.device, t.v.devices[0]!.devId, 0x10));
    unwrap(fresh.restore(blob));
    expect(t.driver.readEvents().map((e) => [e.name, e.address])).toEqual([["IO_PAGE_FAULT", IOVA + 0x8000]]);
    expect(t.v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
  });
});

describe("2048 interrupts per device", () => {
  it("with EFR2.NumIntRemapSup the driver uses IntTabLen 11 and the MSI address DM bit, and the IOMMU remaps indices above 511", () => {
    const bed = unwrap(Testbed.create({ plugin: createAmdViPlugin({ twoKInterrupts: true }), vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] }));
    const v = bed.vms[0]!;
    const driver = v.drivers[0] as AmdViGuestDriver;
    let msi = unwrap(driver.mapInterrupt(0x10, 0x30, 1));
    for (let i = 0; i < 600; i++) msi = unwrap(driver.mapInterrupt(0x10, 0x30 + (i % 8), 1));
    expect(msi).toEqual({ address: 0xfee00004, data: 600 });
    v.vm.interrupts.take();
    expect(v.devices[0]!.device.signalMsi(msi)).toBe(true);
    expect(v.vm.interrupts.take()).toEqual([expect.objectContaining({ vector: 0x30 + (599 % 8) })]);
  });
});

describe("save and restore in shadow mode", () => {
  it("rebuilds the mirrors from the guest's tables and keeps the event log pointers; a truncated blob is EINVAL", () => {
    const t = oneVm({ mode: "shadow" });
    mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x4000);
    const out = newWalkResult();
    t.device.translateEmulated(0x11, NO_PASID, 0x1000, false, out);
    const blob = t.device.save();
    t.device.destroy();
    const fresh = unwrap(
      createAmdViPlugin().createDevice({ vm: t.v.vm, iommufd: t.v.iommufd, unit: t.bed.units[0]!, ioasId: t.v.ioasId, parentHwptId: t.v.parentHwptId, anchorDevId: t.v.devices[0]!.devId, mode: "shadow" }),
    ) as AmdViDevice;
    unwrap(fresh.assignDevice(t.v.devices[0]!.device, t.v.devices[0]!.devId, 0x10));
    expect(fresh.restore(blob.subarray(0, blob.length - 1))).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    unwrap(fresh.restore(blob));
    expect(fresh.stats.shadowMappings).toBe(1);
    expect(t.v.devices[0]!.device.write(IOVA + 0x3000, Uint8Array.of(4)).ok).toBe(true);
    expect(t.driver.readEvents().map((e) => [e.name, e.rid])).toEqual([["IO_PAGE_FAULT", 0x11]]);
  });
});
