import { opsPerSecond, translationsPerSecond, Perm, Testbed, unwrap, type BenchFigure, type DmaDevice, type GuestDomainId, type GuestIommuDriver, type VendorPlugin } from "@viommu/core";
import type { HypervDevice } from "../vmm/hyperv-device.js";

const IOVA = 0x10_0000;
const DATA_GPA = 0x2000_0000;
const GUEST_RID = 0x10;

/** One VM with one passthrough device behind the pvIOMMU, attached to a domain of the reference driver. */
interface BenchSystem {
  readonly bed: Testbed;
  readonly device: DmaDevice;
  readonly iommu: HypervDevice;
  readonly driver: GuestIommuDriver;
  readonly domain: GuestDomainId;
}

/** Builds the system with core's Testbed, the driver in `variant` (any failure here is a bug, so it throws). */
function buildBenchSystem(plugin: VendorPlugin, variant: "stage1" | "device-domain"): BenchSystem {
  const bed = unwrap(Testbed.create({ plugin, vms: [{ devices: [{ rid: 0x100, guestRid: GUEST_RID }] }], guest: { variant } }));
  const v = bed.vms[0]!;
  const driver = v.drivers[0]!;
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(GUEST_RID, domain));
  return { bed, device: v.devices[0]!.device, iommu: v.iommus[0] as HypervDevice, driver, domain };
}

/**
 * Translations per second through the physical unit for a device in a paging device domain: 4096 distinct 4 KiB
 * pages of the guest's x86-64 stage 1 nested over the host stage 2, IOTLB hits and (after each domain flush)
 * full nested walks.
 */
function translations(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const sys = buildBenchSystem(plugin, "stage1");
  try {
    const pages = 4096;
    const mapped = sys.driver.map(sys.domain, IOVA, DATA_GPA, pages * 4096, Perm.ReadWrite);
    if (!mapped.ok) throw new Error(`bench map: ${mapped.error.message}`);
    const flush = (): void => {
      const r = sys.driver.flush(sys.domain);
      if (!r.ok) throw new Error(`bench flush: ${r.error.message}`);
    };
    const value = translationsPerSecond({ translate: (a, w, p, o) => sys.device.translate(a, w, p, o), flush }, IOVA, pages);
    return { value: Math.round(value), note: "x86-64 stage 1 nested over stage 2, 4 KiB pages, domain flushed every 10 rounds" };
  } finally {
    sys.bed.dispose();
  }
}

/**
 * MAP_DEVICE_GPA_PAGES reps per second: a stage-2 device domain mapped and unmapped 4 MiB at a time (1024 reps
 * per map, in calls of at most 507 frames and the hypervisor's time slices), with the ranged flushes of a
 * stage-1 domain as the baseline (hypercalls per second).
 */
function hypercalls(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const s2 = buildBenchSystem(plugin, "device-domain");
  const s1 = buildBenchSystem(plugin, "stage1");
  try {
    const pages = 1024;
    let maps = 0;
    // One operation is one page mapped (a rep) and unmapped again.
    const repRate = opsPerSecond((n) => {
      for (let done = 0; done < n; ) {
        const count = Math.min(pages, n - done);
        const iova = IOVA + (maps++ % 4) * pages * 4096;
        const m = s2.driver.map(s2.domain, iova, DATA_GPA, count * 4096, Perm.ReadWrite);
        if (!m.ok) throw new Error(`bench map: ${m.error.message}`);
        const u = s2.driver.unmap(s2.domain, iova, count * 4096);
        if (!u.ok) throw new Error(`bench unmap: ${u.error.message}`);
        done += count;
      }
    });
    let flushes = 0;
    const before = s1.iommu.stats.trapped;
    const flushRate = opsPerSecond((n) => {
      for (let i = 0; i < n; i++) {
        const r = s1.driver.flush(s1.domain, IOVA + (flushes++ % 64) * 0x10000, 0x3000);
        if (!r.ok) throw new Error(`bench flush: ${r.error.message}`);
      }
    });
    // Hypercalls, not flushes: the rate scales by the hypercalls each flush took.
    const hypercallRate = (flushRate * (s1.iommu.stats.trapped - before)) / Math.max(flushes, 1);
    return {
      value: Math.round(repRate),
      baseline: Math.round(hypercallRate),
      ratio: Math.round((repRate / hypercallRate) * 100) / 100,
      note: "baseline: FLUSH_DEVICE_DOMAIN_LIST hypercalls/s on a stage-1 domain",
    };
  } finally {
    s2.bed.dispose();
    s1.bed.dispose();
  }
}

/** The Hyper-V figures for `viommu bench`, measured on systems built with `plugin` (never asserted). */
export function createHypervBenchFigures(plugin: () => VendorPlugin): readonly BenchFigure[] {
  return [
    { name: "hyperv-translations-per-s", unit: "translations/s", run: () => translations(plugin()) },
    { name: "hyperv-hypercalls-per-s", unit: "MAP_DEVICE_GPA_PAGES reps/s", run: () => hypercalls(plugin()) },
  ];
}
