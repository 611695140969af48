import { Iotlb, Perm } from "@viommu/core";
import type { FigureResult, OneShotSpec } from "../harness.js";
import { BenchRefused } from "../harness.js";

const NAME = "internal-iotlb-bytes-per-entry";

/** Heap and typed-array bytes per cached entry, with a million entries (after a collection when --expose-gc). */
export const iotlbBytesInternal: OneShotSpec = {
  name: NAME,
  yields: [NAME],
  async oneShot(options): Promise<FigureResult[]> {
    const gc = (globalThis as { gc?: () => void }).gc;
    // Earlier figures' buffers are released over a few collections: settle before measuring.
    for (let i = 0; i < 3; i++) {
      gc?.();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const before = process.memoryUsage();
    const n = options.quick ? 100_000 : 1_000_000;
    const tlb = new Iotlb(n);
    for (let i = 0; i < n; i++) tlb.insert(1 + (i % 16), i % 64, i * 4096, 12, i * 4096, Perm.Read);
    gc?.();
    const after = process.memoryUsage();
    if (tlb.size !== n) throw new BenchRefused(NAME, `${tlb.size} entries cached of ${n} inserted`);
    const bytes = after.heapUsed - before.heapUsed + (after.arrayBuffers - before.arrayBuffers);
    return [{ name: NAME, value: Math.round((bytes / n) * 10) / 10, unit: "bytes", verified: true, note: gc ? `${n} entries, after gc` : `${n} entries, without --expose-gc: an upper bound` }];
  },
};
