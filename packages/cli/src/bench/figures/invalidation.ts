import { Iotlb, newIotlbHit, Perm } from "@viommu/core";
import type { FigureSpec, Prepared, Workload } from "../harness.js";

const VMID = 9;
const ASID = 99;
const RANGE_PAGES = 16;
const RANGE = 0x7f_0000_0000;

/**
 * One operation: cache 16 pages of a tag, then invalidate exactly that range. The tag also holds `filler`
 * other entries (outside the range), so the range is looked up inside a tag of that size.
 */
function rangeWorkload(filler: number, sabotage: { on: boolean }): Workload & { tlb: Iotlb } {
  const tlb = new Iotlb(filler + 2 * RANGE_PAGES);
  for (let i = 0; i < filler; i++) tlb.insert(VMID, ASID, i * 4096, 12, 0x1_0000_0000 + i * 4096, Perm.Read);
  let removedTotal = 0;
  let ops = 0;
  return {
    tlb,
    run(n: number): number {
      let removed = 0;
      for (let op = 0; op < n; op++) {
        for (let p = 0; p < RANGE_PAGES; p++) tlb.insert(VMID, ASID, RANGE + p * 4096, 12, 0x2_0000_0000 + p * 4096, Perm.ReadWrite);
        removed += tlb.invalidateRange(VMID, ASID, RANGE, (sabotage.on ? RANGE_PAGES - 1 : RANGE_PAGES) * 4096);
      }
      removedTotal += removed;
      ops += n;
      return removed;
    },
    verify(): string | undefined {
      if (removedTotal !== ops * RANGE_PAGES) return `removed ${removedTotal} entries in ${ops} invalidations of ${RANGE_PAGES} pages`;
      if (tlb.size !== filler) return `${tlb.size} entries left, ${filler} expected (only the range may go)`;
      return undefined;
    },
  };
}

/** Range invalidation of 16 pages in a tag holding 1M entries (model) vs 1k entries (baseline). */
export const rangeInvalidate: FigureSpec = {
  name: "iotlb-range-invalidate-16-in-1m-vs-1k",
  unit: "M invalidations/s",
  goal: "ratio >= 0.83 (cost at 1M <= 1.2x cost at 1k)",
  prepare(options): Prepared {
    const sabotage = { on: false };
    const big = rangeWorkload(options.quick ? 1 << 17 : 1 << 20, sabotage);
    const small = rangeWorkload(1 << 10, { on: false });
    return {
      model: big,
      baseline: small,
      sameOutputs: true,
      note: `each op caches ${RANGE_PAGES} pages and invalidates them; ${options.quick ? "128k" : "1M"} vs 1k other entries in the same tag`,
      sabotage: () => void (sabotage.on = true),
    };
  },
};

/** Whole-ASID invalidation of 100 entries with 1M (model) vs 1k (baseline) entries in other tags. */
export const asidInvalidateInternal: FigureSpec = {
  name: "internal-asid-invalidate-1m-vs-1k",
  unit: "M invalidations/s",
  prepare(options): Prepared {
    const make = (total: number): Workload => {
      const tlb = new Iotlb(total + 128);
      for (let i = 0; i < total; i++) tlb.insert(1 + (i % 50), 1 + (i % 7), i * 4096, 12, i * 4096, Perm.Read);
      let bad = 0;
      return {
        run(n: number): number {
          let removed = 0;
          for (let r = 0; r < n; r++) {
            for (let i = 0; i < 100; i++) tlb.insert(VMID, ASID, i * 4096, 12, i * 4096, Perm.Read);
            const got = tlb.invalidateAsid(VMID, ASID);
            if (got !== 100) bad++;
            removed += got;
          }
          return removed;
        },
        verify: () => (bad === 0 && tlb.size === total ? undefined : `${bad} invalidations removed the wrong count; ${tlb.size} entries left of ${total}`),
      };
    };
    return { model: make(options.quick ? 1 << 17 : 1_000_000), baseline: make(1_000), sameOutputs: true, note: "100 entries filled and invalidated per op" };
  },
};

/** Internal: Iotlb.lookup alone vs Map.get on the same page numbers. */
export const iotlbLookupInternal: FigureSpec = {
  name: "internal-iotlb-lookup-vs-map",
  unit: "M lookups/s",
  prepare(): Prepared {
    const entries = 4096;
    const tlb = new Iotlb(entries);
    const map = new Map<number, number>();
    const keys = new Float64Array(entries);
    const pages = new Float64Array(entries);
    for (let i = 0; i < entries; i++) {
      const iova = 0x10_0000_0000 + i * 0x3000;
      keys[i] = iova + 0x123;
      pages[i] = Math.floor(iova / 4096);
      tlb.insert(1, 7, iova, 12, 0x8000_0000 + i * 4096, Perm.ReadWrite);
      map.set(pages[i]!, 0x8000_0000 + i * 4096);
    }
    const hit = newIotlbHit();
    return {
      model: {
        run(n: number): number {
          let sum = 0;
          for (let i = 0; i < n; i++) {
            if (!tlb.lookup(1, 7, keys[i & (entries - 1)]!, hit)) return NaN;
            sum += hit.pageBase;
          }
          return sum;
        },
      },
      baseline: {
        run(n: number): number {
          let sum = 0;
          for (let i = 0; i < n; i++) {
            const v = map.get(pages[i & (entries - 1)]!);
            if (v === undefined) return NaN;
            sum += v;
          }
          return sum;
        },
      },
      sameOutputs: true,
    };
  },
};
