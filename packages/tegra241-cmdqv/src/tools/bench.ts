import { opsPerSecond, Perm, Testbed, unwrap, type BenchFigure, type FigureSpec, type GuestDomainId, type GuestIommuDriver, type VendorPlugin, type VirtualMachine } from "@viommu/core";
import { Smmuv3GuestDriver } from "@viommu/smmuv3";
import { Tegra241GuestDriver } from "../guest/tegra241-driver.js";
import { tegra241InvalidationFigures } from "./bench-figures.js";

const IOVA = 0x10_0000;
const DATA_GPA = 0x2000_0000;
const GUEST_RID = 0x10;
const INVALIDATIONS = 1000;

/** One VM with one passthrough device behind a nested vSMMU with a CMDQV, 64 pages mapped in a domain of the reference driver. */
interface BenchSystem {
  readonly bed: Testbed;
  readonly vm: VirtualMachine;
  readonly driver: GuestIommuDriver;
  readonly domain: GuestDomainId;
}

/**
 * Builds the system with core's Testbed (any failure here is a bug, so it throws). `bypassVcmdq` is Linux's module
 * parameter of that name: same hardware, same VMM, but the guest sends its invalidations through the trapped SMMU
 * queue.
 */
function buildBenchSystem(plugin: VendorPlugin, parents: readonly VendorPlugin[], bypassVcmdq: boolean): BenchSystem {
  const driverPlugin: VendorPlugin = bypassVcmdq ? { ...plugin, createDriver: (context) => new Tegra241GuestDriver(context, new Smmuv3GuestDriver(context), { bypassVcmdq }) } : plugin;
  const bed = unwrap(Testbed.create({ plugin: driverPlugin, plugins: parents, vms: [{ devices: [{ rid: 0x100, guestRid: GUEST_RID }] }] }));
  const v = bed.vms[0]!;
  const driver = v.drivers[0]!;
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(GUEST_RID, domain));
  unwrap(driver.map(domain, IOVA, DATA_GPA, 64 * 4096, Perm.ReadWrite));
  return { bed, vm: v.vm, driver, domain };
}

interface PathMeasure {
  /** VMM interventions (trapped MMIO, hypercalls, injections) per INVALIDATIONS invalidations. */
  readonly interventions: number;
  /** Model time per invalidation, microseconds. */
  readonly microseconds: number;
}

/**
 * Single-page invalidations (TLBI_NH_VA + CMD_SYNC, as Linux issues for a 4 KiB unmap), each a different page of
 * the mapped region: timed with opsPerSecond, then INVALIDATIONS more with interventions counted by the VM.
 */
function measurePath(sys: BenchSystem): PathMeasure {
  let done = 0;
  const flush = (n: number): void => {
    for (let i = 0; i < n; i++) {
      const r = sys.driver.flush(sys.domain, IOVA + (done++ % 64) * 4096, 4096);
      if (!r.ok) throw new Error(`bench flush: ${r.error.message}`);
    }
  };
  const rate = opsPerSecond(flush);
  const before = sys.vm.interventions;
  flush(INVALIDATIONS);
  return { interventions: ((sys.vm.interventions - before) * 1000) / INVALIDATIONS, microseconds: 1e6 / rate };
}

/** Both paths on the same hardware model and VMM. */
function measureBoth(plugin: VendorPlugin, parents: readonly VendorPlugin[]): { vcmdq: PathMeasure; cmdq: PathMeasure } {
  const direct = buildBenchSystem(plugin, parents, false);
  try {
    const vcmdq = measurePath(direct);
    const trapped = buildBenchSystem(plugin, parents, true);
    try {
      return { vcmdq, cmdq: measurePath(trapped) };
    } finally {
      trapped.bed.dispose();
    }
  } finally {
    direct.bed.dispose();
  }
}

/** A figure of the VCMDQ path against the trapped CMDQ path. */
function comparison(vcmdq: number, cmdq: number, note: string): ReturnType<BenchFigure["run"]> {
  return { value: vcmdq, baseline: cmdq, ratio: cmdq === 0 ? 0 : vcmdq / cmdq, note };
}

/**
 * VMM interventions per 1000 invalidations: guest-owned VCMDQ (value) against the trapped SMMUv3 CMDQ
 * (baseline), where each batch exits on CMDQ_CONS / CMDQ_PROD and the VMM forwards the TLBI through
 * IOMMU_HWPT_INVALIDATE. Counted, not timed.
 */
function interventions(plugin: VendorPlugin, parents: readonly VendorPlugin[]): ReturnType<BenchFigure["run"]> {
  const { vcmdq, cmdq } = measureBoth(plugin, parents);
  const note = `counted VM exits/injections; model time ${vcmdq.microseconds.toFixed(2)} µs vs ${cmdq.microseconds.toFixed(2)} µs per invalidation (no exit cost is modelled)`;
  return comparison(vcmdq.interventions, cmdq.interventions, note);
}

/**
 * The Tegra241 figures for `viommu bench`, measured on systems built with `plugin` over its `parents` (the SMMUv3
 * plugin it extends); never asserted.
 */
export function createTegra241BenchFigures(plugin: () => VendorPlugin, parents: () => readonly VendorPlugin[]): readonly (BenchFigure | FigureSpec)[] {
  return [
    ...tegra241InvalidationFigures(plugin, parents),
    { name: "tegra241-interventions-per-1000-invalidations", unit: "interventions/1000 invalidations", run: () => interventions(plugin(), parents()) },
  ];
}
