import {
  captureIotlbInsert,
  DIRTY_BITMAP_NO_CLEAR,
  flushWorkload,
  DIRTY_TRACKING_ENABLE,
  dmaFillAndInvalidateFigure,
  forEachLeaf,
  HOST_OWNER,
  HostTableReader,
  IommufdObjectType,
  newWalkResult,
  NO_PASID,
  ok,
  opsPerSecond,
  Perm,
  plainFlushBaseline,
  Testbed,
  unwrap,
  type BenchFigure,
  type DmaFillSystem,
  type DmaRequest,
  type FigureSpec,
  type Prepared,
  type HwptPaging,
  type VendorPlugin,
  type VirtualMachine,
} from "@viommu/core";
import { encodeInvDesc, PasidIotlbGranularity } from "./format/inv-desc.js";
import type { VtdUnit } from "./hw/vtd-unit.js";
import type { VtdDevice } from "./vmm/vtd-device.js";

const GIB = 2 ** 30;
const IOVA = 0x1000_0000;
const DATA_GPA = 0x1000_0000;
/** Pages the benchmark maps: more than fits in one IOTLB pass of hits only when the cache is cleared. */
const PAGES = 4096;
const REQUESTER_ID = 0x100;
const GUEST_RID = 0x10;

interface NestedSystem {
  readonly bed: Testbed;
  readonly unit: VtdUnit;
  readonly device: VtdDevice;
  readonly vm: VirtualMachine;
}

/**
 * One VM with a scalable-mode guest (the plugin's driver for a nested device) whose device is nested, its
 * first-level table over the shared parent: what both VT-d figures run on, wired by core's Testbed.
 */
function nestedSystem(plugin: VendorPlugin): NestedSystem {
  const bed = unwrap(Testbed.create({ plugin, vms: [{ devices: [{ rid: REQUESTER_ID, guestRid: GUEST_RID }], memoryBytes: GIB }] }));
  const v = bed.vms[0]!;
  const driver = v.drivers[0]!;
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(GUEST_RID, domain));
  // 4 KiB pages (an unaligned GPA keeps the guest from using 2 MiB leaves): the walk is a full 4 + 4 × 4 fetches.
  unwrap(driver.map(domain, IOVA, DATA_GPA + 0x1000, PAGES * 4096, Perm.ReadWrite));
  return { bed, unit: bed.units[0] as VtdUnit, device: v.iommus[0] as VtdDevice, vm: v.vm };
}

/** Translations through the physical unit: hits in its IOTLB, and misses (a full nested walk each). */
function translations(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const s = nestedSystem(plugin);
  try {
    const out = newWalkResult();
    const request = { requesterId: REQUESTER_ID, pasid: NO_PASID, iova: IOVA, access: Perm.Read } as { -readonly [K in keyof DmaRequest]: DmaRequest[K] };
    let page = 0;
    const translateNext = (): void => {
      request.iova = IOVA + page * 4096;
      s.unit.translate(request, out);
      page = (page + 1) % PAGES;
    };
    const hit = Math.round(opsPerSecond((n) => {
      for (let i = 0; i < n; i++) translateNext();
    }));
    page = 0;
    // The IOTLB is emptied at the start of every pass over the pages, so each translation is a miss.
    const miss = Math.round(opsPerSecond((n) => {
      for (let i = 0; i < n; i++) {
        if (page === 0) s.unit.iotlb.invalidateAll();
        translateNext();
      }
    }));
    return { value: hit, baseline: miss, ratio: hit / Math.max(miss, 1), note: `IOTLB hits; baseline = misses (nested first-level over second-level walk, ${out.fetches} table fetches each)` };
  } finally {
    s.bed.dispose();
  }
}

/** Descriptors through the emulated unit's invalidation queue: PASID-based IOTLB invalidations forwarded to the host, plus waits. */
function descriptors(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const s = nestedSystem(plugin);
  try {
    const regs = s.device.registers;
    const iqa = Number(regs.read(0x90, 8));
    const base = iqa - (iqa % 4096);
    const bytes = 4096 * 2 ** (iqa & 7);
    const did = 2;
    const batch: Uint32Array[] = [];
    for (let i = 0; i < 127; i++) batch.push(encodeInvDesc("P_IOTLB_INV", { G: PasidIotlbGranularity.PAGE_IN_PASID, DID: did, PASID: 0, AM: 0, ADDR: BigInt(IOVA + i * 4096) }, 256));
    batch.push(encodeInvDesc("INV_WAIT", { SW: 1, FN: 1, STATUS_DATA: 1, STATUS_ADDR: BigInt(base + bytes - 4096) }, 256));
    let tail = Number(regs.read(0x88, 8));
    let next = 0;
    const before = s.device.queue.processed;
    // The tail doorbell rings after every batch of 128 (ending with the wait) and at the end of each timed run.
    const value = Math.round(opsPerSecond((n) => {
      for (let i = 0; i < n; i++) {
        s.vm.memory.writeWords(base + tail, batch[next]!);
        tail = (tail + 32) % bytes;
        next = (next + 1) % batch.length;
        if (next === 0 || i === n - 1) s.vm.mmioWrite(s.device.mmioBase + 0x88, 8, BigInt(tail));
      }
    }));
    const processed = s.device.queue.processed - before;
    return { value, note: `${processed} descriptors (P_IOTLB_INV forwarded as IOMMU_HWPT_INVALIDATE, and waits), guest writes included` };
  } finally {
    s.bed.dispose();
  }
}

/** Pages the invalidation figures cycle over, from FLUSH_IOVA (clear of the pages nestedSystem maps). */
const FLUSH_PAGES = 64;
const FLUSH_IOVA = 0x4000_0000;

/** The invalidation figures' system: the bench's nested system, its device attached to a fresh domain of the driver. */
function flushSystem(plugin: VendorPlugin): DmaFillSystem & { readonly unit: VtdUnit } {
  const s = nestedSystem(plugin);
  const v = s.bed.vms[0]!;
  const driver = v.drivers[0]!;
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(GUEST_RID, domain));
  return { bed: s.bed, unit: s.unit, device: v.devices[0]!.device, driver, domain };
}

/**
 * Invalidations per second through the reference driver and the trapped invalidation queue (issue 13's figure):
 * the scalable-mode driver's flush of one page (a P_IOTLB_INV and an INV_WAIT, 256-bit descriptors, the IQT
 * doorbell trapped, the queue consumed, the P_IOTLB_INV forwarded by IOMMU_HWPT_INVALIDATE and executed by the
 * physical unit). The page is cached first by an insert into the unit's IOTLB under the tag a DMA gives it (no walk
 * per operation: `vtd-dma-fill-and-invalidate` has the walk); each operation checks exactly one entry went, each
 * batch that the pages are gone and a resident page of the domain stayed. Baseline: the same job in plain code.
 */
function invalidationsThroughDriver(plugin: () => VendorPlugin): FigureSpec {
  return {
    name: "vtd-invalidations-through-driver",
    unit: "M invalidations/s",
    goal: ">= 0.5M invalidations/s (1M descriptors/s)",
    prepare(): Prepared {
      const s = flushSystem(plugin());
      const { driver, domain, device: dev } = s;
      const iova = FLUSH_IOVA;
      unwrap(driver.map(domain, iova, DATA_GPA, (FLUSH_PAGES + 2) * 4096, Perm.ReadWrite));
      const out = newWalkResult();
      const resident = iova + (FLUSH_PAGES + 1) * 4096;
      const entry = captureIotlbInsert(s.unit.iotlb, () => dev.translate(iova, false, NO_PASID, out));
      dev.translate(resident, false, NO_PASID, out);
      if (entry === undefined || !out.ok || !driver.flush(domain, iova, 4096).ok) throw new Error("bench setup: the first page did not cache, or its flush failed");
      return {
        model: flushWorkload({ iotlb: s.unit.iotlb, entry, iova, pages: FLUSH_PAGES, residentIova: resident, flush: (at) => driver.flush(domain, at, 4096).ok }),
        baseline: plainFlushBaseline(iova, FLUSH_PAGES, 16),
        sameOutputs: true,
        note: "per invalidation: the page cached in the unit's IOTLB (its DMA tag, no walk), then P_IOTLB_INV + INV_WAIT through the trapped queue to the host; every removal checked",
        sabotage: () => {
          driver.flush = () => ok();
        },
        dispose: () => s.bed.dispose(),
      };
    },
  };
}

/** The same flushes with the page cached by a DMA first (a nested walk per operation): unmap after every transfer, end to end. */
function dmaFillAndInvalidate(plugin: () => VendorPlugin): FigureSpec {
  return dmaFillAndInvalidateFigure({
    name: "vtd-dma-fill-and-invalidate",
    note: "per invalidation: a DMA fills the IOTLB (nested walk), then P_IOTLB_INV + INV_WAIT through the trapped queue to the host; every removal checked",
    iova: FLUSH_IOVA,
    gpa: DATA_GPA,
    pages: FLUSH_PAGES,
    removal: "flush",
    system: () => flushSystem(plugin()),
    baseline: () => plainFlushBaseline(FLUSH_IOVA, FLUSH_PAGES, 16),
  });
}

/** Milliseconds per call of `work`, averaged over at least `minMs` after one warm-up call (for work too slow for opsPerSecond). */
function msPerCall(work: () => void, minMs = 300): number {
  work();
  let calls = 0;
  const t0 = performance.now();
  let elapsed = 0;
  do {
    work();
    calls++;
    elapsed = performance.now() - t0;
  } while (elapsed < minMs);
  return elapsed / calls;
}

/** What the dirty-bitmap figure's guest maps for DMA (IOVA = GPA): RAM below the driver's structures at the top. */
const DIRTY_WINDOW = GIB - 64 * 2 ** 20;
/** Pages it dirties by DMA: one every 64 pages of the window. */
const DIRTY_PAGES = DIRTY_WINDOW / 4096 / 64;

/**
 * IOMMU_HWPT_GET_DIRTY_BITMAP over 1 GiB of guest RAM backed by 4 KiB host pages (262144 second-level leaves),
 * with DIRTY_PAGES of them written by DMA: each read (NO_CLEAR, so every read does the same work) must name
 * exactly those pages. Baseline: visiting the same leaves with a plain walk of the table, no dirty bits read.
 */
function dirtyBitmapRead(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const bed = unwrap(Testbed.create({ plugin, vms: [{ devices: [{ rid: REQUESTER_ID, guestRid: GUEST_RID }], memoryBytes: GIB, backingPageShift: 12 }], dirtyTracking: true }));
  try {
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(GUEST_RID, domain));
    unwrap(driver.map(domain, 0, 0, DIRTY_WINDOW, Perm.ReadWrite));
    unwrap(v.iommufd.hwptSetDirtyTracking(v.parentHwptId, DIRTY_TRACKING_ENABLE));
    const dev = v.devices[0]!.device;
    const written = Array.from({ length: DIRTY_PAGES }, (_, i) => i * 64 * 4096);
    for (const page of written) if (!dev.write(page + 8, Uint8Array.of(1)).ok) throw new Error(`bench DMA write to 0x${page.toString(16)} faulted`);
    let bitmap = new Uint8Array(0);
    const read = (): void => {
      unwrap(v.iommufd.hwptGetDirtyBitmap({ hwptId: v.parentHwptId, flags: DIRTY_BITMAP_NO_CLEAR, iova: 0, length: GIB, pageSize: 4096, bitmap: (n) => (bitmap = new Uint8Array(n)) }));
    };
    const ms = msPerCall(read);
    const dirty: number[] = [];
    bitmap.forEach((byte, i) => {
      for (let b = 0; b < 8; b++) if (byte & (1 << b)) dirty.push((i * 8 + b) * 4096);
    });
    if (dirty.length !== written.length || dirty.some((p, i) => p !== written[i])) throw new Error(`the bitmap named ${dirty.length} dirty pages, ${written.length} were written`);
    const parent = v.iommufd.list(IommufdObjectType.HWPT_PAGING).find((o) => o.id === v.parentHwptId) as HwptPaging;
    const table = parent.domain.table;
    const reader = new HostTableReader(bed.platform.host.memory, HOST_OWNER);
    let leaves = 0;
    const walk = (): void => {
      leaves = 0;
      forEachLeaf(table.format, table.geometry, table.root, reader, 0, GIB, () => void leaves++);
    };
    const baseline = msPerCall(walk);
    if (leaves !== GIB / 4096) throw new Error(`the plain walk visited ${leaves} leaves`);
    return { value: ms, baseline, ratio: ms / baseline, note: `ms per GiB read (NO_CLEAR), ${leaves} 4 KiB second-level leaves, ${written.length} dirty, the bitmap checked; baseline = a plain walk of the same leaves` };
  } finally {
    bed.dispose();
  }
}

/**
 * A recoverable page fault, round trip: a PRI device's DMA at an address its bound process has not mapped
 * raises a page request; the VMM's event loop relays it into the guest's page request queue; the guest reads
 * it, maps the page and answers success; the response reaches the device through the fault file and its retry
 * completes. Each round trip is checked. Baseline: the same DMA to a mapped page.
 */
function pageRequestRoundTrip(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const bed = unwrap(Testbed.create({ plugin, vms: [{ devices: [{ rid: REQUESTER_ID, guestRid: GUEST_RID, pasidBits: 20, pri: true }], memoryBytes: GIB }] }));
  try {
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(GUEST_RID, domain));
    const process = unwrap(driver.createProcess!());
    unwrap(driver.enablePageRequests!(GUEST_RID));
    unwrap(driver.bindProcess!(GUEST_RID, 1, process));
    const dev = v.devices[0]!.device;
    const base = 0x7f00_0000_0000;
    unwrap(process.map(base, DATA_GPA, 4096, Perm.ReadWrite));
    let next = 1;
    const data = Uint8Array.of(1, 2, 3, 4);
    const roundTrip = (): void => {
      const va = base + next * 4096;
      const gpa = DATA_GPA + (next % 4096) * 4096;
      next++;
      const first = dev.write(va, data, 1);
      if (first.ok || first.pageRequest === undefined) throw new Error("the DMA raised no page request");
      bed.poll();
      const request = driver.readEvents().find((e) => e.kind === "page-request");
      if (request === undefined || request.address !== va) throw new Error("the guest read no page request for the DMA");
      unwrap(process.map(va, gpa, 4096, Perm.ReadWrite));
      unwrap(driver.respondPageRequest!(request, true));
      if (dev.pageRequestStatus(first.pageRequest) !== "success") throw new Error("the device was not answered success");
      if (!dev.write(va, data, 1).ok) throw new Error("the retry after the response faulted");
    };
    // Each round trip maps a new page: bounded so the process's table stays a realistic size.
    const value = Math.round(1000 / msPerCall(() => { for (let i = 0; i < 100; i++) roundTrip(); }) * 100);
    const baseline = Math.round(opsPerSecond((n) => {
      for (let i = 0; i < n; i++) if (!dev.write(base, data, 1).ok) throw new Error("the baseline DMA faulted");
    }));
    return { value, baseline, ratio: value / Math.max(baseline, 1), note: `page request round trips/s (${next - 1} checked: fault, relay, guest map and response, retry); baseline = DMAs/s to a mapped page` };
  } finally {
    bed.dispose();
  }
}

/**
 * VMM interventions per 1000 MSIs of a passthrough device: posted (the host unit posts to the running vCPU)
 * against remapped (the VMM remaps and injects each). Every MSI is checked to arrive at its vector and vCPU.
 */
function msiInterventions(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const cost: Record<"remapped" | "posted", number> = { remapped: 0, posted: 0 };
  for (const mode of ["remapped", "posted"] as const) {
    const bed = unwrap(Testbed.create({ plugin, vms: [{ devices: [{ rid: REQUESTER_ID, guestRid: GUEST_RID }], vcpus: 8, memoryBytes: GIB }], deviceInterrupts: mode }));
    try {
      const v = bed.vms[0]!;
      const msi = unwrap(v.drivers[0]!.mapInterrupt!(GUEST_RID, 0x45, 3));
      v.vm.interrupts.take();
      const before = v.vm.interventions;
      for (let i = 0; i < 1000; i++) if (!v.devices[0]!.device.signalMsi(msi)) throw new Error("the device has no MSI route");
      cost[mode] = v.vm.interventions - before;
      const got = v.vm.interrupts.take().filter((i) => i.source.startsWith("msi"));
      if (got.length !== 1000 || got.some((i) => i.vector !== 0x45 || i.destination !== 3)) throw new Error(`${mode}: ${got.length} MSIs delivered as programmed of 1000`);
    } finally {
      bed.dispose();
    }
  }
  return { value: cost.posted, baseline: cost.remapped, note: "VMM interventions per 1000 passthrough MSIs, posted; baseline = remapped by the VMM (all 1000 delivered to vector 0x45, vCPU 3 in both)" };
}

/** VT-d figures for `viommu bench`, measured on systems built with `plugin` (measured, never asserted). */
export function createVtdBenchFigures(plugin: () => VendorPlugin): readonly (BenchFigure | FigureSpec)[] {
  return [
    { name: "vtd-translations-per-s", unit: "translations/s", run: () => translations(plugin()) },
    { name: "vtd-descriptors-per-s", unit: "descriptors/s", run: () => descriptors(plugin()) },
    invalidationsThroughDriver(plugin),
    dmaFillAndInvalidate(plugin),
    { name: "vtd-dirty-bitmap-read-per-gib", unit: "ms/GiB", run: () => dirtyBitmapRead(plugin()) },
    { name: "vtd-page-request-round-trips-per-s", unit: "round trips/s", run: () => pageRequestRoundTrip(plugin()) },
    { name: "vtd-msi-interventions-per-1000", unit: "interventions/1000 MSIs", run: () => msiInterventions(plugin()) },
  ];
}
