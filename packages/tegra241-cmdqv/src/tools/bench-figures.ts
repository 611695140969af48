import { Perm, unwrap, type FigureSpec, type Prepared, type VendorPlugin, type Workload } from "@viommu/core";
import { BENCH_GPA, BENCH_IOVA, dmaFillInvalidations, FLUSH_PAGES, nestedBench, Smmuv3GuestDriver, type NestedBench } from "@viommu/smmuv3";
import { Tegra241GuestDriver } from "../guest/tegra241-driver.js";

/**
 * One system per path, same hardware model and VMM: the guest's invalidations on its own VCMDQ (consumed by the
 * CMDQV from guest memory, no exit), or, with Linux's `bypass_vcmdq`, on the trapped SMMUv3 CMDQ.
 */
function system(plugin: VendorPlugin, parents: readonly VendorPlugin[], bypassVcmdq: boolean): NestedBench {
  const withDriver: VendorPlugin = bypassVcmdq ? { ...plugin, createDriver: (context) => new Tegra241GuestDriver(context, new Smmuv3GuestDriver(context), { bypassVcmdq }) } : plugin;
  const b = nestedBench(withDriver, { parents });
  unwrap(b.driver.map(b.domain, BENCH_IOVA, BENCH_GPA, FLUSH_PAGES * 4096, Perm.ReadWrite));
  return b;
}

/** Busy-waits `ns` nanoseconds: the guest's vCPU is in the exit that long, so the figure's wall time includes it. */
function spin(ns: number): void {
  const until = performance.now() + ns / 1e6;
  while (performance.now() < until);
}

/**
 * Invalidations (each a freshly cached page, then TLBI_NH_VA + CMD_SYNC) on one path, every removal verified;
 * with `charged`, each batch also spends the VM exits it took (`vm.exitNanoseconds`, the cited KVM MMIO exit by
 * default: core sim/exit-cost.ts) on the clock.
 */
function path(b: NestedBench, charged: boolean): Workload {
  const vm = b.bed.vms[0]!.vm;
  const invalidations = dmaFillInvalidations(b);
  return {
    run(n: number): number {
      const before = vm.exitNanoseconds;
      const sum = invalidations.run(n);
      if (charged) spin(vm.exitNanoseconds - before);
      return sum;
    },
    verify: invalidations.verify,
  };
}

function figure(name: string, charged: boolean, plugin: () => VendorPlugin, parents: () => readonly VendorPlugin[]): FigureSpec {
  return {
    name,
    unit: "µs/invalidation",
    scale: "us-per-op",
    goal: "published: 70–90 % lower invalidation latency with VCMDQ than trapped CMDQ (ratio 3.3–10 here: rates)",
    prepare(): Prepared {
      const vcmdq = system(plugin(), parents(), false);
      const trapped = system(plugin(), parents(), true);
      return {
        model: path(vcmdq, charged),
        baseline: path(trapped, charged),
        sameOutputs: true,
        note: charged
          ? "guest-owned VCMDQ (model) vs trapped SMMUv3 CMDQ (baseline), each batch charged its VM exits at the VM's exit cost (KVM MMIO exit round trip by default); each invalidation a cached page's TLBI+SYNC, removal checked"
          : "guest-owned VCMDQ (model) vs trapped SMMUv3 CMDQ (baseline), model time only (an exit costs a function call); each invalidation a cached page's TLBI+SYNC, removal checked",
        sabotage: () => {
          // A guest whose VCMDQ invalidations stop reaching the hardware: its cached pages stay.
          vcmdq.driver.flush = () => ({ ok: true, value: undefined });
        },
        dispose: () => {
          vcmdq.bed.dispose();
          trapped.bed.dispose();
        },
      };
    },
  };
}

/** Tegra241's interleaved figures: VCMDQ against the trapped CMDQ, without and with the VM exit cost. */
export function tegra241InvalidationFigures(plugin: () => VendorPlugin, parents: () => readonly VendorPlugin[]): readonly FigureSpec[] {
  return [figure("tegra241-vcmdq-vs-trapped-invalidation", false, plugin, parents), figure("tegra241-vcmdq-vs-trapped-invalidation-with-exit-cost", true, plugin, parents)];
}
