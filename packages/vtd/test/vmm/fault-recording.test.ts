import { describe, expect, it } from "vitest";
import { DATA_GPA, IOVA, mapped, vtdBed } from "../support.js";

function faults(b: ReturnType<typeof vtdBed>, count: number, base: number): number[] {
  const dev = b.bed.vms[0]!.devices[0]!.device;
  const iovas: number[] = [];
  for (let i = 0; i < count; i++) {
    dev.read(base + i * 0x1000, 4);
    iovas.push(base + i * 0x1000);
  }
  b.bed.poll();
  return iovas;
}

describe("VT-d fault recording: the guest sees its own faults", () => {
  for (const [mode, variant, code, name] of [
    ["nested", "scalable", 0x71, "FS_PAGING_ENTRY_P"],
    ["shadow", "scalable", 0x71, "FS_PAGING_ENTRY_P"],
    ["shadow", "legacy", 0x6, "READ"],
    ["nested", "legacy", 0x6, "READ"],
  ] as const) {
    it(`records a DMA to an unmapped IOVA with the guest's source id and the ${name} reason (${mode}, ${variant})`, () => {
      const b = vtdBed(mode, variant);
      mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
      faults(b, 1, 0x4000_0000);
      const evs = b.driver.readEvents();
      expect(evs.map((e) => [e.kind, e.code, e.name, e.rid, e.address, e.write])).toEqual([["dma-fault", code, name, 0x10, 0x4000_0000, false]]);
      expect(b.bed.platform.host.memory.violations).toEqual([]);
    });
  }

  it("records a device whose context the guest never set up with the context/PASID reason the tables give", () => {
    const legacy = vtdBed("shadow", "legacy");
    faults(legacy, 1, 0x1000);
    expect(legacy.driver.readEvents().map((e) => [e.code, e.name])).toEqual([[0x1, "ROOT_ENTRY_P"]]);
    const scalable = vtdBed("nested", "scalable");
    faults(scalable, 1, 0x1000);
    expect(scalable.driver.readEvents().map((e) => [e.code, e.name])).toEqual([[0x39, "SM_ROOT_ENTRY_P"]]);
  });

  it("records nothing while DMA translation is off", () => {
    const b = vtdBed("nested", undefined, { guest: { translation: false } });
    faults(b, 3, 0x7000_0000_0000);
    expect(b.driver.readEvents()).toEqual([]);
  });
});

describe("VT-d fault recording: the register ring", () => {
  it("fills the eight records in order, sets PFO and drops the rest, then records again once the guest has read them", () => {
    const b = vtdBed("nested");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const iovas = faults(b, 20, 0x4000_0000);
    const seen = b.driver.readEvents();
    expect(seen.map((e) => e.address)).toEqual(iovas.slice(0, 8));
    expect(b.driver.takeOverflow()).toBe(true);
    const again = faults(b, 2, 0x5000_0000);
    expect(b.driver.readEvents().map((e) => e.address)).toEqual(again);
    expect(b.driver.takeOverflow()).toBe(false);
  });

  it("wraps the record index after the last register without a false overflow", () => {
    const b = vtdBed("nested");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    for (let round = 0; round < 4; round++) {
      const iovas = faults(b, 7, 0x6000_0000 + round * 0x10_0000);
      expect(b.driver.readEvents().map((e) => e.address)).toEqual(iovas);
      expect(b.driver.takeOverflow()).toBe(false);
    }
  });

  it("raises one fault event per batch: none while PPF is still set, held in FECTL.IP while masked", () => {
    const b = vtdBed("nested", undefined, { guest: { eventVector: 0x5a, eventDestination: 2 } });
    const vm = b.bed.vms[0]!.vm;
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    vm.interrupts.take();
    faults(b, 3, 0x4000_0000);
    expect(vm.interrupts.take().map((i) => [i.vector, i.destination, i.source])).toEqual([[0x5a, 2, "vtd-fault"]]);
    b.driver.readEvents();
    vm.mmioWrite(b.device.mmioBase + 0x38, 4, 0x8000_0000n);
    faults(b, 1, 0x4800_0000);
    expect(vm.interrupts.take()).toEqual([]);
    expect(Number(vm.mmioRead(b.device.mmioBase + 0x38, 4))).toBe(0xc000_0000);
    vm.mmioWrite(b.device.mmioBase + 0x38, 4, 0n);
    expect(vm.interrupts.take().map((i) => i.vector)).toEqual([0x5a]);
  });

  it("suppresses qualified faults when the context entry sets FPD, but not an unqualified one", () => {
    const b = vtdBed("shadow", "legacy");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const mem = b.bed.vms[0]!.vm.memory;
    const root = Number(b.device.translator.rootTable);
    const ctp = (mem.read32(root) & ~0xfff) >>> 0;
    mem.write32(ctp + 0x10 * 16, mem.read32(ctp + 0x10 * 16) | 2);
    faults(b, 1, 0x4000_0000);
    expect(b.driver.readEvents()).toEqual([]);
    // A reserved bit in the root entry (0xA) is reported whatever FPD says.
    mem.write32(root, mem.read32(root) | 0x10);
    faults(b, 1, 0x4000_0000);
    expect(b.driver.readEvents().map((e) => e.code)).toEqual([0xa]);
  });

  it("names reads with T1 = 1 and writes with T1 = 0 in the record", () => {
    const b = vtdBed("nested");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const dev = b.bed.vms[0]!.devices[0]!.device;
    dev.write(0x4000_0000, Uint8Array.of(1));
    dev.read(0x4000_1000, 1);
    b.bed.poll();
    const evs = b.driver.readEvents();
    expect(evs.map((e) => e.write)).toEqual([true, false]);
    expect(evs.map((e) => BigInt(e.raw[1]!) >> 62n)).toEqual([2n, 3n]);
  });
});
