import { describe, expect, it } from "vitest";
import { newWalkResult, NO_PASID } from "@viommu/core";
import { decodeEvent } from "../../src/format/event-record.js";
import { gicrSetlpirAddress } from "../../src/format/gic-doorbell.js";
import { rawSmmu } from "../raw-smmu.js";

const OVFLG = 0x8000_0000;

/** A raw SMMU with an all-invalid 16-entry stream table, enabled: every emulated DMA records C_BAD_STE. */
function withFaults(evtqLog2 = 3) {
  const s = rawSmmu({}, 4, evtqLog2);
  const strtab = s.v.pages.allocate(1)!;
  s.w64("STRTAB_BASE", strtab);
  s.w32("STRTAB_BASE_CFG", 4);
  s.w32("CR0", s.r32("CR0") | 1);
  const out = newWalkResult();
  const fault = (sid: number): void => s.iommu.translateEmulated(sid, NO_PASID, 0x1000 * sid, false, out);
  const record = (index: number): ReturnType<typeof decodeEvent> => decodeEvent(s.vm.memory.readWords(s.evtq + index * 32, new Uint32Array(8)));
  return { ...s, fault, record };
}

describe("emulated SMMUv3 event queue", () => {
  it("writes each record at PROD and advances PROD", () => {
    const s = withFaults();
    s.fault(1);
    s.fault(2);
    expect(s.r32("EVTQ_PROD")).toBe(2);
    expect(s.record(0)).toMatchObject({ name: "C_BAD_STE", fields: { StreamID: 1 } });
    expect(s.record(1)).toMatchObject({ name: "C_BAD_STE", fields: { StreamID: 2 } });
  });

  it("holds 2^LOG2SIZE records, then loses records and toggles EVTQ_PROD.OVFLG once per overflow", () => {
    const s = withFaults();
    for (let i = 0; i < 12; i++) s.fault(1);
    expect(s.r32("EVTQ_PROD")).toBe((8 | OVFLG) >>> 0);
    expect(s.iommu.evtq.lost).toBe(4);
    // Software drains and acknowledges (CONS = PROD with OVACKFLG = OVFLG): the next overflow toggles again.
    s.w32("EVTQ_CONS", 8 | OVFLG);
    for (let i = 0; i < 9; i++) s.fault(1);
    expect(s.r32("EVTQ_PROD")).toBe(0);
    expect(s.iommu.evtq.written).toBe(16);
  });

  it("masks a CONS write to the queue size: bits [19:LOG2SIZE + 1] are RES0 and have no effect (IHI0070 §6.3.96)", () => {
    const s = withFaults();
    for (let i = 0; i < 3; i++) s.fault(1);
    // Index 3 with stray bits 6 and 19 above the 8-entry queue's wrap bit, and OVACKFLG.
    s.w32("EVTQ_CONS", (3 | 0x40 | 0x8_0000 | OVFLG) >>> 0);
    expect(s.r32("EVTQ_CONS")).toBe((3 | OVFLG) >>> 0);
    const view = s.iommu.guestQueues().find((q) => q.name === "EVTQ")!;
    expect(view.consumer.decode(BigInt(s.r32("EVTQ_CONS")))).toEqual({ index: 3, wrap: false });
    // Exactly 8 more records fit before the queue is full.
    for (let i = 0; i < 8; i++) s.fault(2);
    expect(s.iommu.evtq.lost).toBe(0);
    s.fault(2);
    expect(s.iommu.evtq.lost).toBe(1);
    // The same for the command queue's PROD (software's) and a CONS initialised while the queue is off.
    s.w32("CMDQ_PROD", 0x4_0000);
    expect(s.r32("CMDQ_PROD")).toBe(0);
  });

  it("discards records while EVTQEN is clear, without an overflow", () => {
    const s = withFaults();
    s.w32("CR0", s.r32("CR0") & ~(1 << 2));
    s.fault(1);
    expect(s.r32("EVTQ_PROD")).toBe(0);
    expect(s.iommu.evtq.discarded).toBe(1);
  });

  it("raises GERROR.EVTQ_ABT_ERR when the queue memory cannot be written", () => {
    const s = withFaults();
    s.w32("CR0", s.r32("CR0") & ~(1 << 2));
    s.w64("EVTQ_BASE", 0x2_0000_0000n | 3n);
    s.w32("CR0", s.r32("CR0") | (1 << 2));
    s.fault(1);
    expect((s.r32("GERROR") >>> 2) & 1).toBe(1);
  });

  it("signals each record with the event MSI to the programmed CPU, or the wired event interrupt without an MSI address", () => {
    const s = withFaults();
    s.w64("EVTQ_IRQ_CFG0", gicrSetlpirAddress(2));
    s.w32("EVTQ_IRQ_CFG1", 0x2005);
    s.w32("IRQ_CTRL", 1 << 2);
    s.vm.interrupts.take();
    s.fault(1);
    expect(s.vm.interrupts.take()).toEqual([{ vector: 0x2005, destination: 2, path: "vmm", source: "smmuv3-evtq" }]);
    s.w64("EVTQ_IRQ_CFG0", 0);
    s.fault(1);
    expect(s.vm.interrupts.take()).toEqual([{ vector: s.iommu.gsivs.event, destination: 0, path: "vmm", source: "smmuv3-evtq" }]);
  });

  it("signals GERROR by its own MSI when an error is raised and GERROR_IRQEN is set", () => {
    const s = withFaults();
    s.w64("GERROR_IRQ_CFG0", gicrSetlpirAddress(1));
    s.w32("GERROR_IRQ_CFG1", 0x2007);
    s.w32("IRQ_CTRL", 1);
    s.vm.interrupts.take();
    s.submit(Uint32Array.of(0x7f, 0, 0, 0));
    expect(s.vm.interrupts.take()).toEqual([{ vector: 0x2007, destination: 1, path: "vmm", source: "smmuv3-gerror" }]);
  });
});
