import { describe, expect, it } from "vitest";
import { Perm, unwrap } from "@viommu/core";
import { EventType } from "../../src/format/event-record.js";
import { smmuBed } from "../support.js";

const IOVA = 0x10_0000;
const DATA = 0x2000_0000;

function shadowed() {
  const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], mode: "shadow" });
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  unwrap(s.driver.map(domain, IOVA, DATA, 0x1000, Perm.Read));
  return { ...s, domain };
}

describe("shadow mode: a passthrough device's fault reaches the guest's event queue as its own tables explain it", () => {
  it("an unmapped IOVA is F_TRANSLATION and a write to a read-only page F_PERMISSION, naming the vSID and the address", () => {
    const s = shadowed();
    expect(s.device.read(IOVA + 0x5000, 8).ok).toBe(false);
    expect(s.device.write(IOVA, Uint8Array.of(1)).ok).toBe(false);
    s.bed.poll();
    const events = s.driver.readEvents().filter((e) => e.kind === "dma-fault");
    expect(events.map((e) => [e.code, e.rid, e.address, e.write])).toEqual([
      [EventType.F_TRANSLATION, 0x10, IOVA + 0x5000, false],
      [EventType.F_PERMISSION, 0x10, IOVA, true],
    ]);
  });

  it("a DMA the guest's tables allow raises nothing in the guest, and nothing is reported twice", () => {
    const s = shadowed();
    expect(s.device.read(IOVA, 8).ok).toBe(true);
    s.bed.poll();
    expect(s.driver.readEvents()).toEqual([]);
    expect(s.device.read(IOVA + 0x5000, 8).ok).toBe(false);
    s.bed.poll();
    s.bed.poll();
    expect(s.driver.readEvents().filter((e) => e.kind === "dma-fault")).toHaveLength(1);
  });
});
