import { driverFlushWorkload, dmaFillAndInvalidateFigure, dmaFillWorkload, newWalkResult, NO_PASID, ok, Perm, Testbed, unwrap, type DmaDevice, type DmaRequest, type FigureSpec, type GuestDomainId, type GuestIommuDriver, type Prepared, type VendorPlugin, type Workload } from "@viommu/core";
import type { Smmuv3Unit } from "../hw/smmuv3-unit.js";
import type { Smmuv3Device } from "../vmm/smmuv3-device.js";

const RID = 0x100;
const GUEST_RID = 0x10;
const IOVA = 0x10_0000;
const DATA_GPA = 0x2000_0000;
const OFFSET = 0x123;
/** Cached pages of the hit figures (a power of two: the batch index wraps with a mask). */
const PAGES = 4096;
/** Pages the invalidation figures cycle over. */
export const FLUSH_PAGES = 64;
/** Where the figures map guest RAM (IOVA) from (GPA). */
export const BENCH_IOVA = IOVA;
export const BENCH_GPA = DATA_GPA;

/** One VM, one passthrough device at vSID 0x10 behind a nested vSMMU, attached to a domain of the reference driver. */
export interface NestedBench {
  readonly bed: Testbed;
  readonly unit: Smmuv3Unit;
  readonly iommu: Smmuv3Device;
  readonly driver: GuestIommuDriver;
  readonly device: DmaDevice;
  readonly domain: GuestDomainId;
}

/** Builds it with core's Testbed (any failure here is a bug of the setup, so it throws); an extension passes its `parents`. */
export function nestedBench(plugin: VendorPlugin, options: { audit?: boolean; parents?: readonly VendorPlugin[] } = {}): NestedBench {
  const bed = unwrap(Testbed.create({ plugin, ...(options.parents ? { plugins: options.parents } : {}), audit: options.audit === true, vms: [{ devices: [{ rid: RID, guestRid: GUEST_RID }] }] }));
  const v = bed.vms[0]!;
  const driver = v.drivers[0]!;
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(GUEST_RID, domain));
  return { bed, unit: bed.units[0] as Smmuv3Unit, iommu: v.iommus[0] as Smmuv3Device, driver, device: v.devices[0]!.device, domain };
}

/** PAGES pages mapped and translated once each (IOTLB warm); each output checked against guest memory's backing. */
function warmHits(b: NestedBench): { iovas: Float64Array; keys: Float64Array; expected: Map<number, number> } {
  unwrap(b.driver.map(b.domain, IOVA, DATA_GPA, PAGES * 4096, Perm.ReadWrite));
  const iovas = new Float64Array(PAGES);
  const keys = new Float64Array(PAGES);
  const expected = new Map<number, number>();
  const out = newWalkResult();
  const memory = b.bed.vms[0]!.vm.memory;
  for (let i = 0; i < PAGES; i++) {
    iovas[i] = IOVA + i * 4096 + OFFSET;
    keys[i] = Math.floor(iovas[i]! / 4096);
    b.device.translate(iovas[i]!, false, NO_PASID, out);
    const backing = memory.backingOf(DATA_GPA + i * 4096);
    if (!out.ok || backing === undefined || out.output !== backing + OFFSET) throw new Error(`bench setup: page ${i} translates to ${out.output}, guest memory backs it at ${backing}`);
    expected.set(keys[i]!, out.output);
  }
  return { iovas, keys, expected };
}

/** The baseline of the hit figures: Map.get of the same page numbers, giving the same outputs. */
function mapGet(keys: Float64Array, expected: Map<number, number>): Prepared["baseline"] {
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

/** The batch saw no IOTLB miss (a figure of hits), and, with the audit on, no finding. */
function hitsOnly(b: NestedBench): () => string | undefined {
  let misses = b.unit.iotlb.misses;
  return () => {
    const missed = b.unit.iotlb.misses - misses;
    misses = b.unit.iotlb.misses;
    return missed === 0 ? undefined : `${missed} IOTLB misses in a figure of hits`;
  };
}

function unitTranslateRun(b: NestedBench, iovas: Float64Array): (n: number) => number {
  const requests: DmaRequest[] = [];
  for (let i = 0; i < PAGES; i++) requests.push({ requesterId: RID, pasid: NO_PASID, iova: iovas[i]!, access: Perm.Read, prgi: -1 });
  const unit = b.unit;
  const out = newWalkResult();
  return (n) => {
    let sum = 0;
    for (let i = 0; i < n; i++) {
      unit.translate(requests[i & (PAGES - 1)]!, out);
      if (!out.ok) return NaN;
      sum += out.output;
    }
    return sum;
  };
}

/** IOTLB hits of a nested stream through the SMMU's `translate` (stream lookup, CD cache, IOTLB, result fill) vs Map.get. */
export function iotlbHitTranslate(plugin: () => VendorPlugin): FigureSpec {
  return {
    name: "smmuv3-iotlb-hit-translate-vs-map",
    unit: "M translations/s",
    goal: "ratio >= 0.5",
    prepare(): Prepared {
      const b = nestedBench(plugin());
      const { iovas, keys, expected } = warmHits(b);
      return {
        model: { run: unitTranslateRun(b, iovas), verify: hitsOnly(b) },
        baseline: mapGet(keys, expected),
        sameOutputs: true,
        note: `nested stage 1 over stage 2, ${PAGES} cached 4 KiB pages, the physical SMMU's translate`,
        sabotage: () => void b.driver.unmap(b.domain, IOVA, 4096),
        dispose: () => b.bed.dispose(),
      };
    },
  };
}

/** The same hits through `DmaDevice.translate` (what an ATS translation request returns) vs Map.get. */
export function iotlbHitDevice(plugin: () => VendorPlugin): FigureSpec {
  return {
    name: "smmuv3-iotlb-hit-dma-device-vs-map",
    unit: "M translations/s",
    goal: "ratio >= 0.5",
    prepare(): Prepared {
      const b = nestedBench(plugin());
      const { iovas, keys, expected } = warmHits(b);
      const device = b.device;
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
          verify: hitsOnly(b),
        },
        baseline: mapGet(keys, expected),
        sameOutputs: true,
        note: `nested, ${PAGES} cached 4 KiB pages, through the DmaDevice`,
        sabotage: () => void b.driver.unmap(b.domain, IOVA, 4096),
        dispose: () => b.bed.dispose(),
      };
    },
  };
}

/**
 * The stale-translation audit's cost: the same IOTLB hits through `translate` with the audit on (each hit re-reads
 * the CD and re-walks the guest's tables) against the audit off. Verified: hits only, and no finding.
 */
export function auditCost(plugin: () => VendorPlugin): FigureSpec {
  return {
    name: "smmuv3-audit-on-vs-off",
    unit: "M translations/s",
    prepare(): Prepared {
      const on = nestedBench(plugin(), { audit: true });
      const off = nestedBench(plugin());
      const findings: unknown[] = [];
      on.bed.platform.host.events.on("staleTranslation", (f) => findings.push(f));
      const warmOn = warmHits(on);
      const warmOff = warmHits(off);
      const hitsOn = hitsOnly(on);
      return {
        model: { run: unitTranslateRun(on, warmOn.iovas), verify: () => hitsOn() ?? (findings.length === 0 ? undefined : `${findings.length} stale-translation findings on a correct driver`) },
        baseline: { run: unitTranslateRun(off, warmOff.iovas), verify: hitsOnly(off) },
        note: "audit on (CD re-read and nested re-walk per hit) vs off, same hits; a correct driver, so no finding",
        sabotage: () => void on.driver.unmap(on.domain, IOVA, 4096),
        dispose: () => {
          on.bed.dispose();
          off.bed.dispose();
        },
      };
    },
  };
}

/**
 * What the DMA-fill figures run (an extension's too): the page cached by a DMA translation (a walk that fills the
 * IOTLB), then the reference driver's CMD_TLBI_NH_VA and CMD_SYNC, written to its queue, the doorbell trapped, the
 * TLBI forwarded to the host; every cycled page checked to miss after its invalidation.
 */
export function dmaFillInvalidations(b: NestedBench): Workload {
  return dmaFillWorkload(b, { iova: IOVA, pages: FLUSH_PAGES, removal: "invalidation" });
}

/** The plain code both invalidation figures compare with: fill a Map entry, write TLBI_NH_VA + CMD_SYNC to a ring, read the TLBI back, delete its entry. */
function plainInvalidations(): NonNullable<Prepared["baseline"]> {
  const ring = new Uint32Array(256 * 4);
  const cache = new Map<number, number>();
  let slot = 0;
  let plainAt = 0;
  return {
    run(n: number): number {
      let sum = 0;
      for (let i = 0; i < n; i++) {
        const iova = IOVA + (plainAt++ % FLUSH_PAGES) * 4096;
        cache.set(iova / 4096, iova);
        const at = (slot & 255) * 4;
        ring[at] = 0x12;
        ring[at + 1] = 1 << 16;
        ring[at + 2] = (iova & 0xfffff000) | 1;
        ring[at + 3] = 0;
        const sync = ((slot + 1) & 255) * 4;
        ring[sync] = 0x46;
        ring[sync + 1] = ring[sync + 2] = ring[sync + 3] = 0;
        slot += 2;
        if (!cache.delete(ring[at + 2]! >>> 12)) return NaN;
        sum += iova;
      }
      return sum;
    },
    verify: () => (cache.size === 0 ? undefined : `${cache.size} entries left in the plain cache`),
  };
}

/**
 * Invalidations per second through the reference driver and the trapped command queue (issue 13's figure): each a
 * cached page's TLBI_NH_VA + CMD_SYNC (two descriptors) written by the driver, the doorbell trapped, the queue
 * consumed, the TLBI forwarded by IOMMU_HWPT_INVALIDATE and executed by the physical SMMU. The page is cached by an
 * insert into the SMMU's IOTLB under the tag a DMA gives it (no walk per operation: `smmuv3-dma-fill-and-invalidate`
 * has the walk); each operation checks exactly one entry went, each batch that the pages are gone and a resident
 * page of the same ASID stayed. Baseline: the same job in plain code.
 */
export function invalidationsThroughDriver(plugin: () => VendorPlugin): FigureSpec {
  return {
    name: "smmuv3-invalidations-through-driver",
    unit: "M invalidations/s",
    goal: ">= 0.5M invalidations/s (1M descriptors/s)",
    prepare(): Prepared {
      const b = nestedBench(plugin());
      return {
        model: driverFlushWorkload(b, IOVA, DATA_GPA, FLUSH_PAGES),
        baseline: plainInvalidations(),
        sameOutputs: true,
        note: "per invalidation: the page cached in the SMMU's IOTLB (its DMA tag, no walk), then TLBI_NH_VA + CMD_SYNC through the trapped CMDQ to the host; every removal checked",
        sabotage: () => {
          // A driver that stops invalidating: the cached pages stay.
          b.driver.flush = () => ok();
        },
        dispose: () => b.bed.dispose(),
      };
    },
  };
}

/**
 * The same invalidations with the page cached by a DMA first (a nested walk per operation): what a guest that
 * unmaps right after each transfer costs end to end. The walk dominates; `smmuv3-invalidations-through-driver` is the
 * invalidation alone.
 */
export function dmaFillAndInvalidate(plugin: () => VendorPlugin): FigureSpec {
  return dmaFillAndInvalidateFigure({
    name: "smmuv3-dma-fill-and-invalidate",
    note: "per invalidation: a DMA fills the IOTLB (nested walk), then TLBI_NH_VA + CMD_SYNC through the trapped CMDQ to the host; every removal checked",
    iova: IOVA,
    gpa: DATA_GPA,
    pages: FLUSH_PAGES,
    removal: "invalidation",
    system: () => nestedBench(plugin()),
    baseline: plainInvalidations,
  });
}
