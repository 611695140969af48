import { driverFlushWorkload, DIRTY_TRACKING_ENABLE, dmaFillAndInvalidateFigure, newWalkResult, NO_PASID, ok, opsPerSecond, Perm, plainFlushBaseline, Testbed, unwrap, type BenchFigure, type FigureSpec, type Prepared, type DmaDevice, type GuestPageAllocator, type TranslationMode, type VendorPlugin, type VirtualMachine } from "@viommu/core";
import { buildInvalidateIommuPages, COMMAND_BYTES } from "../format/command.js";
import { MmioOffset } from "../format/mmio-register-map.js";
import type { AmdViGuestDriver } from "../guest/amd-vi-driver.js";
import { SharedDmaBuffers } from "../guest/shared-dma-buffers.js";
import { SwiotlbPool } from "../guest/swiotlb.js";
import type { AmdViUnit } from "../hw/amd-vi-unit.js";
import type { AmdViDevice, AmdViDeviceOptions } from "../vmm/amd-vi-device.js";

const DATA_GPA = 0x2000_0000;
const IOVA = 0x10_0000;

/** Who runs a nested guest's command buffer. */
type CommandBuffer = NonNullable<AmdViDeviceOptions["commandBuffer"]>;

/** One VM with one passthrough device behind an emulated AMD IOMMU, the reference driver brought up. */
interface BenchSystem {
  readonly bed: Testbed;
  readonly vm: VirtualMachine;
  readonly unit: AmdViUnit;
  readonly device: DmaDevice;
  readonly iommu: AmdViDevice;
  readonly driver: AmdViGuestDriver;
  readonly pages: GuestPageAllocator;
}

/** Runs `measure` on a system built by core's Testbed from `plugin`, and disposes of the system after. */
function withSystem<T>(plugin: VendorPlugin, options: { mode: TranslationMode; confidential?: boolean; variant?: string }, measure: (s: BenchSystem) => T): T {
  const guest = options.variant === undefined ? undefined : { variant: options.variant };
  const bed = unwrap(Testbed.create({ plugin, mode: options.mode, guest, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: 8, confidential: options.confidential }] }));
  const v = bed.vms[0]!;
  try {
    return measure({ bed, vm: v.vm, unit: bed.units[0] as AmdViUnit, device: v.devices[0]!.device, iommu: v.iommus[0] as AmdViDevice, driver: v.drivers[0] as AmdViGuestDriver, pages: v.pages });
  } finally {
    bed.dispose();
  }
}

/** Device translations per second on the nested path (guest v2 over host v1, IOTLB warm). */
function translationsPerSecond(plugin: VendorPlugin): { value: number; note: string } {
  return withSystem(plugin, { mode: "nested" }, (s) => {
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    const pages = 512;
    unwrap(s.driver.map(domain, IOVA, DATA_GPA, pages * 4096, Perm.ReadWrite));
    const out = newWalkResult();
    let i = 0;
    const value = opsPerSecond((n) => {
      for (const end = i + n; i < end; i++) s.device.translate(IOVA + (i % pages) * 4096 + (i & 0xff), (i & 1) === 1, NO_PASID, out);
    });
    const { hits, misses } = s.unit.iotlb;
    return { value: Math.round(value), note: `${pages} pages, IOTLB ${hits} hits / ${misses} misses` };
  });
}

/** Commands per second through the trapped command buffer: INVALIDATE_IOMMU_PAGES batches, one doorbell each. */
function commandsPerSecond(plugin: VendorPlugin): { value: number; note: string } {
  return withSystem(plugin, { mode: "nested" }, (s) => {
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    const base = s.driver.structures.commandBuffer;
    const ring = 8192;
    const batch = 255;
    let tail = Number(s.vm.mmioRead(s.iommu.mmioBase + MmioOffset.CommandBufferTail, 4));
    let inBatch = 0;
    // The doorbell rings after every batch and at the end of each timed run.
    const value = opsPerSecond((n) => {
      for (let i = 0; i < n; i++) {
        s.vm.memory.writeWords(base + tail, buildInvalidateIommuPages({ domainId: domain, address: BigInt(IOVA + inBatch * 4096), size: 4096n, pasid: 0 }));
        tail = (tail + COMMAND_BYTES) % ring;
        inBatch = (inBatch + 1) % batch;
        if (inBatch === 0 || i === n - 1) s.vm.mmioWrite(s.iommu.mmioBase + MmioOffset.CommandBufferTail, 4, tail);
      }
    });
    return { value: Math.round(value), note: `${batch}-command batches, each forwarded to IOMMU_HWPT_INVALIDATE` };
  });
}

/** Pages the invalidation figures cycle over. */
const FLUSH_PAGES = 64;

/** A nested system built for a FigureSpec (it lives until the figure's dispose). */
function figureSystem(plugin: VendorPlugin): BenchSystem & { domain: number } {
  const bed = unwrap(Testbed.create({ plugin, mode: "nested", vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: 8 }] }));
  const v = bed.vms[0]!;
  const s = { bed, vm: v.vm, unit: bed.units[0] as AmdViUnit, device: v.devices[0]!.device, iommu: v.iommus[0] as AmdViDevice, driver: v.drivers[0] as AmdViGuestDriver, pages: v.pages };
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  return { ...s, domain };
}

/**
 * Invalidations per second through the reference driver and the trapped command buffer (issue 13's figure): the
 * driver's flush of one page (INVALIDATE_IOMMU_PAGES and COMPLETION_WAIT, each with its tail doorbell as Linux writes
 * it, the buffer consumed by the VMM, the invalidation forwarded by IOMMU_HWPT_INVALIDATE to the host). The page is
 * cached first by an insert into the unit's IOTLB under the tag a DMA gives it (no walk per operation:
 * `amd-vi-dma-fill-and-invalidate` has the walk); each operation checks exactly one entry went, each batch that the
 * pages are gone and a resident page of the domain stayed. Baseline: the same job in plain code.
 */
function invalidationsThroughDriver(plugin: () => VendorPlugin): FigureSpec {
  return {
    name: "amd-vi-invalidations-through-driver",
    unit: "M invalidations/s",
    goal: ">= 0.5M invalidations/s (1M commands/s)",
    prepare(): Prepared {
      const s = figureSystem(plugin());
      return {
        model: driverFlushWorkload(s, IOVA, DATA_GPA, FLUSH_PAGES),
        baseline: plainFlushBaseline(IOVA, FLUSH_PAGES, 8),
        sameOutputs: true,
        note: "per invalidation: the page cached in the unit's IOTLB (its DMA tag, no walk), then INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT through the trapped command buffer to the host; every removal checked",
        sabotage: () => {
          s.driver.flush = () => ok();
        },
        dispose: () => s.bed.dispose(),
      };
    },
  };
}

/** The same flushes with the page cached by a DMA first (a nested walk per operation): unmap after every transfer, end to end. */
function dmaFillAndInvalidate(plugin: () => VendorPlugin): FigureSpec {
  return dmaFillAndInvalidateFigure({
    name: "amd-vi-dma-fill-and-invalidate",
    note: "per invalidation: a DMA fills the IOTLB (nested walk), then INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT through the trapped command buffer; every removal checked",
    iova: IOVA,
    gpa: DATA_GPA,
    pages: FLUSH_PAGES,
    removal: "flush",
    system: () => figureSystem(plugin()),
    baseline: () => plainFlushBaseline(IOVA, FLUSH_PAGES, 8),
  });
}

/** VMM interventions (exits, injections, hypervisor-handled commands) per 1,000 guest unmap+invalidations. */
function interventionsPer1000(plugin: VendorPlugin): number {
  return withSystem(plugin, { mode: "nested" }, (s) => {
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    unwrap(s.driver.map(domain, IOVA, DATA_GPA, 1000 * 4096, Perm.ReadWrite));
    const before = s.vm.interventions + s.iommu.interceptsHandled;
    for (let i = 0; i < 1000; i++) unwrap(s.driver.unmap(domain, IOVA + i * 4096, 4096));
    return s.vm.interventions + s.iommu.interceptsHandled - before;
  });
}

/**
 * Bytes the CPU copies for 1 MiB of streaming DMA each way in a confidential VM. Value: SWIOTLB, as an SEV-SNP guest
 * without DMA translation bounces every buffer through its shared pool; baseline: the same DMA with the vIOMMU
 * translating in its shared-structure mode, the buffers shared in place and mapped for the device (no copy; the
 * cost moves to page conversions, in the note). Both run in a confidential VM, every transfer's data is checked
 * where it must land, and a private buffer is checked to stay out of the device's reach.
 */
function swiotlbBytes(plugin: VendorPlugin): { value: number; baseline: number; note: string } {
  const chunk = 64 * 1024;
  const rounds = 16;
  const data = (i: number): Uint8Array => new Uint8Array(chunk).fill((i * 37 + 11) & 0xff);
  const bounced = withSystem(plugin, { mode: "ir-only", confidential: true }, (s) => {
    if (s.device.read(DATA_GPA, 64).ok) throw new Error("bench: a device read a confidential guest's private page");
    const pool = unwrap(SwiotlbPool.create(s.vm.memory, s.pages, 256 * 1024));
    for (let i = 0; i < rounds; i++) {
      s.vm.memory.writeBytes(DATA_GPA + i * chunk, data(i));
      const out = unwrap(pool.map(DATA_GPA + i * chunk, chunk, "to-device"));
      const r = s.device.read(out.deviceAddress, chunk);
      if (!r.ok || r.data[chunk - 1] !== data(i)[0]) throw new Error("bench: a bounced to-device transfer did not read the buffer");
      pool.unmap(out);
      const back = unwrap(pool.map(DATA_GPA + 0x100_0000 + i * chunk, chunk, "from-device"));
      if (!s.device.write(back.deviceAddress, data(i + 100)).ok) throw new Error("bench: a bounced from-device transfer faulted");
      pool.unmap(back);
      if (s.vm.memory.read8(DATA_GPA + 0x100_0000 + i * chunk + chunk - 1) !== data(i + 100)[0]) throw new Error("bench: bounced data did not reach the private buffer");
    }
    return pool;
  });
  const shared = withSystem(plugin, { mode: "nested", confidential: true, variant: "snp-dma" }, (s) => {
    const buffers = new SharedDmaBuffers(s.vm.memory, s.driver);
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    for (let i = 0; i < rounds; i++) {
      s.vm.memory.writeBytes(DATA_GPA + i * chunk, data(i));
      const out = unwrap(buffers.map(domain, IOVA, DATA_GPA + i * chunk, chunk, Perm.Read));
      const r = s.device.read(IOVA, chunk);
      if (!r.ok || r.data[chunk - 1] !== data(i)[0]) throw new Error("bench: a to-device transfer through the vIOMMU did not read the buffer");
      unwrap(buffers.unmap(out));
      const back = unwrap(buffers.map(domain, IOVA, DATA_GPA + 0x100_0000 + i * chunk, chunk, Perm.Write));
      if (!s.device.write(IOVA, data(i + 100)).ok) throw new Error("bench: a from-device transfer through the vIOMMU faulted");
      unwrap(buffers.unmap(back));
      if (s.vm.memory.read8(DATA_GPA + 0x100_0000 + i * chunk + chunk - 1) !== data(i + 100)[0]) throw new Error("bench: vIOMMU-path data did not reach the buffer");
    }
    unwrap(s.driver.map(domain, IOVA, DATA_GPA, 4096, Perm.Read));
    if (s.device.read(IOVA, 64).ok) throw new Error("bench: a device read a private page through a mapping");
    return buffers;
  });
  return {
    value: bounced.bytesCopied,
    baseline: 0,
    note: `1 MiB to the device and 1 MiB from it in 64 KiB buffers, confidential VM both ways: SWIOTLB made ${bounced.copies} copies; the vIOMMU path copied nothing and made ${shared.pagesConverted} page conversions (${shared.mappings} buffers shared in place)`,
  };
}

const GIB = 2 ** 30;
const PAGE = 4096;

/**
 * Milliseconds to read and clear the dirty bitmap of 1 GiB of guest RAM in 4 KiB v1 stage-2 leaves
 * (IOMMU_HWPT_GET_DIRTY_BITMAP on the parent: 262144 leaves tested and cleared for D). Each round the device first
 * DMA-writes 64 pages through the guest's nested domain and reads 64 others; the bitmap must name exactly the
 * written ones or the figure throws. Baseline: the same test-and-clear over a flat typed array of the entries.
 */
function dirtyBitmapRead(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const base = 0x4000_0000;
  const bed = unwrap(Testbed.create({ plugin, dirtyTracking: true, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], memoryBytes: 2 * GIB, backingPageShift: 12 }] }));
  try {
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, domain));
    unwrap(driver.map(domain, 0, base, GIB, Perm.ReadWrite));
    unwrap(v.iommufd.hwptSetDirtyTracking(v.parentHwptId, DIRTY_TRACKING_ENABLE));
    const device = v.devices[0]!.device;
    const pages = GIB / PAGE;
    let bitmap = new Uint8Array(pages / 8);
    let elapsed = 0;
    let rounds = 0;
    let seed = 0x9e37_79b9;
    while (rounds < 3 || elapsed < 300) {
      const written = new Set<number>();
      for (let i = 0; i < 128; i++) {
        seed = (Math.imul(seed, 1_664_525) + 1_013_904_223) >>> 0;
        const page = seed % pages;
        if (i % 2 === 0) {
          if (!device.write(page * PAGE, Uint8Array.of(rounds & 0xff)).ok) throw new Error(`bench: DMA write to page ${page} faulted`);
          written.add(page);
        } else if (!device.read(page * PAGE, 8).ok) throw new Error(`bench: DMA read of page ${page} faulted`);
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
    return { value: Math.round((elapsed / rounds) * 10) / 10, baseline: Math.round(plainDirtyScan(pages) * 100) / 100, note: `1 GiB in 4 KiB v1 leaves, ${rounds} reads after 64 writes and 64 reads each, every bitmap checked; baseline: test-and-clear of D over a flat array of the same entries` };
  } finally {
    bed.dispose();
  }
}

/** Milliseconds for the plain loop over `entries` v1 leaves (32-bit halves): test D (bit 6), clear it, set the bit. */
function plainDirtyScan(entries: number): number {
  const halves = new Uint32Array(entries * 2);
  const bitmap = new Uint8Array(entries / 8);
  let elapsed = 0;
  let rounds = 0;
  while (rounds < 3 || elapsed < 100) {
    for (let i = 0; i < entries; i += 4099) halves[2 * i] = 0x41;
    const t0 = performance.now();
    for (let i = 0; i < entries; i++) {
      const lo = halves[2 * i]!;
      if ((lo & 0x40) !== 0) {
        bitmap[i >> 3]! |= 1 << (i & 7);
        halves[2 * i] = lo & ~0x40;
      }
    }
    elapsed += performance.now() - t0;
    rounds++;
  }
  return elapsed / rounds;
}

/**
 * Microseconds for one recoverable fault's round trip: the device's DMA to an unmapped address of a bound process
 * raises a page request, the VMM logs it in the guest's PPR log, the guest reads it, maps the page, answers
 * COMPLETE_PPR_REQUEST, the VMM writes the response to the fault file, and the device's retry lands. Each round
 * trip is checked (the request's address, the device's SUCCESS, the retried data in memory). Baseline: the same
 * DMA write to a page already mapped.
 */
function pageRequestRoundTrip(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const bed = unwrap(Testbed.create({ plugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10, pasidBits: 20, pri: true }] }] }));
  try {
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const device = v.devices[0]!.device;
    const process = unwrap(driver.createProcess!());
    const va = 0x7f00_0000_0000;
    unwrap(process.map(va, DATA_GPA, PAGE, Perm.ReadWrite));
    unwrap(driver.enablePageRequests!(0x10));
    unwrap(driver.bindProcess!(0x10, 9, process));
    const payload = Uint8Array.of(0xa5);
    const trips = 256;
    const iommu = v.iommus[0] as AmdViDevice;
    const before = v.vm.interventions + iommu.interceptsHandled;
    const t0 = performance.now();
    for (let i = 1; i <= trips; i++) {
      const at = va + i * PAGE;
      const first = device.write(at, payload, 9);
      if (first.ok || first.pageRequest === undefined) throw new Error(`bench: DMA to unmapped page ${i} raised no page request`);
      bed.poll();
      const pr = driver.readEvents().filter((e) => e.kind === "page-request");
      if (pr.length !== 1 || pr[0]!.address !== at || pr[0]!.pasid !== 9) throw new Error(`bench: the guest read ${pr.length} page requests for page ${i}`);
      unwrap(process.map(at, DATA_GPA + i * PAGE, PAGE, Perm.ReadWrite));
      unwrap(driver.respondPageRequest!(pr[0]!, true));
      bed.poll();
      if (device.pageRequestStatus(first.pageRequest) !== "success") throw new Error(`bench: page ${i}'s group was not answered SUCCESS`);
      if (!device.write(at, payload, 9).ok || v.vm.memory.read8(DATA_GPA + i * PAGE) !== 0xa5) throw new Error(`bench: the retry to page ${i} did not land`);
    }
    const perTrip = ((performance.now() - t0) * 1000) / trips;
    const exits = (v.vm.interventions + iommu.interceptsHandled - before) / trips;
    let j = 0;
    const writesPerSecond = opsPerSecond((n) => {
      for (let k = 0; k < n; k++, j++) if (!device.write(va + (1 + (j % trips)) * PAGE, payload, 9).ok) throw new Error("bench: a mapped DMA write faulted");
    });
    return { value: Math.round(perTrip * 10) / 10, baseline: Math.round((1e6 / writesPerSecond) * 100) / 100, note: `${trips} round trips, each checked, ${exits} VMM interventions each (exits, injections and intercepted commands); baseline: the same DMA write to a mapped page` };
  } finally {
    bed.dispose();
  }
}

/**
 * VMM interventions for 1,000 MSIs of a passthrough device: value with the MSIs remapped by the VMM (each one an
 * injection), baseline with them posted through the host's vAPIC IRTEs to a running vCPU. Both runs check that all
 * 1,000 arrive with the programmed vector at the programmed vCPU, by the path the mode promises.
 */
function msiInterventions(plugin: VendorPlugin, mode: "remapped" | "posted"): number {
  const bed = unwrap(Testbed.create({ plugin, deviceInterrupts: mode, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: 8 }] }));
  try {
    const v = bed.vms[0]!;
    const msi = unwrap(v.drivers[0]!.mapInterrupt!(0x10, 0x45, 3));
    v.vm.interrupts.take();
    const before = v.vm.interventions;
    for (let i = 0; i < 1000; i++) if (!v.devices[0]!.device.signalMsi(msi)) throw new Error("bench: the device has no MSI route");
    const cost = v.vm.interventions - before;
    const got = v.vm.interrupts.take().filter((i) => i.source.startsWith("msi"));
    const path = mode === "posted" ? "direct" : "vmm";
    if (got.length !== 1000 || got.some((i) => i.vector !== 0x45 || i.destination !== 3 || i.path !== path)) throw new Error(`bench: ${mode}: ${got.length} MSIs arrived, not 1000 at vector 0x45 on vCPU 3 by the ${path} path`);
    return cost;
  } finally {
    bed.dispose();
  }
}

/**
 * The AMD-Vi figures for `viommu bench` (measured in run(), never asserted), each on a system built from the
 * plugin `plugin` returns for the command-buffer configuration it measures.
 */
export function createAmdViBenchFigures(plugin: (commandBuffer: CommandBuffer) => VendorPlugin): readonly (BenchFigure | FigureSpec)[] {
  return [
    { name: "amd-vi-translations-per-s", unit: "translations/s", run: () => translationsPerSecond(plugin("hw-vqueue")) },
    { name: "amd-vi-commands-per-s", unit: "commands/s", run: () => commandsPerSecond(plugin("trapped")) },
    invalidationsThroughDriver(() => plugin("trapped")),
    dmaFillAndInvalidate(() => plugin("trapped")),
    {
      name: "amd-vi-interventions-per-1000-invalidations-trapped",
      unit: "interventions",
      run: () => {
        const trapped = interventionsPer1000(plugin("trapped"));
        const hw = interventionsPer1000(plugin("hw-vqueue"));
        return { value: trapped, baseline: hw, note: "guest unmap + INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT, one doorbell each; baseline: the hardware vIOMMU, same workload" };
      },
    },
    {
      name: "amd-vi-interventions-per-1000-invalidations-hw-vqueue",
      unit: "interventions",
      run: () => {
        const hw = interventionsPer1000(plugin("hw-vqueue"));
        const trapped = interventionsPer1000(plugin("trapped"));
        return { value: hw, baseline: trapped, note: "tail writes go to the VF-MMIO page, the IOMMU reads commands through stage 2; baseline: trapped, same workload" };
      },
    },
    { name: "amd-vi-swiotlb-bytes-copied", unit: "bytes", run: () => swiotlbBytes(plugin("hw-vqueue")) },
    { name: "amd-vi-dirty-bitmap-read-per-gib", unit: "ms", run: () => dirtyBitmapRead(plugin("hw-vqueue")) },
    { name: "amd-vi-page-request-round-trip", unit: "us", run: () => pageRequestRoundTrip(plugin("hw-vqueue")) },
    {
      name: "amd-vi-interventions-per-1000-msis-remapped",
      unit: "interventions",
      run: () => ({ value: msiInterventions(plugin("hw-vqueue"), "remapped"), baseline: msiInterventions(plugin("hw-vqueue"), "posted"), note: "the VMM remaps and injects each MSI; baseline: posted through vAPIC IRTEs, same MSIs" }),
    },
    {
      name: "amd-vi-interventions-per-1000-msis-posted",
      unit: "interventions",
      run: () => ({ value: msiInterventions(plugin("hw-vqueue"), "posted"), baseline: msiInterventions(plugin("hw-vqueue"), "remapped"), note: "vAPIC IRTEs post to the running vCPU; baseline: remapped by the VMM, same MSIs" }),
    },
  ];
}
