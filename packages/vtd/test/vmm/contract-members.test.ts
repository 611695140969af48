import { describe, expect, it } from "vitest";
import { IommufdObjectType, NO_PASID, unwrap, type GuestQueueView } from "@viommu/core";
import { encodeInvDesc } from "../../src/format/inv-desc.js";
import { DATA_GPA, IOVA, mapped, vtdBed, type VtdBed } from "../support.js";

const STATUS = 0x90_0000;
const TWO = [
  { rid: 0x100, guestRid: 0x10 },
  { rid: 0x108, guestRid: 0x18 },
];

function queue(b: VtdBed, name: string): GuestQueueView {
  return b.device.guestQueues().find((q) => q.name === name)!;
}

function mmio(b: VtdBed) {
  const vm = b.bed.vms[0]!.vm;
  return { read: (r: { address: number; size: 4 | 8 }): bigint => vm.mmioRead(r.address, r.size), write: (r: { address: number; size: 4 | 8 }, v: bigint): void => vm.mmioWrite(r.address, r.size, v) };
}

describe("VT-d emulated-device contract: options", () => {
  it("keeps the options it was created with", () => {
    const b = vtdBed("shadow", "legacy", { shadowBackend: "type1", dmaEntryLimit: 77 });
    const v = b.bed.vms[0]!;
    const o = b.device.options;
    expect(o.vm === v.vm && o.iommufd === v.iommufd && o.unit === b.bed.units[0]).toBe(true);
    expect([o.mode, o.shadowBackend, o.dmaEntryLimit, o.ioasId, o.parentHwptId, o.instance]).toEqual(["shadow", "type1", 77, v.ioasId, v.parentHwptId, 0]);
  });
});

describe("VT-d emulated-device contract: unassignDevice (hot-unplug)", () => {
  for (const [mode, variant] of [
    ["nested", "scalable"],
    ["shadow", "legacy"],
    ["shadow", "scalable"],
  ] as const) {
    it(`blocks DMA, unroutes MSIs, frees what the VMM built and leaves the guest RID reusable (${mode}, ${variant})`, () => {
      const b = vtdBed(mode, variant, {}, TWO);
      const v = b.bed.vms[0]!;
      const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
      const [first, second] = v.devices;
      expect(first!.device.read(IOVA, 4).ok).toBe(true);
      const msi = unwrap(b.driver.mapInterrupt(0x10, 0x44, 1));
      const objects = v.iommufd.list().length;
      expect(b.device.unassignDevice(0x10)).toEqual({ ok: true, value: undefined });
      // DMA is blocked, also at the IOVA the host had cached; the guest is told nothing (the device left it).
      expect(first!.device.read(IOVA, 4).ok).toBe(false);
      b.bed.poll();
      expect(b.driver.readEvents().filter((e) => e.kind === "dma-fault")).toEqual([]);
      v.vm.interrupts.take();
      expect(first!.device.signalMsi(msi)).toBe(false);
      expect(v.vm.interrupts.take()).toEqual([]);
      expect(v.iommufd.list(IommufdObjectType.HWPT_NESTED)).toEqual([]);
      expect(b.device.stats.shadowMappings).toBe(0);
      expect(v.iommufd.list().length).toBeLessThan(objects);
      expect(b.device.unassignDevice(0x10)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
      // Another device takes the RID: it is translated by the guest's entries there, nothing of the old one's.
      unwrap(b.device.unassignDevice(0x18));
      unwrap(b.device.assignDevice(second!.device, second!.devId, 0x10));
      unwrap(b.driver.flush(d));
      unwrap(b.driver.attach(0x10, d));
      const r = second!.device.read(IOVA + 0x1000, 4);
      expect(r.ok && r.hpas[0]).toBe(v.vm.memory.backingOf(DATA_GPA + 0x1000));
      expect(first!.device.read(IOVA + 0x1000, 4).ok).toBe(false);
      v.vm.interrupts.take();
      expect(second!.device.signalMsi(msi)).toBe(true);
      expect(v.vm.interrupts.take().map((i) => i.vector)).toEqual([0x44]);
      expect(b.bed.dispose()).toEqual([]);
    });
  }

  it("keeps a shadow space another device still uses, and drops it with the last one", () => {
    const b = vtdBed("shadow", "legacy", {}, TWO);
    const v = b.bed.vms[0]!;
    const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x3000);
    unwrap(b.driver.attach(0x18, d));
    unwrap(b.device.unassignDevice(0x10));
    expect(b.device.stats.shadowMappings).toBe(3);
    expect(v.devices[1]!.device.read(IOVA + 0x2000, 4).ok).toBe(true);
    unwrap(b.device.unassignDevice(0x18));
    expect(b.device.stats.shadowMappings).toBe(0);
    expect(v.devices[1]!.device.read(IOVA + 0x2000, 4).ok).toBe(false);
  });
});

describe("VT-d emulated-device contract: renumberDevice", () => {
  it("answers ENOENT, EEXIST and EINVAL as documented", () => {
    const b = vtdBed("nested", "scalable", {}, TWO);
    expect(b.device.renumberDevice(0x20, 0x28)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
    expect(b.device.renumberDevice(0x10, 0x18)).toMatchObject({ ok: false, error: { errno: "EEXIST" } });
    expect(b.device.renumberDevice(0x10, 0x1_0000)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(b.device.renumberDevice(0x10, 1.5)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });

  // Bus 2 has no root entry yet: 0x39 (SM root entry not present) and 0x1 (legacy).
  for (const [mode, variant, notPresent] of [
    ["nested", "scalable", 0x39],
    ["shadow", "legacy", 0x1],
  ] as const) {
    it(`translates through the guest's context entry at the new RID only once the guest programs it (${mode}, ${variant})`, () => {
      const b = vtdBed(mode, variant);
      const v = b.bed.vms[0]!;
      const dev = v.devices[0]!.device;
      const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
      const msi = unwrap(b.driver.mapInterrupt(0x10, 0x45, 1));
      expect(dev.read(IOVA, 4).ok).toBe(true);
      b.driver.readEvents();
      unwrap(b.device.renumberDevice(0x10, 0x0230));
      // Nothing at 02:06.0 yet: the architecture's not-present fault, naming the new RID.
      expect(dev.read(IOVA, 4).ok).toBe(false);
      b.bed.poll();
      expect(b.driver.readEvents().map((e) => [e.kind, e.code, e.rid])).toEqual([["dma-fault", notPresent, 0x0230]]);
      // The IRTE verifies the old source id: the MSI is now a source-id fault (0x26) at the new RID.
      expect(dev.signalMsi(msi)).toBe(true);
      expect(b.driver.readEvents().map((e) => [e.kind, e.code, e.rid])).toEqual([["interrupt-fault", 0x26, 0x0230]]);
      unwrap(b.driver.attach(0x0230, d));
      const r = dev.read(IOVA + 0x1000, 4);
      expect(r.ok && r.hpas[0]).toBe(v.vm.memory.backingOf(DATA_GPA + 0x1000));
      const moved = unwrap(b.driver.mapInterrupt(0x0230, 0x46, 1));
      v.vm.interrupts.take();
      expect(dev.signalMsi(moved)).toBe(true);
      expect(v.vm.interrupts.take().map((i) => i.vector)).toEqual([0x46]);
      // The old RID is free again.
      expect(b.device.bindings.devices.has(0x10)).toBe(false);
      expect(b.bed.dispose()).toEqual([]);
    });
  }
});

describe("VT-d emulated-device contract: guestQueues", () => {
  it("lists nothing configured before the guest programs the unit", () => {
    const b = vtdBed("nested", undefined, { noInit: true });
    const views = b.device.guestQueues();
    expect(views.map((q) => [q.name, q.role, q.producedBy, q.base(), q.entries()])).toEqual([
      ["IQ", "command", "guest", undefined, 0],
      ["PRQ", "page-request", "device", undefined, 0],
    ]);
  });

  for (const [variant, entryBytes, entries] of [
    ["legacy", 16, 256],
    ["scalable", 32, 256],
  ] as const) {
    it(`describes the invalidation queue as IQA programs it (${variant}: ${entryBytes}-byte descriptors), and a harness completes a raw wait through the view`, () => {
      const b = vtdBed("nested", variant);
      const v = b.bed.vms[0]!;
      const iq = queue(b, "IQ");
      const iqa = v.vm.mmioRead(b.device.mmioBase + 0x90, 8);
      expect(iq.base()).toBe(Number(iqa & ~0xfffn));
      expect([iq.entryBytes, iq.entries()]).toEqual([entryBytes, entries]);
      expect([iq.producer.address, iq.consumer.address, iq.producer.size]).toEqual([b.device.mmioBase + 0x88, b.device.mmioBase + 0x80, 8]);
      // IQT/IQH hold the byte offset in bits [18:4]: index 3 is 3 × 16 or 3 × 32.
      expect(iq.producer.encode({ index: 3, wrap: false }, 0n)).toBe(BigInt(3 * entryBytes));
      expect(iq.consumer.decode(BigInt(5 * entryBytes))).toEqual({ index: 5, wrap: false });
      // Only the offset field [18:4] is written; other bits of the current value are kept.
      expect(iq.producer.encode({ index: 3, wrap: false }, 0xffff_ffff_ffff_ffffn)).toBe(0xffff_ffff_fff8_000fn | BigInt(3 * entryBytes));
      expect(iq.producer.encode({ index: NaN, wrap: false }, 0n)).toBe(0n);
      const io = mmio(b);
      const at = iq.producer.decode(io.read(iq.producer)).index;
      const slot = new Uint32Array(iq.entryBytes / 4);
      slot.set(encodeInvDesc("INV_WAIT", { SW: 1, STATUS_DATA: 0xabcd, STATUS_ADDR: BigInt(STATUS) }).subarray(0, slot.length));
      v.vm.memory.writeWords(iq.base()! + at * iq.entryBytes, slot);
      const next = (at + 1) % iq.entries();
      io.write(iq.producer, iq.producer.encode({ index: next, wrap: false }, io.read(iq.producer)));
      expect(v.vm.memory.read32(STATUS)).toBe(0xabcd);
      expect(iq.consumer.decode(io.read(iq.consumer)).index).toBe(next);
    });
  }

  it("describes the page request queue as PQA programs it and reads what the unit produced through the view", () => {
    const b = vtdBed("nested", "scalable");
    const v = b.bed.vms[0]!;
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    unwrap(b.driver.enablePageRequests(0x10));
    const prq = queue(b, "PRQ");
    const pqa = v.vm.mmioRead(b.device.mmioBase + 0xd0, 8);
    expect([prq.base(), prq.entries(), prq.entryBytes]).toEqual([Number(pqa & ~0xfffn), 128, 32]);
    const io = mmio(b);
    const before = prq.producer.decode(io.read(prq.producer)).index;
    expect(b.device.requestPage(0x10, NO_PASID, 0x4000_0000, true, 9, true)).toBe(true);
    expect(prq.producer.decode(io.read(prq.producer)).index).toBe((before + 1) % 128);
    // The descriptor the unit wrote at the old producer index is a page request for RID 0x10.
    const words = v.vm.memory.readWords(prq.base()! + before * prq.entryBytes, new Uint32Array(8));
    expect(words[0]! & 3).toBe(1);
    expect([prq.consumer.address, prq.producer.address]).toEqual([b.device.mmioBase + 0xc0, b.device.mmioBase + 0xc8]);
  });
});
