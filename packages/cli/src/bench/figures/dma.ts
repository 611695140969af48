import { Perm } from "@viommu/core";
import type { FigureSpec, Prepared } from "../harness.js";
import { mockBed } from "../mock-bed.js";

const BYTES = 65536;
const IOVA = 0x40_0000_0000;
const GPA = 0x100_0000;

function pattern(): Uint8Array {
  const p = new Uint8Array(BYTES);
  for (let i = 0; i < BYTES; i++) p[i] = (i * 131 + (i >>> 8)) & 0xff;
  return p;
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** A 64 KiB DMA read through the device into the caller's buffer vs `Uint8Array.set` of the same bytes. */
export const dmaRead: FigureSpec = {
  name: "dma-read-64k-vs-copy",
  unit: "GB/s",
  scale: "GB/s",
  bytesPerOp: BYTES,
  goal: "ratio >= 0.5",
  prepare(): Prepared {
    const b = mockBed();
    if (!b.driver.map(b.domain, IOVA, GPA, BYTES, Perm.ReadWrite).ok) throw new Error("bench setup: map failed");
    const source = pattern();
    b.vm.vm.memory.writeBytes(GPA, source);
    const into = new Uint8Array(BYTES);
    const copy = new Uint8Array(BYTES);
    const device = b.device;
    return {
      model: {
        run(n: number): number {
          into.fill(0);
          let done = 0;
          for (let i = 0; i < n; i++) if (device.readInto(IOVA, into, 0, BYTES)) done++;
          return done === n ? done : NaN;
        },
        verify() {
          const at = firstDifference(into, source);
          return at < 0 ? undefined : `byte ${at} read 0x${into[at]!.toString(16)}, guest memory holds 0x${source[at]!.toString(16)}`;
        },
      },
      baseline: {
        run(n: number): number {
          copy.fill(0);
          for (let i = 0; i < n; i++) copy.set(source);
          return n;
        },
        verify: () => (firstDifference(copy, source) < 0 ? undefined : "the plain copy differs"),
      },
      sameOutputs: true,
      note: "mock unit, 16 pages each translated (IOTLB hits) and copied",
      sabotage: () => void b.vm.vm.memory.write8(GPA + 4097, source[4097]! ^ 0xff),
      dispose: () => b.dispose(),
    };
  },
};

/** A 64 KiB DMA write from the caller's buffer vs `Uint8Array.set`; each op stamps its index so every one is checked to land. */
export const dmaWrite: FigureSpec = {
  name: "dma-write-64k-vs-copy",
  unit: "GB/s",
  scale: "GB/s",
  bytesPerOp: BYTES,
  goal: "ratio >= 0.5",
  prepare(): Prepared {
    const b = mockBed();
    if (!b.driver.map(b.domain, IOVA, GPA, BYTES, Perm.ReadWrite).ok) throw new Error("bench setup: map failed");
    const data = pattern();
    const stamp = new Uint32Array(data.buffer, BYTES - 4, 1);
    const copy = new Uint8Array(BYTES);
    const device = b.device;
    const memory = b.vm.vm.memory;
    const check = new Uint8Array(BYTES);
    let wrongLength = false;
    let last = 0;
    return {
      model: {
        run(n: number): number {
          let done = 0;
          for (let i = 0; i < n; i++) {
            stamp[0] = ++last;
            if (device.writeFrom(IOVA, data, 0, wrongLength ? BYTES - 4096 : BYTES)) done++;
          }
          return done === n ? done : NaN;
        },
        verify() {
          memory.readBytes(GPA, BYTES, check);
          const at = firstDifference(check, data);
          return at < 0 ? undefined : `guest byte ${at} holds 0x${check[at]!.toString(16)}, the device wrote 0x${data[at]!.toString(16)}`;
        },
      },
      baseline: {
        run(n: number): number {
          for (let i = 0; i < n; i++) {
            stamp[0] = ++last;
            copy.set(data);
          }
          return n;
        },
        verify: () => (firstDifference(copy, data) < 0 ? undefined : "the plain copy differs"),
      },
      sameOutputs: true,
      note: "mock unit, 16 pages each translated (IOTLB hits) and copied",
      sabotage: () => void (wrongLength = true),
      dispose: () => b.dispose(),
    };
  },
};
