import { opsPerSecond, translationsPerSecond, Perm, Testbed, unwrap, type BenchFigure, type DmaDevice, type GuestDomainId, type VendorPlugin } from "@viommu/core";
import type { Smmuv3GuestDriver } from "../guest/smmuv3-driver.js";
import type { Smmuv3Device } from "../vmm/smmuv3-device.js";

const IOVA = 0x10_0000;
const DATA_GPA = 0x2000_0000;
const GUEST_RID = 0x10;

/** One VM with one passthrough device behind a nested vSMMU, attached to a domain of the reference driver. */
interface BenchSystem {
  readonly bed: Testbed;
  readonly device: DmaDevice;
  readonly iommu: Smmuv3Device;
  readonly driver: Smmuv3GuestDriver;
  readonly domain: GuestDomainId;
}

/** Builds the system with core's Testbed (any failure here is a bug, so it throws). */
function buildBenchSystem(plugin: VendorPlugin): BenchSystem {
  const bed = unwrap(Testbed.create({ plugin, vms: [{ devices: [{ rid: 0x100, guestRid: GUEST_RID }] }] }));
  const v = bed.vms[0]!;
  const driver = v.drivers[0] as Smmuv3GuestDriver;
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(GUEST_RID, domain));
  return { bed, device: v.devices[0]!.device, iommu: v.iommus[0] as Smmuv3Device, driver, domain };
}

/**
 * Translations per second through the physical unit for a nested device: 4096 distinct 4 KiB pages of a
 * 16 MiB guest mapping, so both IOTLB hits and (after each TLBI) full nested walks are measured.
 */
function translations(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const sys = buildBenchSystem(plugin);
  try {
    const pages = 4096;
    const mapped = sys.driver.map(sys.domain, IOVA, DATA_GPA, pages * 4096, Perm.ReadWrite);
    if (!mapped.ok) throw new Error(`bench map: ${mapped.error.message}`);
    const value = translationsPerSecond({ translate: (a, w, p, o) => sys.device.translate(a, w, p, o), flush: () => void sys.driver.flush(sys.domain) }, IOVA, pages);
    return { value: Math.round(value), note: "nested stage 1 over stage 2, 4 KiB pages, IOTLB flushed every 10 rounds" };
  } finally {
    sys.bed.dispose();
  }
}

/** Commands per second through the trapped command queue: range TLBIs and CMD_SYNCs the guest issues, forwarded to the host. */
function commands(plugin: VendorPlugin): ReturnType<BenchFigure["run"]> {
  const sys = buildBenchSystem(plugin);
  try {
    let flushes = 0;
    const before = sys.iommu.stats.trapped;
    const flushRate = opsPerSecond((n) => {
      for (let i = 0; i < n; i++) {
        const r = sys.driver.flush(sys.domain, IOVA + (flushes++ % 64) * 0x10000, 0x3000);
        if (!r.ok) throw new Error(`bench flush: ${r.error.message}`);
      }
    });
    // Commands, not flushes: the rate scales by the commands each flush trapped.
    const value = (flushRate * (sys.iommu.stats.trapped - before)) / Math.max(flushes, 1);
    return { value: Math.round(value), note: "TLBI_NH_VA + CMD_SYNC per flush, nested (forwarded to the host vSMMU)" };
  } finally {
    sys.bed.dispose();
  }
}

/** The SMMUv3 figures for `viommu bench`, measured on systems built with `plugin` (never asserted). */
export function createSmmuv3BenchFigures(plugin: () => VendorPlugin): readonly BenchFigure[] {
  return [
    { name: "smmuv3-translations-per-s", unit: "translations/s", run: () => translations(plugin()) },
    { name: "smmuv3-commands-per-s", unit: "commands/s", run: () => commands(plugin()) },
  ];
}
