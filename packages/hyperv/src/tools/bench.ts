import { newWalkResult, NO_PASID, Perm, type BenchFigure } from "@viommu/core";
import { buildBenchSystem } from "./bench-system.js";

const IOVA = 0x10_0000;
const DATA_GPA = 0x2000_0000;

/**
 * Translations per second through the physical unit for a device in a paging device domain: 4096 distinct 4 KiB
 * pages of the guest's x86-64 stage 1 nested over the host stage 2, IOTLB hits and (after each domain flush)
 * full nested walks.
 */
const translations: BenchFigure = {
  name: "hyperv-translations-per-s",
  unit: "translations/s",
  run() {
    const sys = buildBenchSystem("stage1");
    try {
      const pages = 4096;
      const mapped = sys.driver.map(sys.domain, IOVA, DATA_GPA, pages * 4096, Perm.ReadWrite);
      if (!mapped.ok) throw new Error(`bench map: ${mapped.error.message}`);
      const out = newWalkResult();
      // One untimed pass so the figure measures the model, not the JIT's first compile.
      for (let p = 0; p < pages; p++) sys.device.translate(IOVA + p * 4096 + 8, false, NO_PASID, out);
      let done = 0;
      const start = performance.now();
      for (let round = 0; round < 50; round++) {
        if (round % 10 === 0) sys.driver.flush(sys.domain);
        for (let p = 0; p < pages; p++) {
          sys.device.translate(IOVA + p * 4096 + 8, (p & 1) === 1, NO_PASID, out);
          if (!out.ok) throw new Error(`bench translation faulted at page ${p}`);
          done++;
        }
      }
      const seconds = (performance.now() - start) / 1000;
      return { value: Math.round(done / seconds), note: "x86-64 stage 1 nested over stage 2, 4 KiB pages, domain flushed every 10 rounds" };
    } finally {
      sys.dispose();
    }
  },
};

/**
 * MAP_DEVICE_GPA_PAGES reps per second: a stage-2 device domain mapped and unmapped 4 MiB at a time (1024 reps
 * per map, in calls of at most 507 frames and the hypervisor's time slices), with the ranged flushes of a
 * stage-1 domain as the baseline (hypercalls per second).
 */
const hypercalls: BenchFigure = {
  name: "hyperv-hypercalls-per-s",
  unit: "MAP_DEVICE_GPA_PAGES reps/s",
  run() {
    const s2 = buildBenchSystem("device-domain");
    const s1 = buildBenchSystem("stage1");
    try {
      const pages = 1024;
      let reps = 0;
      let start = performance.now();
      for (let i = 0; i < 40; i++) {
        const iova = IOVA + (i % 4) * pages * 4096;
        const m = s2.driver.map(s2.domain, iova, DATA_GPA, pages * 4096, Perm.ReadWrite);
        if (!m.ok) throw new Error(`bench map: ${m.error.message}`);
        s2.driver.unmap(s2.domain, iova, pages * 4096);
        reps += pages;
      }
      const repRate = reps / ((performance.now() - start) / 1000);
      const before = s1.iommu.stats.trapped;
      start = performance.now();
      for (let i = 0; i < 2000; i++) {
        const r = s1.driver.flush(s1.domain, IOVA + (i % 64) * 0x10000, 0x3000);
        if (!r.ok) throw new Error(`bench flush: ${r.error.message}`);
      }
      const flushRate = (s1.iommu.stats.trapped - before) / ((performance.now() - start) / 1000);
      return { value: Math.round(repRate), baseline: Math.round(flushRate), ratio: Math.round((repRate / flushRate) * 100) / 100, note: "baseline: FLUSH_DEVICE_DOMAIN_LIST hypercalls/s on a stage-1 domain" };
    } finally {
      s2.dispose();
      s1.dispose();
    }
  },
};

export const hypervBenchFigures: readonly BenchFigure[] = [translations, hypercalls];
