import { Platform, type GuestMemory, type VirtualMachine } from "@viommu/core";
import { describe, expect, it } from "vitest";
import { recordingMemory, recordingVm, type TraceOp } from "../src/index.js";

function guest(): { vm: VirtualMachine; memory: GuestMemory; ops: TraceOp[]; rec: GuestMemory; recVm: VirtualMachine } {
  const platform = new Platform({ plugins: [] });
  const vm = platform.createVm({ memoryBytes: 2 ** 24, memoryBase: 0x1000_0000 });
  const ops: TraceOp[] = [];
  const sink = { record: (op: TraceOp) => ops.push(op) };
  const rec = recordingMemory(vm.memory, sink);
  return { vm, memory: vm.memory, ops, rec, recVm: recordingVm(vm, rec, sink) };
}

const B = 0x1000_0000;

describe("the recording view of guest memory", () => {
  const writes: [string, (m: GuestMemory) => void, TraceOp][] = [
    ["write8", (m) => m.write8(B + 1, 0x1ab), { op: "mem-write", addr: B + 1, data: Uint8Array.of(0xab) }],
    ["write16", (m) => m.write16(B, 0xbeef), { op: "mem-write", addr: B, data: Uint8Array.of(0xef, 0xbe) }],
    ["write32", (m) => m.write32(B, 0x8899aabb), { op: "mem-write", addr: B, data: Uint8Array.of(0xbb, 0xaa, 0x99, 0x88) }],
    ["write64", (m) => m.write64(B, 0x0102030405060708n), { op: "mem-write", addr: B, data: Uint8Array.of(8, 7, 6, 5, 4, 3, 2, 1) }],
    ["write64Halves", (m) => m.write64Halves(B, 0x11223344, 0x55667788), { op: "mem-write", addr: B, data: Uint8Array.of(0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55) }],
    ["writeWords", (m) => m.writeWords(B, Uint32Array.of(1, 0xffffffff)), { op: "mem-write", addr: B, data: Uint8Array.of(1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff) }],
    ["writeBytes", (m) => m.writeBytes(B + 3, Uint8Array.of(5, 6)), { op: "mem-write", addr: B + 3, data: Uint8Array.of(5, 6) }],
    ["fill", (m) => m.fill(B, 16, 0x5a), { op: "mem-fill", addr: B, len: 16, byte: 0x5a }],
    ["fill with its default", (m) => m.fill(B, 16), { op: "mem-fill", addr: B, len: 16, byte: 0 }],
    ["setShared", (m) => m.setShared(B, 4096, true), { op: "mem-share", addr: B, len: 4096, shared: true }],
  ];
  for (const [what, act, op] of writes) {
    it(`records ${what} as one operation with its bytes in memory order`, () => {
      const g = guest();
      act(g.rec);
      expect(g.ops).toEqual([op]);
    });
  }

  it("records every read with what it read as the expectation, once per call", () => {
    const g = guest();
    g.memory.writeBytes(B, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
    expect(g.rec.read8(B + 7)).toBe(8);
    expect(g.rec.read16(B)).toBe(0x0201);
    expect(g.rec.read32(B + 1)).toBe(0x05040302);
    expect(g.rec.read64(B)).toBe(0x0807060504030201n);
    const halves = new Uint32Array(2);
    g.rec.read64Halves(B, halves);
    g.rec.readWords(B + 4, new Uint32Array(1));
    g.rec.readBytes(B + 6, 2, new Uint8Array(10));
    const at = (addr: number, ...bytes: number[]): TraceOp => ({ op: "mem-read", addr, len: bytes.length, expect: Uint8Array.from(bytes) });
    expect(g.ops).toEqual([at(B + 7, 8), at(B, 1, 2), at(B + 1, 2, 3, 4, 5), at(B, 1, 2, 3, 4, 5, 6, 7, 8), at(B, 1, 2, 3, 4, 5, 6, 7, 8), at(B + 4, 5, 6, 7, 8), at(B + 6, 7, 8)]);
  });

  it("records what loading an image wrote (its nonzero pages), not the call", () => {
    const g = guest();
    const image = new Uint8Array(3 * 4096);
    image[4096 + 5] = 9;
    g.rec.loadImage(image, B);
    expect(g.ops).toEqual([{ op: "mem-write", addr: B + 4096, data: image.subarray(4096, 8192) }]);
  });

  it("records nothing for a host-side call or an access that fails", () => {
    const g = guest();
    expect(g.rec.contains(B, 4)).toBe(true);
    g.rec.pin(B);
    expect(() => g.rec.write32(B - 4, 1)).toThrow(RangeError);
    expect(() => g.rec.read32(B + 2 ** 24)).toThrow(RangeError);
    g.rec.writeBytes(B, new Uint8Array(0));
    expect(g.ops).toEqual([]);
    expect(g.rec.end).toBe(B + 2 ** 24);
  });
});

describe("the recording view of the VM", () => {
  it("records register accesses and hypercalls with their answers, and hands out the recording memory", () => {
    const g = guest();
    let last = 0n;
    g.vm.mapMmio(0xfed0_0000, 0x1000, { read: (off) => BigInt(off) | 0x100n, write: (_o, _s, v) => void (last = v) });
    g.vm.onHypercall((input) => input + 1n);
    expect(g.recVm.mmioRead(0xfed0_0010, 4)).toBe(0x110n);
    g.recVm.mmioWrite(0xfed0_0020, 4, -1);
    g.recVm.mmioWrite(0xfed0_0028, 8, 0x1234n);
    expect(g.recVm.hypercall(41n, 0x1000, 0x2000)).toBe(42n);
    expect(last).toBe(0x1234n);
    expect(g.recVm.memory).toBe(g.rec);
    expect(g.recVm.mmioRegions()).toHaveLength(1);
    // The driver's own registrations land in a scope of the recording, under the VM's.
    expect(g.recVm.container).not.toBe(g.vm.container);
    expect(g.recVm.container).toBe(g.recVm.container);
    expect(g.ops).toEqual([
      { op: "mmio-read", addr: 0xfed0_0010, size: 4, expect: 0x110n },
      { op: "mmio-write", addr: 0xfed0_0020, size: 4, value: 0xffff_ffffn },
      { op: "mmio-write", addr: 0xfed0_0028, size: 8, value: 0x1234n },
      { op: "hypercall", input: 41n, inputGpa: 0x1000, outputGpa: 0x2000, expect: 42n },
    ]);
  });
});
