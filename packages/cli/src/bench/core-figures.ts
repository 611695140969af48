import {
  GuestMemory,
  GuestPageAllocator,
  GuestTableStore,
  HOST_OWNER,
  HostMemory,
  HostPageTable,
  Iotlb,
  NestedWalker,
  newIotlbHit,
  newWalkResult,
  PageTableBuilder,
  Perm,
} from "@viommu/core";
import { opsPerSecond, round, type Figure } from "./measure.js";
import { benchFormat, benchGeometry } from "./radix-format.js";

/** IOTLB hits against a bare Map.get over the same page numbers. */
export function iotlbHitVsMap(): Figure {
  const entries = 4096;
  const tlb = new Iotlb(entries);
  const map = new Map<number, number>();
  const keys = new Float64Array(entries);
  for (let i = 0; i < entries; i++) {
    const iova = 0x10_0000_0000 + i * 0x3000;
    keys[i] = iova + 0x123;
    tlb.insert(1, 7, iova, 12, 0x8000_0000 + i * 4096, Perm.ReadWrite);
    map.set(Math.floor(iova / 4096), 0x8000_0000 + i * 4096);
  }
  const hit = newIotlbHit();
  let sink = 0;
  const tlbRate = opsPerSecond((n) => {
    for (let i = 0; i < n; i++) if (tlb.lookup(1, 7, keys[i & (entries - 1)]!, hit)) sink += hit.pageBase;
  });
  const mapRate = opsPerSecond((n) => {
    for (let i = 0; i < n; i++) sink += map.get(Math.floor(keys[i & (entries - 1)]! / 4096)) ?? 0;
  });
  if (sink === -1) throw new Error("unreachable");
  return { name: "iotlb-hit-vs-map", value: round(tlbRate / 1e6), unit: "M lookups/s", baseline: round(mapRate / 1e6), ratio: round(tlbRate / mapRate) };
}

/** A nested 4-level-by-4-level miss walk against a hand-written DataView walk of the same tables. */
export function nestedMissVsDataView(): Figure {
  const host = new HostMemory();
  const guest = new GuestMemory(host, 1, { sizeBytes: 2 ** 30, backingPageShift: 12 });
  const s2 = HostPageTable.create(host, HOST_OWNER, benchFormat, benchGeometry, { largePages: false })!;
  const pages = new GuestPageAllocator(guest, 2 ** 29, 2 ** 30);
  const s1 = PageTableBuilder.create(benchFormat, benchGeometry, new GuestTableStore(guest, pages))!;
  const count = 1024;
  const iovas = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const iova = 0x7f_0000_0000 + i * 0x20_1000;
    iovas[i] = iova + 8;
    s1.map(iova, 0x100_0000 + i * 4096, 4096, Perm.ReadWrite);
  }
  // Stage 2: every guest page the walk may touch, 4 KiB leaves so each stage-2 walk is 4 fetches.
  for (let gpa = 0; gpa < 2 ** 30; gpa += 4096) {
    const touched = guest.backingOf(gpa);
    if (touched !== undefined) s2.builder.map(gpa, touched, 4096, Perm.ReadWrite);
  }
  const walker = new NestedWalker(host, HOST_OWNER);
  const out = newWalkResult();
  const stage1 = { format: benchFormat, geometry: benchGeometry, root: s1.root };
  const stage2 = { format: benchFormat, geometry: benchGeometry, root: s2.root };
  let sink = 0;
  const ours = opsPerSecond((n) => {
    for (let i = 0; i < n; i++) {
      walker.translate(stage1, stage2, 1, iovas[i & (count - 1)]!, Perm.Read, out);
      sink += out.output;
    }
  });
  // The baseline: the same table pages copied into DataViews keyed by page number, walked by hand.
  const views = new Map<number, DataView>();
  for (const page of host.writtenPagesIn(0, 2 ** 46)) views.set(page / 4096, new DataView(host.readBytes(page, 4096).buffer));
  const read = (address: number): number => {
    const view = views.get(Math.floor(address / 4096));
    if (view === undefined) return 0;
    const at = address & 4095;
    return view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
  };
  const walk = (root: number, input: number, translateTable: (a: number) => number): number => {
    let table = root;
    for (let level = 4; level >= 1; level--) {
      const index = Math.floor(input / 2 ** (12 + 9 * (level - 1))) % 512;
      const entry = read(translateTable(table + index * 8));
      if (entry % 2 === 0) return -1;
      table = entry - (entry % 4096);
      if (level === 1) return table + (input % 4096);
    }
    return -1;
  };
  const s2walk = (gpa: number): number => walk(s2.root, gpa, (a) => a);
  const handRate = opsPerSecond((n) => {
    for (let i = 0; i < n; i++) {
      const g = walk(s1.root, iovas[i & (count - 1)]!, s2walk);
      sink += s2walk(g);
    }
  });
  if (sink === -1) throw new Error("unreachable");
  return { name: "nested-miss-vs-dataview", value: round(ours / 1e6), unit: "M walks/s", baseline: round(handRate / 1e6), ratio: round(ours / handRate), note: "24 table fetches a walk" };
}

/** Invalidating one address space of 100 entries out of an IOTLB holding 1k vs 1M entries. */
export function invalidate1mVs1k(): Figure {
  const timeFor = (total: number): number => {
    const tlb = new Iotlb(total + 128);
    for (let i = 0; i < total - 100; i++) tlb.insert(1 + (i % 50), 1 + (i % 7), i * 4096, 12, i * 4096, Perm.Read);
    const rate = opsPerSecond((n) => {
      for (let r = 0; r < n; r++) {
        for (let i = 0; i < 100; i++) tlb.insert(99, 99, i * 4096, 12, i * 4096, Perm.Read);
        tlb.invalidateAsid(99, 99);
      }
    }, 200);
    return 1e6 / rate;
  };
  const small = timeFor(1_000);
  const big = timeFor(1_000_000);
  return { name: "invalidate-1m-vs-1k", value: round(big, 2), unit: "µs per fill+invalidate of 100 entries", baseline: round(small, 2), ratio: round(big / small) };
}

/** Heap and typed-array bytes per cached entry, with a million entries. */
export function iotlbBytesPerEntry(): Figure {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = process.memoryUsage();
  const n = 1_000_000;
  const tlb = new Iotlb(n);
  for (let i = 0; i < n; i++) tlb.insert(1 + (i % 16), i % 64, i * 4096, 12, i * 4096, Perm.Read);
  gc?.();
  const after = process.memoryUsage();
  const bytes = after.heapUsed - before.heapUsed + (after.arrayBuffers - before.arrayBuffers);
  return { name: "iotlb-bytes-per-entry", value: round(bytes / tlb.size, 1), unit: "bytes", note: gc ? "after gc" : "without --expose-gc: an upper bound" };
}

export const coreFigures: readonly { readonly name: string; run(): Figure }[] = [
  { name: "iotlb-hit-vs-map", run: iotlbHitVsMap },
  { name: "nested-miss-vs-dataview", run: nestedMissVsDataView },
  { name: "invalidate-1m-vs-1k", run: invalidate1mVs1k },
  { name: "iotlb-bytes-per-entry", run: iotlbBytesPerEntry },
];
