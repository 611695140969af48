import { newWalkResult, NO_PASID, opsPerSecond, Perm, Testbed, unwrap, type BenchFigure, type DmaRequest, type VendorPlugin, type VirtualMachine } from "@viommu/core";
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

/** VT-d figures for `viommu bench`, measured on systems built with `plugin` (measured, never asserted). */
export function createVtdBenchFigures(plugin: () => VendorPlugin): readonly BenchFigure[] {
  return [
    { name: "vtd-translations-per-s", unit: "translations/s", run: () => translations(plugin()) },
    { name: "vtd-descriptors-per-s", unit: "descriptors/s", run: () => descriptors(plugin()) },
  ];
}
