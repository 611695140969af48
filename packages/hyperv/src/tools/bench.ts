import { driverFlushWorkload, dmaFillAndInvalidateFigure, newWalkResult, NO_PASID, ok, Perm, Testbed, unwrap, type DmaDevice, type DmaRequest, type FigureSpec, type GuestDomainId, type GuestIommuDriver, type Prepared, type VendorPlugin } from "@viommu/core";
import type { HypervUnit } from "../hw/hyperv-unit.js";
import type { HypervDevice } from "../vmm/hyperv-device.js";

const RID = 0x100;
const GUEST_RID = 0x10;
const IOVA = 0x10_0000;
const DATA_GPA = 0x2000_0000;
const OFFSET = 0x123;
/** Cached pages of the hit figures (a power of two: the index wraps with a mask). */
const PAGES = 4096;
/** Pages the flush figure cycles over. */
const FLUSH_PAGES = 64;
/** Pages a stage-2 map figure maps and unmaps per call (4 MiB: 1024 reps, split by the driver as Linux splits them). */
const S2_PAGES = 1024;

/** One VM, one passthrough device behind the pvIOMMU, attached to a domain of the reference driver in `variant`. */
interface BenchSystem {
  readonly bed: Testbed;
  readonly unit: HypervUnit;
  readonly iommu: HypervDevice;
  readonly driver: GuestIommuDriver;
  readonly device: DmaDevice;
  readonly domain: GuestDomainId;
}

/** Built with core's Testbed (a failure here is a bug of the setup, so it throws). */
function benchSystem(plugin: VendorPlugin, options: { variant?: "stage1" | "device-domain"; audit?: boolean } = {}): BenchSystem {
  const bed = unwrap(Testbed.create({ plugin, audit: options.audit === true, vms: [{ devices: [{ rid: RID, guestRid: GUEST_RID }] }], guest: { variant: options.variant ?? "stage1" } }));
  const v = bed.vms[0]!;
  const driver = v.drivers[0]!;
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(GUEST_RID, domain));
  return { bed, unit: bed.units[0] as HypervUnit, iommu: v.iommus[0] as HypervDevice, driver, device: v.devices[0]!.device, domain };
}

/** PAGES pages of a stage-1 domain mapped and translated once each (IOTLB warm), each output checked against RAM's backing. */
function warmHits(b: BenchSystem): { requests: DmaRequest[]; keys: Float64Array; expected: Map<number, number> } {
  unwrap(b.driver.map(b.domain, IOVA, DATA_GPA, PAGES * 4096, Perm.ReadWrite));
  const requests: DmaRequest[] = [];
  const keys = new Float64Array(PAGES);
  const expected = new Map<number, number>();
  const out = newWalkResult();
  const memory = b.bed.vms[0]!.vm.memory;
  for (let i = 0; i < PAGES; i++) {
    const iova = IOVA + i * 4096 + OFFSET;
    requests.push({ requesterId: RID, pasid: NO_PASID, iova, access: Perm.Read, prgi: -1 });
    keys[i] = Math.floor(iova / 4096);
    b.device.translate(iova, false, NO_PASID, out);
    const backing = memory.backingOf(DATA_GPA + i * 4096);
    if (!out.ok || backing === undefined || out.output !== backing + OFFSET) throw new Error(`bench setup: page ${i} translates to ${out.output}, guest memory backs it at ${backing}`);
    expected.set(keys[i]!, out.output);
  }
  return { requests, keys, expected };
}

function translateRun(b: BenchSystem, requests: DmaRequest[]): (n: number) => number {
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

/** The batch was all IOTLB hits. */
function hitsOnly(b: BenchSystem): () => string | undefined {
  let misses = b.unit.iotlb.misses;
  return () => {
    const missed = b.unit.iotlb.misses - misses;
    misses = b.unit.iotlb.misses;
    return missed === 0 ? undefined : `${missed} IOTLB misses in a figure of hits`;
  };
}

/** IOTLB hits of a stage-1 device domain through the unit's `translate` vs Map.get of the same pages. */
export function iotlbHitTranslate(plugin: () => VendorPlugin): FigureSpec {
  return {
    name: "hyperv-iotlb-hit-translate-vs-map",
    unit: "M translations/s",
    goal: "ratio >= 0.5",
    prepare(): Prepared {
      const b = benchSystem(plugin());
      const { requests, keys, expected } = warmHits(b);
      return {
        model: { run: translateRun(b, requests), verify: hitsOnly(b) },
        baseline: {
          run(n: number): number {
            let sum = 0;
            for (let i = 0; i < n; i++) {
              const v = expected.get(keys[i & (PAGES - 1)]!);
              if (v === undefined) return NaN;
              sum += v;
            }
            return sum;
          },
        },
        sameOutputs: true,
        note: `x86-64 stage 1 nested over stage 2, ${PAGES} cached 4 KiB pages, the unit's translate`,
        sabotage: () => void b.driver.unmap(b.domain, IOVA, 4096),
        dispose: () => b.bed.dispose(),
      };
    },
  };
}

/** The audit's cost: the same IOTLB hits with the audit on (a nested re-walk per hit) against off; no finding allowed. */
export function auditCost(plugin: () => VendorPlugin): FigureSpec {
  return {
    name: "hyperv-audit-on-vs-off",
    unit: "M translations/s",
    prepare(): Prepared {
      const on = benchSystem(plugin(), { audit: true });
      const off = benchSystem(plugin());
      const findings: unknown[] = [];
      on.bed.platform.host.events.on("staleTranslation", (f) => findings.push(f));
      const warmOn = warmHits(on);
      const warmOff = warmHits(off);
      const hitsOn = hitsOnly(on);
      return {
        model: { run: translateRun(on, warmOn.requests), verify: () => hitsOn() ?? (findings.length === 0 ? undefined : `${findings.length} stale-translation findings on a correct driver`) },
        baseline: { run: translateRun(off, warmOff.requests), verify: hitsOnly(off) },
        note: "audit on (a nested re-walk of the guest's x86-64 table per hit) vs off, same hits, a correct driver",
        // The page stays cached without its flush: the audit's finding refuses the round.
        sabotage: () => {
          on.driver.flush = () => ok();
          void on.driver.unmap(on.domain, IOVA, 4096);
        },
        dispose: () => {
          on.bed.dispose();
          off.bed.dispose();
        },
      };
    },
  };
}

/** The plain code both flush figures compare with: fill a Map entry, write the hypercall's input (24-byte domain, flags, one IOVA) to a page, read the IOVA back and delete the entry. */
function plainFlushes(): NonNullable<Prepared["baseline"]> {
  const page = new Uint32Array(1024);
  const cache = new Map<number, number>();
  let plainAt = 0;
  return {
    run(n: number): number {
      let sum = 0;
      for (let i = 0; i < n; i++) {
        const iova = IOVA + (plainAt++ % FLUSH_PAGES) * 4096;
        cache.set(iova / 4096, iova);
        page[0] = page[1] = 0xffff_ffff;
        page[2] = page[3] = 0;
        page[4] = 1;
        page[5] = 0;
        page[6] = 1;
        page[7] = 0;
        page[8] = iova >>> 0;
        page[9] = 0;
        if (!cache.delete(page[8]! / 4096)) return NaN;
        sum += iova;
      }
      return sum;
    },
    verify: () => (cache.size === 0 ? undefined : `${cache.size} entries left in the plain cache`),
  };
}

/**
 * Invalidations per second through the reference driver (issue 13's figure): the driver's unmap-time flush
 * (HVCALL_FLUSH_DEVICE_DOMAIN_LIST, one hypercall with one IOVA rep), handled by the VMM and forwarded as
 * IOMMU_HWPT_INVALIDATE. The page is cached first by an insert into the unit's IOTLB under the tag a DMA gives it (no
 * walk per operation: `hyperv-dma-fill-and-invalidate` has the walk); each operation checks exactly one entry went,
 * each batch that the pages are gone and a resident page of the domain stayed. Baseline: the same job in plain code.
 */
export function invalidationsThroughDriver(plugin: () => VendorPlugin): FigureSpec {
  return {
    name: "hyperv-invalidations-through-driver",
    unit: "M invalidations/s",
    goal: ">= 1M invalidations/s (one hypercall rep each)",
    prepare(): Prepared {
      const b = benchSystem(plugin());
      return {
        model: driverFlushWorkload(b, IOVA, DATA_GPA, FLUSH_PAGES),
        baseline: plainFlushes(),
        sameOutputs: true,
        note: "per invalidation: the page cached in the unit's IOTLB (its DMA tag, no walk), then FLUSH_DEVICE_DOMAIN_LIST (one rep) by hypercall; every removal checked",
        sabotage: () => {
          b.driver.flush = () => ok();
        },
        dispose: () => b.bed.dispose(),
      };
    },
  };
}

/**
 * The same flushes with the page cached by a DMA first (a nested walk of the guest's x86-64 table over stage 2 per
 * operation): a guest that unmaps right after each transfer, end to end. What a Hyper-V guest does per flush is the
 * hypercall alone; the walk here is the next DMA's, so `hyperv-invalidations-through-driver` is the flush's cost.
 */
export function dmaFillAndInvalidate(plugin: () => VendorPlugin): FigureSpec {
  return dmaFillAndInvalidateFigure({
    name: "hyperv-dma-fill-and-invalidate",
    note: "per invalidation: a DMA fills the IOTLB (nested walk), then FLUSH_DEVICE_DOMAIN_LIST (one rep) by hypercall; every removal checked",
    iova: IOVA,
    gpa: DATA_GPA,
    pages: FLUSH_PAGES,
    removal: "flush",
    system: () => benchSystem(plugin()),
    baseline: plainFlushes,
  });
}

/**
 * MAP_DEVICE_GPA_PAGES reps per second: a stage-2 device domain mapped and unmapped 4 MiB at a time (1024 reps a
 * call pair, in calls of at most the input page's frames and the hypervisor's time slices); each batch ends with
 * nothing mapped, checked page by page. Baseline, plain code: the same frames set and deleted in a Map.
 */
export function stage2MapReps(plugin: () => VendorPlugin): FigureSpec {
  return {
    name: "hyperv-s2-map-reps",
    unit: "M reps/s",
    prepare(): Prepared {
      const b = benchSystem(plugin(), { variant: "device-domain" });
      const frames = new Map<number, number>();
      const out = newWalkResult();
      let maps = 0;
      let lastIova = IOVA;
      return {
        model: {
          run(n: number): number {
            let sum = 0;
            for (let done = 0; done < n; ) {
              const count = Math.min(S2_PAGES, n - done);
              const iova = IOVA + (maps++ % 4) * S2_PAGES * 4096;
              lastIova = iova;
              if (!b.driver.map(b.domain, iova, DATA_GPA, count * 4096, Perm.ReadWrite).ok) return NaN;
              if (!b.driver.unmap(b.domain, iova, count * 4096).ok) return NaN;
              done += count;
              sum += count;
            }
            return sum;
          },
          verify(): string | undefined {
            for (let p = 0; p < S2_PAGES; p += 97) {
              b.iommu.translateEmulated(GUEST_RID, NO_PASID, lastIova + p * 4096, false, out);
              if (out.ok) return `page 0x${(lastIova + p * 4096).toString(16)} still mapped after its unmap`;
            }
            return undefined;
          },
        },
        baseline: {
          run(n: number): number {
            let sum = 0;
            for (let done = 0; done < n; ) {
              const count = Math.min(S2_PAGES, n - done);
              const base = IOVA / 4096;
              for (let p = 0; p < count; p++) frames.set(base + p, DATA_GPA / 4096 + p);
              for (let p = 0; p < count; p++) if (!frames.delete(base + p)) return NaN;
              done += count;
              sum += count;
            }
            return sum;
          },
          verify: () => (frames.size === 0 ? undefined : `${frames.size} frames left`),
        },
        sameOutputs: true,
        note: "stage-2 device domain, 4 MiB map + unmap by MAP/UNMAP_DEVICE_GPA_PAGES; one rep is one 4 KiB page mapped and unmapped",
        sabotage: () => {
          b.driver.unmap = () => ok();
        },
        dispose: () => b.bed.dispose(),
      };
    },
  };
}

/** The Hyper-V figures for `viommu bench`, each verifying its own work every round. */
export function createHypervBenchFigures(plugin: () => VendorPlugin): readonly FigureSpec[] {
  return [iotlbHitTranslate(plugin), auditCost(plugin), invalidationsThroughDriver(plugin), dmaFillAndInvalidate(plugin), stage2MapReps(plugin)];
}
