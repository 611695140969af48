import type { GuestDomainId, GuestIommuDriver } from "../contract/guest-driver.js";
import { NO_PASID } from "../contract/iommu-unit.js";
import { ok, unwrap } from "../errors/errno.js";
import type { DmaDevice } from "../platform/dma-device.js";
import { Perm, type PermBits } from "../translate/access.js";
import { newIotlbHit, type Iotlb } from "../translate/iotlb.js";
import { newWalkResult } from "../translate/walk-result.js";
import type { FigureSpec, Prepared, Workload } from "./interleaved.js";

/** One IOTLB entry as a unit caches it: its tag and what it holds. */
export interface CachedEntry {
  readonly vmid: number;
  readonly asid: number;
  readonly pageShift: number;
  readonly pageBase: number;
  readonly perms: PermBits;
  readonly payload: number;
}

/**
 * The entry `fill` (one DMA translation that misses) makes the unit cache, captured by watching the IOTLB's insert
 * for the duration of the call; undefined when it cached nothing. Lets an invalidation figure re-cache a page as the
 * unit itself would, without a walk per operation.
 */
export function captureIotlbInsert(iotlb: Iotlb, fill: () => void): CachedEntry | undefined {
  let seen: CachedEntry | undefined;
  const own = iotlb.insert;
  const watch: Iotlb["insert"] = function (this: Iotlb, vmid, asid, address, pageShift, pageBase, perms, payload = 0) {
    seen = { vmid, asid, pageShift, pageBase, perms, payload };
    own.call(this, vmid, asid, address, pageShift, pageBase, perms, payload);
  };
  Object.defineProperty(iotlb, "insert", { value: watch, configurable: true, writable: true });
  try {
    fill();
  } finally {
    delete (iotlb as { insert?: unknown }).insert;
  }
  return seen;
}

export interface FlushWorkloadOptions {
  readonly iotlb: Iotlb;
  /** The entry of the first page, as the unit caches it (`captureIotlbInsert`); page p's output is pageBase + p pages. */
  readonly entry: CachedEntry;
  /** Input address of the first page. */
  readonly iova: number;
  /** Pages cycled over (each cached, then invalidated). */
  readonly pages: number;
  /** The guest's invalidation of one page through its driver; false when it failed. */
  readonly flush: (iova: number) => boolean;
  /** A page of the same tag outside the cycled ones, cached before: every batch checks it stayed. */
  readonly residentIova: number;
}

/**
 * Invalidations through a driver, one page each: the page is cached in the unit's IOTLB as the unit caches it (an
 * insert into its tag, no walk), then the driver invalidates it. Every operation checks the cache lost exactly one
 * entry; every batch checks the cycled pages are gone and the resident page of the same tag stayed. The insert is
 * the only work besides the invalidation (a plain baseline does the same `Map.set`).
 */
export function flushWorkload(o: FlushWorkloadOptions): Workload {
  const size = 2 ** o.entry.pageShift;
  let at = 0;
  const hit = newIotlbHit();
  const cached = (iova: number): boolean => o.iotlb.lookup(o.entry.vmid, o.entry.asid, iova, hit);
  return {
    run(n: number): number {
      const { iotlb, entry } = o;
      let sum = 0;
      for (let i = 0; i < n; i++) {
        const p = at++ % o.pages;
        const iova = o.iova + p * size;
        iotlb.insert(entry.vmid, entry.asid, iova, entry.pageShift, entry.pageBase + p * size, entry.perms, entry.payload);
        const before = iotlb.size;
        if (!o.flush(iova) || iotlb.size !== before - 1) return NaN;
        sum += iova;
      }
      return sum;
    },
    verify(): string | undefined {
      for (let p = 0; p < o.pages; p++) if (cached(o.iova + p * size)) return `page 0x${(o.iova + p * size).toString(16)} still cached after its invalidation`;
      if (!cached(o.residentIova)) return `the resident page 0x${o.residentIova.toString(16)} was invalidated with the others`;
      return undefined;
    },
  };
}

/**
 * The plain code an invalidation figure compares with: per operation, a Map entry filled, the descriptors'
 * `words` 32-bit words written to a ring (the page's address among them), the address read back and its entry
 * deleted. Returns the same checksum as `flushWorkload` over the same pages.
 */
export function plainFlushBaseline(iova: number, pages: number, words: number): Workload {
  const ring = new Uint32Array(256 * words);
  const cache = new Map<number, number>();
  let slot = 0;
  let at = 0;
  return {
    run(n: number): number {
      let sum = 0;
      for (let i = 0; i < n; i++) {
        const address = iova + (at++ % pages) * 4096;
        cache.set(address / 4096, address);
        const base = (slot++ & 255) * words;
        ring[base] = 0x6 | (words << 8);
        for (let w = 1; w < words; w++) ring[base + w] = 0;
        ring[base + 2] = (address & 0xfffff000) >>> 0;
        ring[base + 3] = (address / 4_294_967_296) >>> 0;
        if (!cache.delete(ring[base + 2]! / 4096 + ring[base + 3]! * 1_048_576)) return NaN;
        sum += address;
      }
      return sum;
    },
    verify: () => (cache.size === 0 ? undefined : `${cache.size} entries left in the plain cache`),
  };
}

/** A system a DMA-fill figure runs on: a device behind the unit, the guest's reference driver, one attached domain. */
/**
 * The setup every vendor's through-the-driver invalidation figure shares: the first page cached by one DMA (its
 * entry captured as the unit caches it), a resident page of the same tag beyond the cycled ones, one flush through
 * the driver that must succeed; then `flushWorkload` over `pages` pages from `iova`. The driver's `flush` is looked
 * up per call, so a sabotage that replaces it takes effect. Throws when the setup does not hold.
 */
export function driverFlushWorkload(s: { readonly unit: { readonly iotlb: Iotlb }; readonly device: DmaDevice; readonly driver: GuestIommuDriver; readonly domain: GuestDomainId }, iova: number, gpa: number, pages: number): Workload {
  unwrap(s.driver.map(s.domain, iova, gpa, (pages + 2) * 4096, Perm.ReadWrite));
  const out = newWalkResult();
  // One page clear of the cycled ones (a lone page's invalidation may be widened to two, as Linux does on SMMUv3-like units).
  const resident = iova + (pages + 1) * 4096;
  const entry = captureIotlbInsert(s.unit.iotlb, () => s.device.translate(iova, false, NO_PASID, out));
  s.device.translate(resident, false, NO_PASID, out);
  if (entry === undefined || !out.ok || !s.driver.flush(s.domain, iova, 4096).ok) throw new Error("bench setup: the first page did not cache, or its flush failed");
  return flushWorkload({ iotlb: s.unit.iotlb, entry, iova, pages, residentIova: resident, flush: (at) => s.driver.flush(s.domain, at, 4096).ok });
}

export interface DmaFillSystem {
  readonly bed: { dispose(): void };
  readonly unit: { readonly iotlb: { readonly misses: number } };
  readonly device: DmaDevice;
  readonly driver: GuestIommuDriver;
  readonly domain: GuestDomainId;
}

export interface DmaFillWorkloadOptions {
  /** Input address of the first page (mapped, with the `pages` after it). */
  readonly iova: number;
  /** 4 KiB pages cycled over. */
  readonly pages: number;
  /** What the check's message calls one removal ("flush", "invalidation"). */
  readonly removal: string;
}

/**
 * Invalidations with the page cached by a DMA first (a walk per operation): the device translates the page, then
 * the driver invalidates it; NaN when either failed. The check translates each cycled page again and wants a miss
 * (each was cached before its flush), then flushes it once more. The driver's `flush` is looked up per call, so a
 * sabotage that replaces it takes effect.
 */
export function dmaFillWorkload(s: DmaFillSystem, o: DmaFillWorkloadOptions): Workload {
  const out = newWalkResult();
  let at = 0;
  return {
    run(n: number): number {
      const { iova, pages } = o;
      let sum = 0;
      for (let i = 0; i < n; i++) {
        const page = iova + (at++ % pages) * 4096;
        s.device.translate(page, false, NO_PASID, out);
        if (!out.ok || !s.driver.flush(s.domain, page, 4096).ok) return NaN;
        sum += page;
      }
      return sum;
    },
    verify(): string | undefined {
      for (let p = 0; p < o.pages; p++) {
        const page = o.iova + p * 4096;
        const misses = s.unit.iotlb.misses;
        s.device.translate(page, false, NO_PASID, out);
        if (s.unit.iotlb.misses === misses) return `page 0x${page.toString(16)} still cached after its ${o.removal}`;
        if (!s.driver.flush(s.domain, page, 4096).ok) return `the check's own flush of 0x${page.toString(16)} failed`;
      }
      return undefined;
    },
  };
}

export interface DmaFillFigureOptions extends DmaFillWorkloadOptions {
  /** Stable name (`<vendor>-dma-fill-and-invalidate`). */
  readonly name: string;
  readonly note: string;
  /** Where the pages map to. */
  readonly gpa: number;
  /** Builds the system, its domain attached; it lives until the figure's dispose. */
  readonly system: () => DmaFillSystem;
  /** The same job in plain code (returns the same checksum over the same pages). */
  readonly baseline: () => Workload;
}

/**
 * A vendor's `…-dma-fill-and-invalidate` figure: `pages` pages mapped read-write, then `dmaFillWorkload` against
 * the vendor's plain baseline. Sabotage: a driver whose flush does nothing (the pages stay cached).
 */
export function dmaFillAndInvalidateFigure(o: DmaFillFigureOptions): FigureSpec {
  return {
    name: o.name,
    unit: "M invalidations/s",
    prepare(): Prepared {
      const s = o.system();
      unwrap(s.driver.map(s.domain, o.iova, o.gpa, o.pages * 4096, Perm.ReadWrite));
      return {
        model: dmaFillWorkload(s, o),
        baseline: o.baseline(),
        sameOutputs: true,
        note: o.note,
        sabotage: () => {
          s.driver.flush = () => ok();
        },
        dispose: () => s.bed.dispose(),
      };
    },
  };
}
