import { HOST_OWNER, NestedWalker, newWalkResult, NO_PASID, Perm, type DmaRequest, type PageTableFormat } from "@viommu/core";
import { mockGeometry, mockPteFormat } from "@viommu/example-mock";
import { FlatTables } from "../flat-walk.js";
import type { FigureSpec, Prepared } from "../harness.js";
import { BENCH_RID, mapScattered, mockBed, type MockBed } from "../mock-bed.js";

/** Twice the mock unit's IOTLB: walked in order, every access evicts and misses. */
const PAGES = 16384;
const IOVA = 0x40_0000_0000;
const STRIDE = 0x3000;
const GPA = 0x100_0000;
const FETCHES = 24;

interface NestedSetup {
  readonly b: MockBed;
  readonly iovas: Float64Array;
  readonly flat: FlatTables;
  readonly s1Root: number;
  readonly s2Root: number;
}

/** A nested domain over a stage 2 of 4 KiB leaves: every translation reads 4 × 4 + 4 + 4 = 24 entries. */
function nestedSetup(): NestedSetup {
  const b = mockBed({ memoryBytes: 2 ** 28, smallStage2: true });
  mapScattered(b, IOVA, STRIDE, GPA, PAGES);
  const iovas = new Float64Array(PAGES);
  for (let i = 0; i < PAGES; i++) iovas[i] = IOVA + i * STRIDE + 8;
  const nested = b.nested();
  const flat = new FlatTables(b.bed.platform.host.memory);
  const s1Root = nested.s1Root;
  const s2Root = nested.parent.table.root;
  for (let i = 0; i < PAGES; i++) {
    const expect = b.vm.vm.memory.backingOf(GPA + i * 4096)! + 8;
    const got = flat.nested(s1Root, s2Root, iovas[i]!);
    if (got !== expect || flat.fetches !== FETCHES) throw new Error(`bench setup: the plain walk of page ${i} gives ${got} in ${flat.fetches} fetches, guest memory backs it at ${expect}`);
  }
  return { b, iovas, flat, s1Root, s2Root };
}

function flatBaseline(s: NestedSetup): Prepared["baseline"] {
  const { flat, iovas, s1Root, s2Root } = s;
  let cursor = 0;
  return {
    run(n: number): number {
      let sum = 0;
      for (let i = 0; i < n; i++) {
        const out = flat.nested(s1Root, s2Root, iovas[cursor]!);
        cursor = cursor === PAGES - 1 ? 0 : cursor + 1;
        if (out < 0 || flat.fetches !== FETCHES) return NaN;
        sum += out;
      }
      return sum;
    },
  };
}

/** Nested 4×4 misses through the host unit's `translate` (IOTLB miss, walk, IOTLB fill) vs a plain walk of the same tables. */
export const nestedMissTranslate: FigureSpec = {
  name: "nested-4x4-miss-translate-vs-dataview",
  unit: "M walks/s",
  goal: "ratio >= 0.5",
  prepare(): Prepared {
    const s = nestedSetup();
    const unit = s.b.unit;
    const requests: DmaRequest[] = [];
    for (let i = 0; i < PAGES; i++) requests.push({ requesterId: BENCH_RID, pasid: NO_PASID, iova: s.iovas[i]!, access: Perm.Read, prgi: -1 });
    const out = newWalkResult();
    let hits = unit.iotlb.hits;
    // Pages in order, continuing across batches: twice the IOTLB's size, so each access evicts and misses.
    let cursor = 0;
    return {
      model: {
        run(n: number): number {
          let sum = 0;
          for (let i = 0; i < n; i++) {
            unit.translate(requests[cursor]!, out);
            cursor = cursor === PAGES - 1 ? 0 : cursor + 1;
            if (!out.ok || out.fetches !== FETCHES) return NaN;
            sum += out.output;
          }
          return sum;
        },
        verify() {
          const hit = unit.iotlb.hits - hits;
          hits = unit.iotlb.hits;
          return hit === 0 ? undefined : `${hit} IOTLB hits in a figure of misses`;
        },
      },
      baseline: flatBaseline(s),
      sameOutputs: true,
      note: `mock unit, ${PAGES} pages cycled through an 8192-entry IOTLB, ${FETCHES} fetches a walk`,
      sabotage: () => void s.b.driver.unmap(s.b.domain, IOVA + 7 * STRIDE, 4096),
      dispose: () => s.b.dispose(),
    };
  },
};

function walkerFigure(name: string, format: PageTableFormat, note: string): FigureSpec {
  return {
    name,
    unit: "M walks/s",
    prepare: () => walkerPrepared(format, note),
  };
}

/** The core NestedWalker alone on the same tables (no unit, no IOTLB). */
function walkerPrepared(format: PageTableFormat, note: string): Prepared {
    const s = nestedSetup();
    const walker = new NestedWalker(s.b.bed.platform.host.memory, HOST_OWNER);
    const stage1 = { format, geometry: mockGeometry, root: s.s1Root };
    const parent = s.b.nested().parent.table;
    const stage2 = { format, geometry: parent.geometry, root: s.s2Root };
    const owner = s.b.vm.vm.id;
    const out = newWalkResult();
    const iovas = s.iovas;
    let corrupt = false;
    let cursor = 0;
    return {
      model: {
        run(n: number): number {
          let sum = 0;
          for (let i = 0; i < n; i++) {
            walker.translate(stage1, stage2, owner, iovas[cursor]! + (corrupt ? 4096 * 1024 : 0), Perm.Read, out);
            cursor = cursor === PAGES - 1 ? 0 : cursor + 1;
            if (!out.ok || out.fetches !== FETCHES) return NaN;
            sum += out.output;
          }
          return sum;
        },
      },
      baseline: flatBaseline(s),
      sameOutputs: true,
      note: `${FETCHES} fetches a walk; ${note}`,
      sabotage: () => void (corrupt = true),
      dispose: () => s.b.dispose(),
    };
}

// The mock format declares its RadixLayout (mockRadixLayout), so the walker decodes in place; without it, every
// entry goes through decodeEntry (what a vendor format without a layout costs).
export const nestedWalkerInternal = walkerFigure("internal-nested-walker-vs-dataview", { ...mockPteFormat, layout: undefined }, "entries decoded by the mock format's decodeEntry");
export const nestedWalkerLayoutInternal = walkerFigure("internal-nested-walker-layout-vs-dataview", mockPteFormat, "entries decoded in place from the mock entry's RadixLayout");
