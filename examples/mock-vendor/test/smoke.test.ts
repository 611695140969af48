import { describe, expect, it } from "vitest";
import { Perm, unwrap } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import { mockPlugin } from "../src/plugin.js";

describe("mock end to end", () => {
  it("mapped DMA reaches the guest page", () => {
    const bed = unwrap(Testbed.create({ plugin: mockPlugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] }));
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const dom = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, dom));
    unwrap(driver.map(dom, 0x10_0000, 0x2000_0000, 0x2000, Perm.ReadWrite));
    const dev = v.devices[0]!.device;
    const r = dev.write(0x10_0010, Uint8Array.of(1, 2, 3, 4));
    expect(r).toMatchObject({ ok: true });
    expect([...v.vm.memory.readBytes(0x2000_0010, 4)]).toEqual([1, 2, 3, 4]);
    const bad = dev.write(0x50_0000, Uint8Array.of(9));
    expect(bad.ok).toBe(false);
    bed.poll();
    const events = driver.readEvents();
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ kind: "dma-fault", rid: 0x10, address: 0x50_0000, write: true });
    bed.dispose();
  });
});
