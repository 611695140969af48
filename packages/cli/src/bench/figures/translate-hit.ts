import { NO_PASID, newWalkResult, Perm, type DmaRequest } from "@viommu/core";
import type { FigureSpec, Prepared } from "../harness.js";
import { BENCH_RID, mapScattered, mockBed, type MockBed } from "../mock-bed.js";

const PAGES = 4096;
const IOVA = 0x40_0000_0000;
const STRIDE = 0x3000;
const GPA = 0x100_0000;
const OFFSET = 0x123;

/** A warmed IOTLB: every page translated once, each output checked against the guest memory's backing. */
interface HitSetup {
  readonly b: MockBed;
  readonly iovas: Float64Array;
  readonly keys: Float64Array;
  readonly expected: Map<number, number>;
}

function hitSetup(): HitSetup {
  const b = mockBed();
  mapScattered(b, IOVA, STRIDE, GPA, PAGES);
  const iovas = new Float64Array(PAGES);
  const keys = new Float64Array(PAGES);
  const expected = new Map<number, number>();
  const out = newWalkResult();
  for (let i = 0; i < PAGES; i++) {
    iovas[i] = IOVA + i * STRIDE + OFFSET;
    keys[i] = Math.floor(iovas[i]! / 4096);
    b.device.translate(iovas[i]!, false, NO_PASID, out);
    const backing = b.vm.vm.memory.backingOf(GPA + i * 4096);
    if (!out.ok || backing === undefined || out.output !== backing + OFFSET) throw new Error(`bench setup: page ${i} translates to ${out.output}, guest memory backs it at ${backing}`);
    expected.set(keys[i]!, out.output);
  }
  return { b, iovas, keys, expected };
}

/** The baseline: Map.get on the same page numbers, returning the same output addresses. */
function mapBaseline(s: HitSetup): Prepared["baseline"] {
  const { keys, expected } = s;
  return {
    run(n: number): number {
      let sum = 0;
      for (let i = 0; i < n; i++) {
        const v = expected.get(keys[i & (PAGES - 1)]!);
        if (v === undefined) return NaN;
        sum += v;
      }
      return sum;
    },
  };
}

function hitsOnly(s: HitSetup): () => string | undefined {
  let misses = s.b.unit.iotlb.misses;
  return () => {
    const now = s.b.unit.iotlb.misses;
    const missed = now - misses;
    misses = now;
    return missed === 0 ? undefined : `${missed} IOTLB misses in a figure of hits`;
  };
}

/** IOTLB hits through the host unit's `translate` (attachment lookup, unit dispatch, result fill) vs Map.get. */
export const iotlbHitTranslate: FigureSpec = {
  name: "iotlb-hit-translate-vs-map",
  unit: "M translations/s",
  goal: "ratio >= 0.5",
  prepare(): Prepared {
    const s = hitSetup();
    const requests: DmaRequest[] = [];
    for (let i = 0; i < PAGES; i++) requests.push({ requesterId: BENCH_RID, pasid: NO_PASID, iova: s.iovas[i]!, access: Perm.Read, prgi: -1 });
    const unit = s.b.unit;
    const out = newWalkResult();
    return {
      model: {
        run(n: number): number {
          let sum = 0;
          for (let i = 0; i < n; i++) {
            unit.translate(requests[i & (PAGES - 1)]!, out);
            if (!out.ok) return NaN;
            sum += out.output;
          }
          return sum;
        },
        verify: hitsOnly(s),
      },
      baseline: mapBaseline(s),
      sameOutputs: true,
      note: `mock unit, ${PAGES} cached 4 KiB pages`,
      sabotage: () => void s.b.driver.unmap(s.b.domain, IOVA, 4096),
      dispose: () => s.b.dispose(),
    };
  },
};

/** IOTLB hits through `DmaDevice.translate` (what an ATS request returns) vs Map.get. */
export const iotlbHitDevice: FigureSpec = {
  name: "iotlb-hit-dma-device-vs-map",
  unit: "M translations/s",
  goal: "ratio >= 0.5",
  prepare(): Prepared {
    const s = hitSetup();
    const device = s.b.device;
    const iovas = s.iovas;
    const out = newWalkResult();
    return {
      model: {
        run(n: number): number {
          let sum = 0;
          for (let i = 0; i < n; i++) {
            device.translate(iovas[i & (PAGES - 1)]!, false, NO_PASID, out);
            if (!out.ok) return NaN;
            sum += out.output;
          }
          return sum;
        },
        verify: hitsOnly(s),
      },
      baseline: mapBaseline(s),
      sameOutputs: true,
      note: `mock unit, ${PAGES} cached 4 KiB pages`,
      sabotage: () => void s.b.driver.unmap(s.b.domain, IOVA + 5 * STRIDE, 4096),
      dispose: () => s.b.dispose(),
    };
  },
};

export { hitSetup, PAGES as HIT_PAGES };
