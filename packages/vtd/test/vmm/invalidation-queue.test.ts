import { describe, expect, it } from "vitest";
import { encodeInvDesc } from "../../src/format/inv-desc.js";
import { InvalidationQueueErrorInfo } from "../../src/format/registers.js";
import { vtdBed } from "../support.js";

const QUEUE = 0x80_0000;
const STATUS = 0x90_0000;

/** An untouched unit whose invalidation queue the test programs by hand (no driver), 128- or 256-bit. */
function queue(wide: boolean, mode: "nested" | "shadow" = "nested") {
  const b = vtdBed(mode, undefined, { noInit: true });
  const vm = b.bed.vms[0]!.vm;
  const base = b.device.mmioBase;
  const w32 = (o: number, v: number): void => vm.mmioWrite(base + o, 4, BigInt(v >>> 0));
  const r32 = (o: number): number => Number(vm.mmioRead(base + o, 4));
  const r64 = (o: number): bigint => vm.mmioRead(base + o, 8);
  vm.mmioWrite(base + 0x90, 8, BigInt(QUEUE) | (wide ? 1n << 11n : 0n));
  w32(0x18, 1 << 26);
  const size = wide ? 32 : 16;
  let tail = 0;
  const submit = (...descs: Uint32Array[]): void => {
    for (const d of descs) {
      const words = new Uint32Array(size / 4);
      words.set(d.subarray(0, size / 4));
      vm.memory.writeWords(QUEUE + tail, words);
      tail += size;
    }
    w32(0x88, tail);
  };
  const wait = (data: number, extra: Partial<{ IF: number; FN: number; SW: number; PD: number }> = { SW: 1 }) =>
    encodeInvDesc("INV_WAIT", { STATUS_DATA: data, STATUS_ADDR: BigInt(STATUS), ...extra });
  return { ...b, vm, w32, r32, r64, submit, wait, size };
}

describe("VT-d invalidation queue: wait descriptors", () => {
  for (const wide of [false, true]) {
    it(`writes the status data to the status address (${wide ? 256 : 128}-bit descriptors) and advances IQH to IQT`, () => {
      const q = queue(wide);
      q.submit(encodeInvDesc("IOTLB_INV", { G: 1 }), q.wait(0x1234));
      expect(q.vm.memory.read32(STATUS)).toBe(0x1234);
      expect(Number(q.r64(0x80))).toBe(2 * q.size);
      expect(q.r32(0x34) & 0x10).toBe(0);
    });
  }

  it("sets ICS.IWC and raises the completion event on IF; held pending (IECTL.IP) while masked, sent on unmask", () => {
    const q = queue(false);
    q.w32(0xa4, 0x66);
    q.w32(0xa8, 0xfee0_3000);
    q.vm.interrupts.take();
    q.submit(q.wait(1, { IF: 1 }));
    expect(q.r32(0x9c)).toBe(1);
    expect(q.r32(0xa0)).toBe(0xc000_0000);
    expect(q.vm.interrupts.take()).toEqual([]);
    q.w32(0xa0, 0);
    expect(q.vm.interrupts.take().map((i) => [i.vector, i.destination])).toEqual([[0x66, 3]]);
    expect(q.r32(0xa0)).toBe(0);
    // IWC still set: a second IF raises nothing until software clears it.
    q.submit(q.wait(2, { IF: 1 }));
    expect(q.vm.interrupts.take()).toEqual([]);
    q.w32(0x9c, 1);
    q.submit(q.wait(3, { IF: 1 }));
    expect(q.vm.interrupts.take().length).toBe(1);
  });

  it("treats a status address outside guest RAM, and PD without ECAP.PDS, as queue errors", () => {
    const q = queue(false);
    q.submit(encodeInvDesc("INV_WAIT", { SW: 1, STATUS_DATA: 1, STATUS_ADDR: 0x1_0000_0000_0000n }));
    expect(q.r32(0x34) & 0x10).toBe(0x10);
    const p = queue(false);
    p.submit(p.wait(1, { SW: 1, PD: 1 }));
    expect(p.r32(0x34) & 0x10).toBe(0x10);
  });

  it("writes nothing for a status address above bit 51: the address is QW1 63:2 whole, never cut to RAM (difftest found the cut; QEMU stops with IQE)", () => {
    for (const high of [0x4000_0000_0000_0000n, 0x0010_0000_0000_0000n]) {
      const q = queue(false);
      q.vm.memory.write32(STATUS, 0xdead);
      q.submit(encodeInvDesc("INV_WAIT", { SW: 1, STATUS_DATA: 0x77, STATUS_ADDR: high | BigInt(STATUS) }));
      expect(q.vm.memory.read32(STATUS)).toBe(0xdead);
      expect(q.r32(0x34) & 0x10).toBe(0x10);
      expect(Number(q.r64(0x80))).toBe(0);
    }
  });
});

describe("VT-d invalidation queue: errors", () => {
  it("stops with FSTS.IQE and IQH at an unknown descriptor type, executing nothing after it; clearing IQE resumes at IQH", () => {
    const q = queue(false);
    const bad = new Uint32Array(4);
    bad[0] = 0xf;
    q.submit(q.wait(1), bad, q.wait(2));
    expect(q.vm.memory.read32(STATUS)).toBe(1);
    expect(q.r32(0x34) & 0x10).toBe(0x10);
    expect(Number(q.r64(0x80))).toBe(16);
    expect(Number(q.r64(0xb0) & 0xfn)).toBe(InvalidationQueueErrorInfo.INVALID_DESCRIPTOR_TYPE);
    // Software repairs the slot (as Linux copies its wait descriptor there) and clears IQE.
    q.vm.memory.writeWords(QUEUE + 16, q.wait(3));
    q.w32(0x34, 0x10);
    expect(q.vm.memory.read32(STATUS)).toBe(2);
    expect(Number(q.r64(0x80))).toBe(48);
  });

  it("reports a reserved bit as RSVD_FIELD_VIOLATION and an address mask above CAP.MAMV as a queue error", () => {
    const q = queue(false);
    const desc = encodeInvDesc("CC_INV", { G: 1 });
    desc[0] = (desc[0]! | 0x100) >>> 0;
    q.submit(desc);
    expect(Number(q.r64(0xb0) & 0xfn)).toBe(InvalidationQueueErrorInfo.RSVD_FIELD_VIOLATION);
    const m = queue(false);
    m.submit(encodeInvDesc("IOTLB_INV", { G: 3, DID: 1, AM: 19, ADDR: 0n }));
    expect(m.r32(0x34) & 0x10).toBe(0x10);
  });

  it("rejects PASID-based descriptors in 128-bit mode (INVALID_DESCRIPTOR_WIDTH) and accepts them in 256-bit mode", () => {
    const q = queue(false);
    q.submit(encodeInvDesc("P_IOTLB_INV", { G: 2, DID: 1, PASID: 0 }));
    expect(Number(q.r64(0xb0) & 0xfn)).toBe(InvalidationQueueErrorInfo.INVALID_DESCRIPTOR_WIDTH);
    const w = queue(true);
    w.submit(encodeInvDesc("P_IOTLB_INV", { G: 2, DID: 1, PASID: 0 }), w.wait(9));
    expect(w.vm.memory.read32(STATUS)).toBe(9);
  });

  it("flags a tail at or beyond the queue size, and a 256-bit tail with bit 4 set", () => {
    const q = queue(false);
    q.w32(0x88, 0x1000);
    expect(Number(q.r64(0xb0) & 0xfn)).toBe(InvalidationQueueErrorInfo.INVALID_TAIL_PTR);
    const w = queue(true);
    w.w32(0x88, 0x10);
    expect(Number(w.r64(0xb0) & 0xfn)).toBe(InvalidationQueueErrorInfo.QUEUE_TAIL_MISALIGNED);
  });

  it("times out (ITE) a device-TLB invalidation for a source id with no device, with IQH past it and ITESID set", () => {
    const q = queue(false);
    q.submit(encodeInvDesc("DEV_TLB_INV", { SID: 0x77, S: 1, ADDR: 0x7fff_ffff_ffff_f000n }), q.wait(5));
    expect(q.r32(0x34) & 0x40).toBe(0x40);
    expect(Number(q.r64(0x80))).toBe(16);
    expect(Number((q.r64(0xb0) >> 32n) & 0xffffn)).toBe(0x77);
    expect(q.vm.memory.read32(STATUS)).toBe(0);
    q.w32(0x34, 0x40);
    expect(q.vm.memory.read32(STATUS)).toBe(5);
  });

  it("answers a device-TLB invalidation to a device without ATS enabled with ICE, and keeps processing", () => {
    const q = queue(false);
    q.submit(encodeInvDesc("DEV_TLB_INV", { SID: 0x10 }), q.wait(6));
    expect(q.r32(0x34) & 0x20).toBe(0x20);
    expect(Number(q.r64(0xb0) >> 48n)).toBe(0x10);
    expect(q.vm.memory.read32(STATUS)).toBe(6);
  });

  it("raises the fault event for a queue error when no status was pending", () => {
    const q = queue(false);
    q.w32(0x3c, 0x5a);
    q.w32(0x40, 0xfee0_2000);
    q.w32(0x38, 0);
    q.vm.interrupts.take();
    q.submit(new Uint32Array(4));
    expect(q.vm.interrupts.take().map((i) => [i.vector, i.destination, i.source])).toEqual([[0x5a, 2, "vtd-fault"]]);
  });

  it("consumes at most one ring per doorbell, and nothing outside guest RAM", () => {
    const q = queue(false);
    q.vm.mmioWrite(q.device.mmioBase + 0x90, 8, 0x7fff_f000n * 0x1000n);
    q.w32(0x18, 0);
    q.w32(0x18, 1 << 26);
    q.w32(0x88, 0x20);
    expect(Number(q.r64(0xb0) & 0xfn)).toBe(InvalidationQueueErrorInfo.FETCH_DESCRIPTOR_ERR);
    expect(q.bed.platform.host.memory.violations).toEqual([]);
  });
});
