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

describe("typed events", () => {
  it("carry faults, invalidations and event-log overflow to listeners, one throwing listener isolated", () => {
    const bed = unwrap(Testbed.create({ plugin: mockPlugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], guest: { eventLogEntries: 2 } }));
    const seen: string[] = [];
    const events = bed.platform.host.events;
    events.on("fault", () => {
      throw new Error("a broken listener");
    });
    events.on("fault", (e) => seen.push(`fault:${e.reason}`));
    events.on("invalidation", (e) => seen.push(`invalidation:${e.scope}`));
    events.on("overflow", (e) => seen.push(`overflow:${e.queue}`));
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const dom = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, dom));
    unwrap(driver.map(dom, 0x1000, 0x10_0000, 0x1000, Perm.Read));
    for (let i = 0; i < 4; i++) v.devices[0]!.device.read(0x10_0000 + i * 0x1000, 4);
    bed.poll();
    expect(seen).toContain("invalidation:range");
    expect(seen.filter((s) => s === "fault:translation")).toHaveLength(4);
    expect(seen).toContain("overflow:mock-event-log");
    expect(events.failures).toHaveLength(4);
    bed.dispose();
  });
});
