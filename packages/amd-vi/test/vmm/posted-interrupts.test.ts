import { describe, expect, it } from "vitest";
import { unwrap } from "@viommu/core";
import { decodeGaLogEntry } from "../../src/format/ga-log.js";
import { decodeIrte128 } from "../../src/format/irte128.js";
import type { AmdViUnit } from "../../src/hw/amd-vi-unit.js";
import type { AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import type { AmdViGuestDriver } from "../../src/guest/amd-vi-driver.js";
import { amdBed } from "../support.js";

function posted(commandBuffer: "hw-vqueue" | "trapped") {
  const bed = amdBed({
    vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: 8 }],
    deviceInterrupts: "posted",
    eventInterrupts: commandBuffer === "trapped" ? "vmm" : "direct",
  });
  const v = bed.vms[0]!;
  return { bed, v, driver: v.drivers[0] as AmdViGuestDriver, device: v.iommus[0] as AmdViDevice, unit: bed.units[0] as AmdViUnit, dev: v.devices[0]!.device };
}

/** The host IRTEs of the physical device (requester 0x100), decoded. */
function hostEntries(t: ReturnType<typeof posted>): Record<string, unknown>[] {
  const out = [];
  for (let index = 0; index < 512; index++) {
    const e = t.unit.interruptRemapping.entry(0x100, { address: 0xfee0_0000, data: index });
    if (e !== undefined && (e[0]! & 1) === 1) out.push(decodeIrte128(e).fields);
  }
  return out;
}

for (const path of ["hw-vqueue", "trapped"] as const) {
  describe(`posted device interrupts (${path} command buffer)`, () => {
    it("the guest's IRTE becomes a vAPIC-form host IRTE: GuestMode, IsRun, GALogIntr, the guest vector, the vCPU's backing page as GA root, its CPU as Destination and KVM's GA tag", () => {
      const t = posted(path);
      unwrap(t.driver.mapInterrupt(0x10, 0x45, 3));
      const entries = hostEntries(t);
      expect(entries).toHaveLength(1);
      expect(entries[0]).toMatchObject({ RemapEn: 1, GuestMode: 1, IsRun: 1, GALogIntr: 1, Vector: 0x45, Destination: 3, GATag: (t.v.vm.id << 9) | 3 });
      expect(entries[0]!["GARootPtr"]).not.toBe(0);
    });

    it("a running vCPU takes every posted MSI directly, with no VMM intervention; the guest's own remapping is bypassed, not re-read", () => {
      const t = posted(path);
      const msi = unwrap(t.driver.mapInterrupt(0x10, 0x51, 5));
      t.v.vm.interrupts.take();
      const before = t.v.vm.interventions;
      for (let i = 0; i < 10; i++) expect(t.dev.signalMsi(msi)).toBe(true);
      expect(t.v.vm.interventions).toBe(before);
      const got = t.v.vm.interrupts.take();
      expect(got).toHaveLength(10);
      expect(got.every((g) => g.vector === 0x51 && g.destination === 5 && g.path === "direct")).toBe(true);
      expect(t.device.postedStats.posted).toBe(10);
    });

    it("a vCPU that is not running gets the vector in its backing page's IRR and a GA log entry (GUEST_NR, its GA tag, the device); the host's wake-up delivers it, one intervention each", () => {
      const t = posted(path);
      const msi = unwrap(t.driver.mapInterrupt(0x10, 0x52, 2));
      t.device.setVcpuRunning(2, false);
      expect(hostEntries(t)[0]).toMatchObject({ IsRun: 0 });
      t.v.vm.interrupts.take();
      const before = t.v.vm.interventions;
      t.dev.signalMsi(msi);
      const log = t.unit.interruptRemapping.gaLogEntries();
      expect(log).toHaveLength(1);
      expect(decodeGaLogEntry(log[0]!)).toMatchObject({ GATag: (t.v.vm.id << 9) | 2, DeviceID: 0x100, Type: 1 });
      expect(t.v.vm.interventions - before).toBe(1);
      expect(t.v.vm.interrupts.take()).toEqual([expect.objectContaining({ vector: 0x52, destination: 2, path: "vmm" })]);
      t.device.setVcpuRunning(2, true);
      expect(hostEntries(t)[0]).toMatchObject({ IsRun: 1, Destination: 2 });
      t.dev.signalMsi(msi);
      expect(t.v.vm.interrupts.take()).toEqual([expect.objectContaining({ vector: 0x52, destination: 2, path: "direct" })]);
    });

    it("the routes follow INVALIDATE_INTERRUPT_TABLE: a cleared guest IRTE frees the host entry and the MSI is the guest's IO_PAGE_FAULT (I set), a rewritten one posts the new vector", () => {
      const t = posted(path);
      const msi = unwrap(t.driver.mapInterrupt(0x10, 0x45, 3));
      unwrap(t.driver.unmapInterrupt(0x10, msi));
      expect(hostEntries(t)).toEqual([]);
      t.v.vm.interrupts.take();
      t.dev.signalMsi(msi);
      expect(t.v.vm.interrupts.take()).toEqual([]);
      t.bed.poll();
      const events = t.driver.readEvents();
      expect(events.some((e) => e.kind === "interrupt-fault" && e.name === "IO_PAGE_FAULT")).toBe(true);
      const again = unwrap(t.driver.mapInterrupt(0x10, 0x66, 7));
      expect(hostEntries(t)).toEqual([expect.objectContaining({ Vector: 0x66, Destination: 7 })]);
      t.dev.signalMsi(again);
      expect(t.v.vm.interrupts.take()).toEqual([expect.objectContaining({ vector: 0x66, destination: 7, path: "direct" })]);
    });

    it("a guest IRTE posting cannot carry (a logical destination, a vCPU the VM does not have, garbage) stays with the VMM: remapped or refused as before, never an exception", () => {
      const t = posted(path);
      const msi = unwrap(t.driver.mapInterrupt(0x10, 0x45, 3));
      const irt = t.driver.structures.interruptTables[0]!;
      const mem = t.v.vm.memory;
      for (const lo of [0x0000_0341, 0x0000_6301, 0xffff_ffff, 0x0000_0381]) {
        mem.write32(irt, lo);
        const raw = t.driver as unknown as { submit(c: Uint32Array[]): unknown };
        raw.submit([Uint32Array.of(0x10, 0x5000_0000, 0, 0)]);
        expect(() => t.dev.signalMsi(msi)).not.toThrow();
        expect(t.v.vm.interrupts.take().every((i) => i.path === "vmm")).toBe(true);
      }
      expect(t.bed.platform.host.memory.violations).toEqual([]);
    });
  });
}
