import { describe, expect, it } from "vitest";
import { newWalkResult, NO_PASID, unwrap, type GuestQueueView } from "@viommu/core";
import type { TestVm } from "@viommu/conformance";
import { buildCompletionWait } from "../../src/format/command.js";
import { EventCode, eventCodeOf } from "../../src/format/event-log-entry.js";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { AMDVI_DEFAULT_MMIO_BASE, type AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import { DATA_GPA, IOVA, mapOne, oneVm } from "../support.js";

/** The three configurations the VMM has: nested with the hardware vIOMMU, nested trapped, shadow. */
const configs = [
  { name: "nested, hardware vIOMMU", extra: { eventInterrupts: "direct" as const } },
  { name: "nested, trapped command buffer", extra: { eventInterrupts: "vmm" as const } },
  { name: "shadow", extra: { mode: "shadow" as const, eventInterrupts: "vmm" as const } },
];

function queue(device: AmdViDevice, role: GuestQueueView["role"]): GuestQueueView {
  return device.guestQueues().find((q) => q.role === role)!;
}

/** A harness that knows only the view: reads the producer register, writes a raw entry there, advances it. */
function produceRaw(v: TestVm, q: GuestQueueView, entry: Uint32Array): void {
  const base = q.base();
  if (base === undefined) throw new Error("queue not configured");
  const current = v.vm.mmioRead(q.producer.address, q.producer.size);
  const at = q.producer.decode(current);
  v.vm.memory.writeWords(base + at.index * q.entryBytes, entry);
  v.vm.mmioWrite(q.producer.address, q.producer.size, q.producer.encode({ index: (at.index + 1) % q.entries(), wrap: false }, current));
}

describe("the emulated-device contract members", () => {
  for (const c of configs) {
    describe(c.name, () => {
      it("options are the ones the device was created with", () => {
        const t = oneVm(c.extra);
        expect(t.device.options.vm).toBe(t.v.vm);
        expect(t.device.options.iommufd).toBe(t.v.iommufd);
        expect(t.device.options).toMatchObject({ ioasId: t.v.ioasId, parentHwptId: t.v.parentHwptId, mode: t.device.mode, instance: 0 });
        expect(t.device.mmioBase).toBe(AMDVI_DEFAULT_MMIO_BASE);
      });

      it("unassignDevice blocks the device's DMA, stops routing its MSIs, destroys its vDEVICE and frees the guest DeviceID", () => {
        const t = oneVm(c.extra);
        const dev = t.v.devices[0]!;
        const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
        expect(dev.device.read(IOVA, 4).ok).toBe(true);
        const vdevices = t.v.iommufd.list("VDEVICE").length;
        unwrap(t.device.unassignDevice(0x10));
        expect(dev.device.read(IOVA, 4).ok).toBe(false);
        expect(dev.device.read(DATA_GPA, 4).ok).toBe(false);
        expect(dev.device.signalMsi({ address: 0xfee0_0000, data: 0 })).toBe(false);
        expect(t.v.iommufd.list("VDEVICE").length).toBe(c.extra.mode === "shadow" ? 0 : vdevices - 1);
        expect(t.device.stats.shadowMappings).toBe(0);
        expect(t.device.unassignDevice(0x10)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
        // The DeviceID is free: the device comes back there and the guest's DTE still names the domain.
        unwrap(t.device.assignDevice(dev.device, dev.devId, 0x10));
        expect(dev.device.read(IOVA, 4).ok).toBe(true);
        unwrap(t.driver.unmap(domain, IOVA, 0x1000));
        expect(dev.device.read(IOVA, 4).ok).toBe(false);
      });

      it("renumberDevice moves the device: the DTE at the new DeviceID decides its DMA, the vDEVICE carries the new id", () => {
        const t = oneVm(c.extra);
        const dev = t.v.devices[0]!;
        const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
        expect(dev.device.read(IOVA, 4).ok).toBe(true);
        expect(t.device.renumberDevice(0x11, 0x18)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
        expect(t.device.renumberDevice(0x10, 0x1_0000)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
        unwrap(t.device.renumberDevice(0x10, 0x18));
        // 0x18's DTE is Linux's blocked entry (V = TV = 1, no permission) until the guest attaches it.
        expect(dev.device.read(IOVA, 4).ok).toBe(false);
        expect(dev.device.read(DATA_GPA, 4).ok).toBe(false);
        if (c.extra.mode !== "shadow") {
          const vdev = t.v.iommufd.list("VDEVICE") as unknown as { virtId: number }[];
          expect(vdev.map((x) => x.virtId)).toEqual([0x18]);
        }
        unwrap(t.driver.attach(0x18, domain));
        expect(dev.device.read(IOVA, 4).ok).toBe(true);
        // The old DeviceID no longer names it: rewriting 0x10's DTE changes nothing for the device.
        unwrap(t.driver.detach(0x10));
        expect(dev.device.read(IOVA, 4).ok).toBe(true);
        // MSIs are remapped through the DTE of the new DeviceID.
        const msi = unwrap(t.driver.mapInterrupt(0x18, 0x41, 1));
        t.v.vm.interrupts.take();
        expect(dev.device.signalMsi(msi)).toBe(true);
        expect(t.v.vm.interrupts.take().map((i) => i.vector)).toEqual([0x41]);
      });

      it("renumberDevice onto a DeviceID another device holds is EEXIST and changes nothing", () => {
        const t = oneVm(c.extra, { devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x101, guestRid: 0x11 }] });
        const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
        expect(t.device.renumberDevice(0x10, 0x11)).toMatchObject({ ok: false, error: { errno: "EEXIST" } });
        expect(t.v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
        unwrap(t.driver.unmap(domain, IOVA, 0x1000));
        expect(t.v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
      });

      it("guestQueues describes the command buffer, event log and PPR log as the guest programmed them", () => {
        const t = oneVm(c.extra);
        const s = t.driver.structures;
        const views = t.device.guestQueues();
        expect(views.map((q) => [q.name, q.role, q.producedBy, q.base(), q.entries(), q.entryBytes])).toEqual([
          ["command buffer", "command", "guest", s.commandBuffer, 512, 16],
          ["event log", "event", "device", s.eventLog, 512, 16],
          ["PPR log", "page-request", "device", s.pprLog, 512, 16],
        ]);
        const cmd = views[0]!;
        expect([cmd.producer.address, cmd.consumer.address]).toEqual([t.device.mmioBase + MmioOffset.CommandBufferTail, t.device.mmioBase + MmioOffset.CommandBufferHead]);
        expect(views[1]!.producer.address).toBe(t.device.mmioBase + MmioOffset.EventLogTail);
        expect(views[2]!.consumer.address).toBe(t.device.mmioBase + MmioOffset.PprLogHead);
        // Head and tail agree after the driver's last COMPLETION_WAIT.
        const tail = cmd.producer.decode(t.v.vm.mmioRead(cmd.producer.address, 8));
        expect(cmd.consumer.decode(t.v.vm.mmioRead(cmd.consumer.address, 8))).toEqual(tail);
        expect(tail.wrap).toBe(false);
      });

      it("a harness writes a raw COMPLETION_WAIT through the command-buffer view, advances the tail by the view alone, and the store happens", () => {
        const t = oneVm(c.extra);
        const q = queue(t.device, "command");
        const sem = t.v.pages.allocate(1, 1)!;
        const before = q.consumer.decode(t.v.vm.mmioRead(q.consumer.address, 8)).index;
        produceRaw(t.v, q, buildCompletionWait(sem, 0x1234_5678_9abcn));
        expect(t.v.vm.memory.read64(sem)).toBe(0x1234_5678_9abcn);
        expect(q.consumer.decode(t.v.vm.mmioRead(q.consumer.address, 8)).index).toBe((before + 1) % q.entries());
        // The driver goes on from where the harness left the ring.
        expect(t.driver.flush(mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000)).ok).toBe(true);
      });

      it("the event log view shows what the device produced at its producer register", () => {
        const t = oneVm(c.extra);
        const q = queue(t.device, "event");
        const tail = q.producer.decode(t.v.vm.mmioRead(q.producer.address, 8)).index;
        // A DMA fault through a nested DTE reaches the guest's log; shadow faults stay on the host, so an
        // emulated-device walk makes the event there.
        mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
        if (c.extra.mode === "shadow") t.device.translateEmulated(0x10, NO_PASID, IOVA + 0x8000, false, newWalkResult());
        else t.v.devices[0]!.device.read(IOVA + 0x8000, 4);
        t.bed.poll();
        const now = q.producer.decode(t.v.vm.mmioRead(q.producer.address, 8)).index;
        expect(now).toBe((tail + 1) % q.entries());
        expect(eventCodeOf(t.v.vm.memory.readWords(q.base()! + tail * q.entryBytes, new Uint32Array(4)))).toBe(EventCode.IO_PAGE_FAULT);
      });
    });
  }

  it("queue views of a device the guest has not programmed are unconfigured; the pointer encoding keeps the reserved bits", () => {
    const t = oneVm({}, {});
    const fresh = unwrap(
      (t.device.constructor as typeof AmdViDevice).create({ ...t.device.options, mmioBase: 0xfed0_0000, instance: 5, anchorDevId: t.v.devices[0]!.devId, mode: "shadow" }),
    );
    for (const q of fresh.guestQueues()) {
      expect(q.base()).toBeUndefined();
      expect(q.entries()).toBe(0);
    }
    const p = fresh.guestQueues()[0]!.producer;
    expect(p.encode({ index: 3, wrap: false }, 0xffff_ffff_0000_000fn)).toBe(0xffff_ffff_0000_003fn);
    expect(p.decode(0xffff_ffff_fff8_003fn)).toEqual({ index: 3, wrap: false });
    for (const index of [-1, 1.5, NaN, Infinity]) expect(p.encode({ index, wrap: false }, 0x7n)).toBe(0x7n);
    fresh.destroy();
  });
});
