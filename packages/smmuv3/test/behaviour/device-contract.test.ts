import { describe, expect, it } from "vitest";
import { Perm, unwrap, type GuestQueueView, type VirtualMachine } from "@viommu/core";
import { encodeCommand, SyncCs } from "../../src/format/command.js";
import { gicrSetlpirAddress } from "../../src/format/gic-doorbell.js";
import { encodeSte, SteConfig } from "../../src/format/stream-table-entry.js";
import { smmuBed } from "../support.js";

const IOVA = 0x10_0000;
const DATA = 0x2000_0000;

function bed(mode: "nested" | "shadow") {
  const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], mode });
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  unwrap(s.driver.map(domain, IOVA, DATA, 0x1000, Perm.ReadWrite));
  return { ...s, domain };
}

function queue(views: GuestQueueView[], name: string): GuestQueueView {
  return views.find((q) => q.name === name)!;
}

/** A harness that knows only the view: reads the producer, writes a raw entry at base + index × entryBytes, advances it. */
function produceRaw(vm: VirtualMachine, q: GuestQueueView, entry: Uint32Array): void {
  const base = q.base();
  if (base === undefined) throw new Error(`${q.name} is not configured`);
  const current = vm.mmioRead(q.producer.address, q.producer.size);
  const at = q.producer.decode(current);
  vm.memory.writeWords(base + at.index * q.entryBytes, entry);
  const next = at.index + 1 === q.entries() ? { index: 0, wrap: !at.wrap } : { index: at.index + 1, wrap: at.wrap };
  vm.mmioWrite(q.producer.address, q.producer.size, q.producer.encode(next, current));
}

for (const mode of ["nested", "shadow"] as const) {
  describe(`the emulated-device contract members (${mode})`, () => {
    it("options are the ones the device was created with", () => {
      const s = bed(mode);
      expect(s.iommu.options.vm).toBe(s.vm);
      expect(s.iommu.options.iommufd).toBe(s.v.iommufd);
      expect(s.iommu.options).toMatchObject({ mode, ioasId: s.v.ioasId, parentHwptId: s.v.parentHwptId, instance: 0 });
    });

    it("unassignDevice blocks the device's DMA, unroutes its MSIs, destroys its vDEVICE and frees the StreamID", () => {
      const s = bed(mode);
      const dev = s.v.devices[0]!;
      expect(dev.device.read(IOVA, 4).ok).toBe(true);
      const vdevices = s.v.iommufd.list("VDEVICE").length;
      unwrap(s.iommu.unassignDevice(0x10));
      expect(dev.device.read(IOVA, 4).ok).toBe(false);
      expect(dev.device.read(DATA, 4).ok).toBe(false);
      expect(dev.device.signalMsi({ address: gicrSetlpirAddress(0), data: 0x2000 })).toBe(false);
      expect(s.v.iommufd.list("VDEVICE").length).toBe(mode === "nested" ? vdevices - 1 : 0);
      expect(s.iommu.stats.shadowMappings).toBe(0);
      expect(s.iommu.unassignDevice(0x10)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
      // The StreamID is free: the device comes back there and the guest's STE still names the domain.
      unwrap(s.iommu.assignDevice(dev.device, dev.devId, 0x10));
      expect(dev.device.read(IOVA, 4).ok).toBe(true);
      unwrap(s.driver.unmap(s.domain, IOVA, 0x1000));
      expect(dev.device.read(IOVA, 4).ok).toBe(false);
    });

    it("renumberDevice re-creates the vDEVICE at the new vSID and derives the DMA from the guest's STE there", () => {
      const s = bed(mode);
      const dev = s.v.devices[0]!;
      expect(s.iommu.renumberDevice(0x11, 0x12)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
      unwrap(s.iommu.renumberDevice(0x10, 0x20));
      // No STE at 0x20 yet (the guest's table holds abort STEs): the device's DMA is aborted.
      expect(dev.device.read(IOVA, 4).ok).toBe(false);
      if (mode === "nested") {
        const vdevs = s.v.iommufd.list("VDEVICE") as unknown as { virtId: number }[];
        expect(vdevs.map((v) => v.virtId)).toEqual([0x20]);
      }
      // The guest programs StreamID 0x20 and the device translates through it again.
      unwrap(s.driver.attach(0x20, s.domain));
      expect(dev.device.read(IOVA, 4).ok).toBe(true);
      // A stage-1 fault now names the new vSID in the guest's event queue.
      expect(dev.device.read(IOVA + 0x10_0000, 4).ok).toBe(false);
      s.bed.poll();
      if (mode === "nested") expect(s.driver.readEvents()).toMatchObject([{ kind: "dma-fault", name: "F_TRANSLATION", rid: 0x20 }]);
      const other = s.bed.platform.createDevice(s.unit, 0x101);
      const otherId = unwrap(s.v.iommufd.bindDevice(other));
      unwrap(s.iommu.assignDevice(other, otherId, 0x30));
      expect(s.iommu.renumberDevice(0x20, 0x30)).toMatchObject({ ok: false, error: { errno: "EEXIST" } });
      expect(s.iommu.renumberDevice(0x20, 0x1_0000)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    });

    it("guestQueues describes CMDQ (guest-produced, 16-byte entries, wrap bit at LOG2SIZE, ERR kept), EVTQ and PRIQ (device-produced)", () => {
      const s = bed(mode);
      const views = s.iommu.guestQueues();
      expect(views.map((q) => [q.name, q.role, q.producedBy, q.entryBytes])).toEqual([
        ["CMDQ", "command", "guest", 16],
        ["EVTQ", "event", "device", 32],
        ["PRIQ", "page-request", "device", 16],
      ]);
      const cmdq = queue(views, "CMDQ");
      const base = s.vm.mmioRead(s.iommu.mmioBase + 0x90, 8);
      expect(cmdq.base()).toBe(Number(base & 0x000f_ffff_ffff_ffe0n));
      expect(cmdq.entries()).toBe(2 ** Number(base & 0x1fn));
      expect([cmdq.producer.address, cmdq.consumer.address]).toEqual([s.iommu.mmioBase + 0x98, s.iommu.mmioBase + 0x9c]);
      const n = Math.log2(cmdq.entries());
      expect(cmdq.consumer.decode(BigInt(2 ** n + 3) | (1n << 24n))).toEqual({ index: 3, wrap: true });
      // ERR (bits [30:24]) and everything above the wrap bit stay as they are.
      expect(cmdq.consumer.encode({ index: 5, wrap: false }, BigInt(2 ** n + 3) | (2n << 24n))).toBe(5n | (2n << 24n));
      const evtq = queue(views, "EVTQ");
      expect([evtq.producer.address, evtq.consumer.address]).toEqual([s.iommu.mmioBase + 0x100a8, s.iommu.mmioBase + 0x100ac]);
      expect(evtq.base()).toBeDefined();
      expect(evtq.producer.encode({ index: 1, wrap: true }, 0x8000_0000n)).toBe(BigInt(1 + 2 ** Math.log2(evtq.entries())) | 0x8000_0000n);
      const priq = queue(views, "PRIQ");
      if (mode === "shadow") {
        // Shadowing offers no PRI (IDR0.PRI = 0): the PRI queue is never configured.
        expect([priq.base(), priq.entries()]).toEqual([undefined, 0]);
      } else {
        // Nested over a host with PRI: the driver's PRI queue, its PROD on page 1 with OVFLG kept.
        const priqBase = s.vm.mmioRead(s.iommu.mmioBase + 0xc0, 8);
        expect([priq.base(), priq.entries()]).toEqual([Number(priqBase & 0x000f_ffff_ffff_ffe0n), 2 ** Number(priqBase & 0x1fn)]);
        expect([priq.producer.address, priq.consumer.address]).toEqual([s.iommu.mmioBase + 0x100c8, s.iommu.mmioBase + 0x100cc]);
        expect(priq.producer.encode({ index: 2, wrap: false }, 0x8000_0000n)).toBe(2n | 0x8000_0000n);
      }
      // Disabled queues are unconfigured.
      s.vm.mmioWrite(s.iommu.mmioBase + 0x20, 4, Number(s.vm.mmioRead(s.iommu.mmioBase + 0x20, 4)) & ~(1 << 3));
      expect([cmdq.base(), cmdq.entries()]).toEqual([undefined, 0]);
    });

    it("a harness using only the CMDQ view writes a raw CMD_SYNC with an MSI and advances PROD: the MSI lands", () => {
      const s = bed(mode);
      const cmdq = queue(s.iommu.guestQueues(), "CMDQ");
      // MSIPOLL style: the completion is a write of MSIData into guest memory.
      const flag = s.v.pages.allocate(1)!;
      s.vm.memory.write32(flag, 0xffff_ffff);
      for (let i = 0; i < cmdq.entries() + 3; i++) {
        produceRaw(s.vm, cmdq, encodeCommand("CMD_SYNC", { CS: SyncCs.SigIrq, MSIAddress: flag, MSIData: i }));
        expect(s.vm.memory.read32(flag)).toBe(i);
      }
      // And an interrupt MSI to a CPU's doorbell.
      s.vm.interrupts.take();
      produceRaw(s.vm, cmdq, encodeCommand("CMD_SYNC", { CS: SyncCs.SigIrq, MSIAddress: gicrSetlpirAddress(1), MSIData: 0x2042 }));
      expect(s.vm.interrupts.take()).toEqual([{ vector: 0x2042, destination: 1, path: "vmm", source: "smmuv3-sync" }]);
      const cons = cmdq.consumer.decode(s.vm.mmioRead(cmdq.consumer.address, 4));
      expect(cons).toEqual(cmdq.producer.decode(s.vm.mmioRead(cmdq.producer.address, 4)));
    });
  });
}

describe("renumbering keeps nothing of the old StreamID", () => {
  it("an STE the guest left at the old StreamID no longer applies to the device", () => {
    const s = bed("nested");
    unwrap(s.iommu.renumberDevice(0x10, 0x11));
    // The guest's STE at 0x11: bypass.
    const ste = s.driver.streamTableBase! + 0x11 * 64;
    s.vm.memory.writeWords(ste, encodeSte({ V: 1, Config: SteConfig.Bypass }));
    unwrap(s.driver.submitCommands([encodeCommand("CMD_CFGI_STE", { SID: 0x11, Leaf: 1 })]));
    s.vm.memory.write32(IOVA, 0x1111);
    s.vm.memory.write32(DATA, 0x2222);
    // Untranslated: the IOVA is the GPA, not the page the old StreamID's stage 1 mapped.
    const r = s.v.devices[0]!.device.read(IOVA, 4);
    expect(r.ok && new DataView(r.data.buffer).getUint32(0, true)).toBe(0x1111);
  });
});
