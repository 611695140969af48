/**
 * Shadow mode: the device translates through the VMM's shadow of the guest's table, a host paging domain. A DMA
 * fault there is first the host's; the VMM reads the host's reports for its devices and records in the guest's
 * event log the fault the guest's own tables explain (as the emulated unit would have raised it), so the guest's
 * driver sees it exactly as in nested mode.
 */
import { describe, expect, it } from "vitest";
import { Testbed } from "@viommu/conformance";
import { Perm, unwrap } from "@viommu/core";
import { MockFaultReason } from "../src/format/event.js";
import { mockPlugin } from "../src/plugin.js";

function shadowBed(eventLogEntries = 64) {
  const bed = unwrap(Testbed.create({ plugin: mockPlugin, mode: "shadow", vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], guest: { eventLogEntries } }));
  const v = bed.vms[0]!;
  const driver = v.drivers[0]!;
  const d = unwrap(driver.createDomain());
  unwrap(driver.attach(0x10, d));
  unwrap(driver.map(d, 0x10_0000, 0x2000_0000, 0x1000, Perm.Read));
  return { bed, v, driver, d, dev: v.devices[0]!.device };
}

describe("shadow-mode faults reach the guest", () => {
  it("a DMA to an unmapped IOVA and a write to a read-only page are DMA_FAULT records naming the guest's RID", () => {
    const { bed, driver, dev } = shadowBed();
    expect(dev.read(0x10_0000, 4).ok).toBe(true);
    expect(dev.read(0x50_0000, 4).ok).toBe(false);
    expect(dev.write(0x10_0000, Uint8Array.of(1)).ok).toBe(false);
    bed.poll();
    expect(driver.readEvents()).toMatchObject([
      { kind: "dma-fault", rid: 0x10, address: 0x50_0000, write: false, code: MockFaultReason.NOT_PRESENT },
      { kind: "dma-fault", rid: 0x10, address: 0x10_0000, write: true, code: MockFaultReason.PERMISSION },
    ]);
    // Read once: a second poll records nothing more.
    bed.poll();
    expect(driver.readEvents()).toEqual([]);
    bed.dispose();
  });

  it("a fault the guest's tables do not explain (a shadow mapping the back end refused) is not recorded as a DMA fault", () => {
    const bed = unwrap(Testbed.create({ plugin: mockPlugin, mode: "shadow", shadowBackend: "type1", dmaEntryLimit: 1, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] }));
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    // The second page's shadow mapping is refused: the invalidation fails (a command error the guest sees).
    expect(driver.map(d, 0x10_0000, 0x2000_0000, 0x2000, Perm.Read).ok).toBe(false);
    const dev = v.devices[0]!.device;
    expect(dev.read(0x10_0000, 4).ok).toBe(true);
    expect(dev.read(0x10_1000, 4).ok).toBe(false);
    bed.poll();
    expect(driver.readEvents().filter((e) => e.kind === "dma-fault")).toEqual([]);
    bed.dispose();
  });

  it("with the device entry's FPD set the guest's fault is suppressed, as the emulated unit suppresses it", () => {
    const { bed, v, driver, dev } = shadowBed();
    const devtab = Number(v.vm.mmioRead(v.iommus[0]!.mmioBase + 0x18, 8) & 0x000f_ffff_ffff_f000n);
    const at = devtab + 0x10 * 16;
    v.vm.memory.write32(at, v.vm.memory.read32(at) | 4);
    expect(dev.read(0x50_0000, 4).ok).toBe(false);
    bed.poll();
    expect(driver.readEvents()).toEqual([]);
    bed.dispose();
  });
});
