import { DIRTY_TRACKING_ENABLE, Perm, Testbed, unwrap, type BenchFigure, type FigureSpec, type VendorPlugin } from "@viommu/core";
import { auditCost, dmaFillAndInvalidate, invalidationsThroughDriver, iotlbHitDevice, iotlbHitTranslate } from "./bench-figures.js";

const DATA_GPA = 0x2000_0000;
const GUEST_RID = 0x10;

const GIB = 2 ** 30;
const PAGE = 4096;

/**
 * Milliseconds to read (and clear) the dirty bitmap of 1 GiB of guest RAM in 4 KiB stage-2 leaves
 * (IOMMU_HWPT_GET_DIRTY_BITMAP on the stage-2 parent: a walk of 262144 leaves testing and clearing S2AP[1]). Each
 * round the device first DMA-writes 64 pages through the guest's nested domain; the round's bitmap must name exactly
 * those pages (or the figure throws). Baseline: the same test-and-clear over 262144 64-bit entries held in a plain
 * typed array, the least the work can cost without a table.
 */
function dirtyBitmapRead(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const base = 0x4000_0000;
  const bed = unwrap(Testbed.create({ plugin, dirtyTracking: true, vms: [{ devices: [{ rid: 0x100, guestRid: GUEST_RID }], memoryBytes: 2 * GIB, backingPageShift: 12 }] }));
  try {
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(GUEST_RID, domain));
    unwrap(driver.map(domain, base, base, GIB, Perm.ReadWrite));
    unwrap(v.iommufd.hwptSetDirtyTracking(v.parentHwptId, DIRTY_TRACKING_ENABLE));
    const device = v.devices[0]!.device;
    const pages = GIB / PAGE;
    let bitmap = new Uint8Array(pages / 8);
    let elapsed = 0;
    let rounds = 0;
    let seed = 0x9e37_79b9;
    while (rounds < 3 || elapsed < 300) {
      const written = new Set<number>();
      for (let i = 0; i < 64; i++) {
        seed = (Math.imul(seed, 1_664_525) + 1_013_904_223) >>> 0;
        const page = seed % pages;
        if (!device.write(base + page * PAGE, Uint8Array.of(rounds & 0xff)).ok) throw new Error(`bench DMA write to page ${page} faulted`);
        written.add(page);
      }
      bitmap.fill(0);
      const t0 = performance.now();
      unwrap(v.iommufd.hwptGetDirtyBitmap({ hwptId: v.parentHwptId, flags: 0, iova: base, length: GIB, pageSize: PAGE, bitmap: (n) => (bitmap = n === bitmap.length ? bitmap : new Uint8Array(n)) }));
      elapsed += performance.now() - t0;
      rounds++;
      let named = 0;
      for (let p = 0; p < pages; p++) {
        if ((bitmap[p >> 3]! & (1 << (p & 7))) === 0) continue;
        if (!written.has(p)) throw new Error(`bench: the dirty bitmap names page ${p}, which no DMA wrote`);
        named++;
      }
      if (named !== written.size) throw new Error(`bench: the dirty bitmap names ${named} of the ${written.size} pages written`);
    }
    return { value: Math.round((elapsed / rounds) * 10) / 10, baseline: Math.round(plainDirtyScan(pages) * 100) / 100, note: `1 GiB in 4 KiB stage-2 leaves, ${rounds} reads of 64 written pages each, every bitmap checked; baseline: test-and-clear over a flat array of the same entries` };
  } finally {
    bed.dispose();
  }
}

/** Milliseconds for the plain loop over `entries` 64-bit leaves (as 32-bit halves): test S2AP[1] with DBM, clear it. */
function plainDirtyScan(entries: number): number {
  const halves = new Uint32Array(entries * 2);
  const bitmap = new Uint8Array(entries / 8);
  for (let i = 0; i < entries; i += 4099) halves[2 * i] = 0x80;
  for (let i = 0; i < entries; i++) halves[2 * i + 1] = 1 << 19;
  let elapsed = 0;
  let rounds = 0;
  while (rounds < 3 || elapsed < 100) {
    const t0 = performance.now();
    for (let i = 0; i < entries; i++) {
      const lo = halves[2 * i]!;
      if ((lo & 0x80) !== 0 && (halves[2 * i + 1]! & (1 << 19)) !== 0) {
        bitmap[i >> 3]! |= 1 << (i & 7);
        halves[2 * i] = lo & ~0x80;
      }
    }
    elapsed += performance.now() - t0;
    rounds++;
  }
  return elapsed / rounds;
}

/**
 * Microseconds for one page request's round trip, nested with PRI: a PASID DMA write to a page the process has
 * not mapped raises a page request; the VMM relays the fault queue's group into the guest's PRI queue; the guest
 * reads it, maps the page and answers CMD_PRI_RESP (trapped, written back to the fault file); the device retries.
 * Every trip is checked: exactly one request naming the page, the device answered success, the retried write's
 * bytes in the page. Baseline: the same write to a page already mapped.
 */
function pageRequestRoundTrip(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const bed = unwrap(Testbed.create({ plugin, vms: [{ devices: [{ rid: 0x100, guestRid: GUEST_RID, pasidBits: 20, pri: true }] }] }));
  try {
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const device = v.devices[0]!.device;
    const process = unwrap(driver.createProcess!());
    const va = 0x7f00_0000_0000;
    unwrap(process.map(va, DATA_GPA, PAGE, Perm.ReadWrite));
    unwrap(driver.enablePageRequests!(GUEST_RID));
    unwrap(driver.bindProcess!(GUEST_RID, 1, process));
    const data = Uint8Array.of(0xa5, 0x5a, 0x3c, 0xc3);
    let trips = 0;
    let elapsed = 0;
    while (trips < 16 || elapsed < 300) {
      const page = trips + 1;
      const at = va + page * PAGE;
      const t0 = performance.now();
      const first = device.write(at, data, 1);
      if (first.ok || first.pageRequest === undefined) throw new Error(`bench: the write to unmapped page ${page} raised no page request`);
      bed.poll();
      const requests = driver.readEvents().filter((e) => e.kind === "page-request");
      if (requests.length !== 1 || requests[0]!.address !== at) throw new Error(`bench: trip ${page} read ${requests.length} page requests`);
      unwrap(process.map(at, DATA_GPA + page * PAGE, PAGE, Perm.ReadWrite));
      unwrap(driver.respondPageRequest!(requests[0]!, true));
      if (device.pageRequestStatus(first.pageRequest) !== "success") throw new Error(`bench: trip ${page} was not answered success`);
      if (!device.write(at, data, 1).ok) throw new Error(`bench: the retry of trip ${page} faulted`);
      elapsed += performance.now() - t0;
      if (v.vm.memory.readBytes(DATA_GPA + page * PAGE, data.length).some((b, i) => b !== data[i])) throw new Error(`bench: trip ${page}'s write did not land`);
      trips++;
    }
    let writes = 0;
    const t0 = performance.now();
    while (writes < 1000 || performance.now() - t0 < 100) {
      if (!device.write(va, data, 1).ok) throw new Error("bench: the baseline write faulted");
      writes++;
    }
    const baseline = ((performance.now() - t0) * 1000) / writes;
    return { value: Math.round((elapsed * 1000) / trips), baseline: Math.round(baseline * 100) / 100, note: `${trips} trips (fault, PRI queue entry, guest map and CMD_PRI_RESP, fault-file response, retry), each checked; baseline: the same write to a mapped page` };
  } finally {
    bed.dispose();
  }
}

/**
 * The SMMUv3 figures for `viommu bench`, measured on systems built with `plugin` (never asserted): the interleaved,
 * self-verifying FigureSpecs of bench-figures.ts (IOTLB hits through translate and the DmaDevice, invalidations
 * through the reference driver and the trapped queue, the audit's cost), then the dirty-bitmap and page-request
 * figures, still reported as measured.
 */
export function createSmmuv3BenchFigures(plugin: () => VendorPlugin): readonly (BenchFigure | FigureSpec)[] {
  return [
    iotlbHitTranslate(plugin),
    iotlbHitDevice(plugin),
    invalidationsThroughDriver(plugin),
    dmaFillAndInvalidate(plugin),
    auditCost(plugin),
    { name: "smmuv3-dirty-bitmap-ms-per-gib", unit: "ms/GiB", run: () => dirtyBitmapRead(plugin()) },
    { name: "smmuv3-page-request-round-trip-us", unit: "µs", run: () => pageRequestRoundTrip(plugin()) },
  ];
}
