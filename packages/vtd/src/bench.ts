import {
  GuestPageAllocator,
  HwptAllocFlag,
  IoasMapFlag,
  IommufdContext,
  newWalkResult,
  NO_PASID,
  Perm,
  Platform,
  unwrap,
  type BenchFigure,
  type DmaRequest,
} from "@viommu/core";
import { encodeInvDesc, PasidIotlbGranularity } from "./format/inv-desc.js";
import { VtdGuestDriver } from "./guest/vtd-driver.js";
import { VtdUnit } from "./hw/vtd-unit.js";
import { VtdDevice } from "./vmm/vtd-device.js";

const GIB = 2 ** 30;
const IOVA = 0x1000_0000;
const DATA_GPA = 0x1000_0000;
/** Pages the benchmark maps: more than fits in one IOTLB pass of hits only when the cache is cleared. */
const PAGES = 4096;

/**
 * One VM with a scalable-mode guest whose device is nested (its first-level table over the shared parent):
 * what both VT-d figures run on. Built from the plugin's parts directly, as the VMM and guest would.
 */
function nestedSystem(): { unit: VtdUnit; device: VtdDevice; driver: VtdGuestDriver; vm: ReturnType<Platform["createVm"]>; requesterId: number } {
  const platform = new Platform({ plugins: [] });
  const unit = new VtdUnit(platform.host, 0);
  platform.host.units.push(unit);
  const vm = platform.createVm({ memoryBytes: GIB });
  const ctx = new IommufdContext(vm.id);
  const phys = platform.createDevice(unit, 0x100, "bench-nvme");
  const devId = unwrap(ctx.bindDevice(phys));
  const ioasId = unwrap(ctx.ioasAlloc());
  unwrap(ctx.ioasMap({ ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: vm.memory, gpa: 0, length: GIB, iova: 0 }));
  const parentHwptId = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId, ptId: ioasId }));
  const device = unwrap(VtdDevice.create({ vm, iommufd: ctx, unit, ioasId, parentHwptId, anchorDevId: devId, mode: "nested" }));
  unwrap(device.assignDevice(phys, devId, 0x10));
  const pages = new GuestPageAllocator(vm.memory, vm.memory.end - 32 * 2 ** 20, vm.memory.end);
  const driver = new VtdGuestDriver({ vm, memory: vm.memory, pages, acpi: device.acpiTables(), mmioBase: device.mmioBase }, { variant: "scalable" });
  unwrap(driver.init({ translation: true, interruptRemapping: true }));
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(0x10, domain));
  // 4 KiB pages (an unaligned GPA keeps the guest from using 2 MiB leaves): the walk is a full 4 + 4 × 4 fetches.
  unwrap(driver.map(domain, IOVA, DATA_GPA + 0x1000, PAGES * 4096, Perm.ReadWrite));
  return { unit, device, driver, vm, requesterId: 0x100 };
}

function rate(count: number, ms: number): number {
  return Math.round((count / Math.max(ms, 1e-3)) * 1000);
}

/** Translations through the physical unit: hits in its IOTLB, and misses (a full nested walk each). */
const translations: BenchFigure = {
  name: "vtd-translations-per-s",
  unit: "translations/s",
  run() {
    const s = nestedSystem();
    const out = newWalkResult();
    const request = { requesterId: s.requesterId, pasid: NO_PASID, iova: IOVA, access: Perm.Read } as { -readonly [K in keyof DmaRequest]: DmaRequest[K] };
    const pass = (): void => {
      for (let p = 0; p < PAGES; p++) {
        request.iova = IOVA + p * 4096;
        s.unit.translate(request, out);
      }
    };
    pass();
    const hitPasses = 40;
    let started = performance.now();
    for (let i = 0; i < hitPasses; i++) pass();
    const hit = rate(hitPasses * PAGES, performance.now() - started);
    const missPasses = 8;
    let missMs = 0;
    for (let i = 0; i < missPasses; i++) {
      s.unit.iotlb.invalidateAll();
      started = performance.now();
      pass();
      missMs += performance.now() - started;
    }
    const miss = rate(missPasses * PAGES, missMs);
    return { value: hit, baseline: miss, ratio: hit / Math.max(miss, 1), note: `IOTLB hits; baseline = misses (nested first-level over second-level walk, ${out.fetches} table fetches each)` };
  },
};

/** Descriptors through the emulated unit's invalidation queue: PASID-based IOTLB invalidations forwarded to the host, plus waits. */
const descriptors: BenchFigure = {
  name: "vtd-descriptors-per-s",
  unit: "descriptors/s",
  run() {
    const s = nestedSystem();
    const regs = s.device.registers;
    const iqa = Number(regs.read(0x90, 8));
    const base = iqa - (iqa % 4096);
    const bytes = 4096 * 2 ** (iqa & 7);
    const did = 2;
    const batch: Uint32Array[] = [];
    for (let i = 0; i < 127; i++) batch.push(encodeInvDesc("P_IOTLB_INV", { G: PasidIotlbGranularity.PAGE_IN_PASID, DID: did, PASID: 0, AM: 0, ADDR: BigInt(IOVA + i * 4096) }, 256));
    batch.push(encodeInvDesc("INV_WAIT", { SW: 1, FN: 1, STATUS_DATA: 1, STATUS_ADDR: BigInt(base + bytes - 4096) }, 256));
    let tail = Number(regs.read(0x88, 8));
    const before = s.device.queue.processed;
    const started = performance.now();
    for (let round = 0; round < 40; round++) {
      for (const d of batch) {
        s.vm.memory.writeWords(base + tail, d);
        tail = (tail + 32) % bytes;
      }
      s.vm.mmioWrite(s.device.mmioBase + 0x88, 8, BigInt(tail));
    }
    const ms = performance.now() - started;
    const processed = s.device.queue.processed - before;
    return { value: rate(processed, ms), note: `${processed} descriptors (P_IOTLB_INV forwarded as IOMMU_HWPT_INVALIDATE, and waits), guest writes included` };
  },
};

/** VT-d figures for `viommu bench` (measured, never asserted). */
export const vtdBenchFigures: readonly BenchFigure[] = [translations, descriptors];
