import { describe, expect, it } from "vitest";
import { check, must, runCase, type ConformanceCase, type TestVm } from "@viommu/conformance";
import { Perm } from "@viommu/core";
import { MmioOffset } from "../src/format/mmio-register-map.js";
import { StatusBit } from "../src/format/status-register.js";
import type { AmdViGuestDriver } from "../src/guest/amd-vi-driver.js";
import { SharedDmaBuffers } from "../src/guest/shared-dma-buffers.js";
import { SwiotlbPool } from "../src/guest/swiotlb.js";
import { decodeEvent } from "../src/format/event-log-entry.js";
import type { AmdViUnit } from "../src/hw/amd-vi-unit.js";
import { amdViPlugin } from "../src/plugin.js";
import type { AmdViDevice } from "../src/vmm/amd-vi-device.js";
import { DATA_GPA, IOVA, pattern } from "./support.js";

/** A confidential VM with its vIOMMU in IR-only mode, the configuration an SEV-SNP guest gets. */
const snpVm = { vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], confidential: true, vcpus: 300 }], mode: "ir-only" as const, guest: { x2apic: true } };

function parts(v: TestVm): { driver: AmdViGuestDriver; device: AmdViDevice } {
  return { driver: v.drivers[0] as AmdViGuestDriver, device: v.iommus[0] as AmdViDevice };
}

function same16(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function status(v: TestVm): number {
  return Number(v.vm.mmioRead(parts(v).device.mmioBase + MmioOffset.Status, 4));
}

export const snpCases: ConformanceCase[] = [
  {
    id: "snp-structures-shared",
    rule: "An SEV-SNP guest places the device table, command buffer, completion-wait semaphore, event log and interrupt tables in shared pages, with DMA translation off.",
    requires: ["confidentialShared"],
    run(c) {
      const v = c.bed(snpVm).vms[0]!;
      const { driver } = parts(v);
      must(driver.mapInterrupt(0x10, 0x40, 1), "mapInterrupt");
      const s = driver.structures;
      for (const [name, at] of [["device table", s.deviceTable], ["command buffer", s.commandBuffer], ["semaphore", s.semaphore], ["event log", s.eventLog], ["interrupt table", s.interruptTables[0]!]] as const) {
        check(v.vm.memory.isShared(at), `${name} is private`);
      }
      check(s.pprLog === 0, "the PPR log (no shared mode in the series) was enabled");
      check(!v.vm.memory.isShared(DATA_GPA), "ordinary guest memory became shared");
      check(!driver.createDomain().ok, "a DMA domain was offered although translation is off");
    },
  },
  {
    id: "snp-ir-only",
    rule: "With DMA translation off, a confidential guest's device DMA is untranslated and its MSIs are remapped to x2APIC destinations.",
    requires: ["confidentialShared", "irOnly"],
    run(c) {
      const v = c.bed(snpVm).vms[0]!;
      const dev = v.devices[0]!.device;
      // Only a page the guest shared is the device's: a private one is the RMP's to refuse.
      v.vm.memory.setShared(DATA_GPA, 4096, true);
      check(dev.write(DATA_GPA, Uint8Array.of(0x5a)).ok && v.vm.memory.read8(DATA_GPA) === 0x5a, "untranslated DMA to a shared page failed");
      check(!dev.write(DATA_GPA + 4096, Uint8Array.of(0x5a)).ok, "untranslated DMA reached a private page");
      const msi = must(parts(v).driver.mapInterrupt(0x10, 0x52, 299), "mapInterrupt");
      v.vm.interrupts.take();
      dev.signalMsi(msi);
      const got = v.vm.interrupts.take().filter((i) => i.source.startsWith("msi"));
      check(got.length === 1 && got[0]!.vector === 0x52 && got[0]!.destination === 299, `remapped interrupt: ${JSON.stringify(got)}`);
    },
  },
  {
    id: "snp-private-structure-refused",
    rule: "A structure left in private memory is refused with a defined, visible error (an event, a status bit, a refused enable), never read as ciphertext.",
    requires: ["confidentialShared"],
    run(c) {
      // Interrupt table private: the MSI is blocked and PAGE_TAB_HARDWARE_ERROR (I set) is logged.
      {
        const v = c.bed(snpVm).vms[0]!;
        const { driver, device } = parts(v);
        const msi = must(driver.mapInterrupt(0x10, 0x40, 1), "mapInterrupt");
        v.vm.memory.setShared(driver.structures.interruptTables[0]!, 4096, false);
        v.vm.interrupts.take();
        v.devices[0]!.device.signalMsi(msi);
        check(v.vm.interrupts.take().filter((i) => i.source.startsWith("msi")).length === 0, "MSI through a private IRT delivered");
        const e = driver.readEvents();
        check(e.some((x) => x.name === "PAGE_TAB_HARDWARE_ERROR" && x.kind === "interrupt-fault" && x.rid === 0x10), `no PAGE_TAB_HARDWARE_ERROR: ${JSON.stringify(e.map((x) => x.name))}`);
        check(device.refusals.interruptTable === 1, "refusal not counted");
      }
      // Device table private: DEV_TAB_HARDWARE_ERROR.
      {
        const v = c.bed(snpVm).vms[0]!;
        const { driver, device } = parts(v);
        const msi = must(driver.mapInterrupt(0x10, 0x40, 1), "mapInterrupt");
        v.vm.memory.setShared(driver.structures.deviceTable, 8192, false);
        v.devices[0]!.device.signalMsi(msi);
        check(driver.readEvents().some((x) => x.name === "DEV_TAB_HARDWARE_ERROR"), "no DEV_TAB_HARDWARE_ERROR");
        check(device.refusals.deviceTable === 1, "refusal not counted");
      }
      // Completion-wait semaphore private: COMMAND_HARDWARE_ERROR, the buffer halts, the wait times out.
      {
        const v = c.bed(snpVm).vms[0]!;
        const { driver, device } = parts(v);
        v.vm.memory.setShared(driver.structures.semaphore, 4096, false);
        const r = driver.mapInterrupt(0x10, 0x40, 1);
        check(!r.ok && r.error.errno === "ETIMEDOUT", "COMPLETION_WAIT into a private page completed");
        check(driver.readEvents().some((x) => x.name === "COMMAND_HARDWARE_ERROR"), "no COMMAND_HARDWARE_ERROR");
        check((status(v) & StatusBit.CmdBufRun) === 0 && device.refusals.semaphore === 1, "the command buffer did not halt");
      }
      // Command buffer private: enabling it is refused (no CmdBufRun) with COMMAND_HARDWARE_ERROR.
      {
        const v = c.bed(snpVm).vms[0]!;
        const { driver, device } = parts(v);
        v.vm.memory.setShared(driver.structures.commandBuffer, 8192, false);
        const control = v.vm.mmioRead(device.mmioBase + MmioOffset.Control, 8);
        v.vm.mmioWrite(device.mmioBase + MmioOffset.Control, 8, control & ~(1n << 12n));
        v.vm.mmioWrite(device.mmioBase + MmioOffset.Control, 8, control);
        check((status(v) & StatusBit.CmdBufRun) === 0, "CmdBufRun set for a private command buffer");
        check(driver.readEvents().some((x) => x.name === "COMMAND_HARDWARE_ERROR"), "no COMMAND_HARDWARE_ERROR");
        check(device.refusals.commandBuffer >= 1, "refusal not counted");
      }
      // Event log private: EventLogRun stays clear and nothing is written into it.
      {
        const v = c.bed(snpVm).vms[0]!;
        const { driver, device } = parts(v);
        v.vm.memory.setShared(driver.structures.eventLog, 8192, false);
        const control = v.vm.mmioRead(device.mmioBase + MmioOffset.Control, 8);
        v.vm.mmioWrite(device.mmioBase + MmioOffset.Control, 8, control & ~(1n << 2n));
        v.vm.mmioWrite(device.mmioBase + MmioOffset.Control, 8, control);
        check((status(v) & StatusBit.EventLogRun) === 0, "EventLogRun set for a private event log");
        check(device.refusals.eventLog === 1, "refusal not counted");
        const before = v.vm.memory.readBytes(driver.structures.eventLog, 64);
        v.devices[0]!.device.signalMsi({ address: 0xfee00000, data: 7 });
        check(v.vm.memory.readBytes(driver.structures.eventLog, 64).every((b, i) => b === before[i]), "an event was written into private memory");
      }
      check(c.plugin.capabilities.confidentialShared, "capability");
    },
  },
  {
    id: "snp-swiotlb-bounce",
    rule: "In a confidential VM every streaming DMA byte bounces through a shared SWIOTLB pool when the vIOMMU does no DMA translation; with the vIOMMU translating in its shared-structure mode the guest shares the buffer's pages in place and the device, confined to them, DMAs with no copy. A private page stays the RMP's either way.",
    requires: ["confidentialShared", "nested", "privateMemoryProtection"],
    run(c) {
      const size = 64 * 1024;
      const [p1, p2] = [pattern(size, 1), pattern(size, 2)];
      const same = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);
      const v = c.bed(snpVm).vms[0]!;
      const pool = must(SwiotlbPool.create(v.vm.memory, v.pages, 256 * 1024), "swiotlb");
      check(v.vm.memory.isShared(pool.base) && !v.vm.memory.isShared(DATA_GPA), "pool not shared, or the buffer not private");
      const dev = v.devices[0]!.device;
      check(!dev.read(DATA_GPA, 64).ok, "the device read a private buffer without the IOMMU's translation to stop it");
      v.vm.memory.writeBytes(DATA_GPA, p1);
      const out = must(pool.map(DATA_GPA, size, "to-device"), "map to-device");
      const read = dev.read(out.deviceAddress, size);
      check(read.ok && same(read.data, p1), "device read through the bounce buffer failed");
      pool.unmap(out);
      const back = must(pool.map(DATA_GPA + size, size, "from-device"), "map from-device");
      check(dev.write(back.deviceAddress, p2).ok, "device write into the bounce buffer failed");
      pool.unmap(back);
      check(same(v.vm.memory.readBytes(DATA_GPA + size, size), p2), "bounced data did not reach the private buffer");
      c.metric("swiotlb-bytes-copied", pool.bytesCopied);
      c.metric("swiotlb-copies", pool.copies);
      check(pool.bytesCopied === 2 * size && pool.copies === 2, `SWIOTLB copied ${pool.bytesCopied} bytes in ${pool.copies} copies for ${2 * size} bytes of DMA`);

      // The vIOMMU translating in the shared-structure mode, in a confidential VM too.
      const n = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], confidential: true }], guest: { variant: "snp-dma" } }).vms[0]!;
      const driver = n.drivers[0]!;
      const buffers = new SharedDmaBuffers(n.vm.memory, driver);
      const domain = must(driver.createDomain(), "createDomain");
      must(driver.attach(0x10, domain), "attach");
      n.vm.memory.writeBytes(DATA_GPA, p1);
      const m1 = must(buffers.map(domain, IOVA, DATA_GPA, size, Perm.Read), "share and map to-device");
      const m2 = must(buffers.map(domain, IOVA + size, DATA_GPA + size, size, Perm.Write), "share and map from-device");
      const ndev = n.devices[0]!.device;
      const r2 = ndev.read(IOVA, size);
      check(r2.ok && same(r2.data, p1) && ndev.write(IOVA + size, p2).ok, "DMA through the vIOMMU failed");
      check(same(n.vm.memory.readBytes(DATA_GPA + size, size), p2), "vIOMMU-path DMA landed elsewhere");
      must(buffers.unmap(m1), "unmap");
      must(buffers.unmap(m2), "unmap");
      // Mapped but private: the IOMMU translates, the RMP refuses.
      must(driver.map(domain, IOVA, DATA_GPA, 4096, Perm.Read), "map a private page");
      check(!ndev.read(IOVA, 64).ok, "the device read a private page through a mapping");
      c.metric("viommu-bytes-copied", 0);
      c.metric("viommu-copies", 0);
      c.metric("viommu-pages-converted", buffers.pagesConverted);
      check(buffers.pagesConverted === (4 * size) / 4096, `${buffers.pagesConverted} page conversions for two ${size}-byte buffers shared and unshared`);
    },
  },
  {
    id: "snp-rmp-blocks-private-dma",
    rule: "Device DMA to a page a confidential guest keeps private is refused by the host's RMP check and logged as RMP_PAGE_FAULT (DeviceID, the VM's tag, the GPA, RW), whatever the IOMMU's tables say, cached translations included; sharing the page lets it through, making it private again stops it.",
    requires: ["privateMemoryProtection"],
    run(c) {
      for (const mode of ["ir-only", "nested"] as const) {
        const bed = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], confidential: true }], mode, guest: { variant: mode === "nested" ? "snp-dma" : "snp" } });
        const v = bed.vms[0]!;
        const dev = v.devices[0]!.device;
        const unit = bed.units[0] as AmdViUnit;
        let at = DATA_GPA;
        if (mode === "nested") {
          const d = must(v.drivers[0]!.createDomain(), "createDomain");
          must(v.drivers[0]!.attach(0x10, d), "attach");
          must(v.drivers[0]!.map(d, IOVA, DATA_GPA, 4096, Perm.ReadWrite), "map");
          at = IOVA;
        }
        v.vm.memory.writeBytes(DATA_GPA, pattern(16, 9));
        const before = unit.hostFaults.length;
        const w = dev.write(at, pattern(16, 10));
        check(!w.ok, `${mode}: a DMA write reached a private page`);
        check(same16(v.vm.memory.readBytes(DATA_GPA, 16), pattern(16, 9)), `${mode}: the private page changed`);
        const f = unit.hostFaults.slice(before);
        check(f.length === 1, `${mode}: ${f.length} host faults for one refused DMA`);
        const e = decodeEvent(f[0]!.record);
        check(e.name === "RMP_PAGE_FAULT" && e.fields["DeviceID"] === 0x100 && e.fields["VMGTag"] === v.vm.id && e.fields["GPA"] === BigInt(DATA_GPA) && (Number(e.fields["Flags"]) & 0x20) !== 0, `${mode}: host event ${JSON.stringify(e, (_, x) => (typeof x === "bigint" ? x.toString(16) : x))}`);
        v.vm.memory.setShared(DATA_GPA, 4096, true);
        check(dev.write(at, pattern(16, 10)).ok, `${mode}: DMA to the page once shared failed`);
        v.vm.memory.setShared(DATA_GPA, 4096, false);
        check(!dev.read(at, 16).ok, `${mode}: a cached translation reached the page made private again`);
        check(bed.platform.host.memory.violations.length === 0, `${mode}: isolation violation`);
      }
    },
  },
];

describe("SEV-SNP on amd-vi", () => {
  for (const kase of snpCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(amdViPlugin, kase, 1, []);
      expect(result, result.detail).toMatchObject({ status: "pass" });
      if (kase.id === "snp-swiotlb-bounce") expect(result.metrics).toEqual({ "swiotlb-bytes-copied": 131072, "swiotlb-copies": 2, "viommu-bytes-copied": 0, "viommu-copies": 0, "viommu-pages-converted": 64 });
    });
  }
});
