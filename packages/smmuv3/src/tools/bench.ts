import { newWalkResult, NO_PASID, Perm, type BenchFigure } from "@viommu/core";
import { buildBenchSystem } from "./bench-system.js";

const IOVA = 0x10_0000;
const DATA_GPA = 0x2000_0000;

/**
 * Translations per second through the physical unit for a nested device: 4096 distinct 4 KiB pages of a
 * 16 MiB guest mapping, so both IOTLB hits and (after each TLBI) full nested walks are measured.
 */
const translations: BenchFigure = {
  name: "smmuv3-translations-per-s",
  unit: "translations/s",
  run() {
    const sys = buildBenchSystem();
    try {
      const pages = 4096;
      const mapped = sys.driver.map(sys.domain, IOVA, DATA_GPA, pages * 4096, Perm.ReadWrite);
      if (!mapped.ok) throw new Error(`bench map: ${mapped.error.message}`);
      const out = newWalkResult();
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
      return { value: Math.round(done / seconds), note: "nested stage 1 over stage 2, 4 KiB pages, IOTLB flushed every 10 rounds" };
    } finally {
      sys.dispose();
    }
  },
};

/** Commands per second through the trapped command queue: range TLBIs and CMD_SYNCs the guest issues, forwarded to the host. */
const commands: BenchFigure = {
  name: "smmuv3-commands-per-s",
  unit: "commands/s",
  run() {
    const sys = buildBenchSystem();
    try {
      const before = sys.iommu.stats.trapped;
      const start = performance.now();
      for (let i = 0; i < 2000; i++) {
        const r = sys.driver.flush(sys.domain, IOVA + (i % 64) * 0x10000, 0x3000);
        if (!r.ok) throw new Error(`bench flush: ${r.error.message}`);
      }
      const seconds = (performance.now() - start) / 1000;
      return { value: Math.round((sys.iommu.stats.trapped - before) / seconds), note: "TLBI_NH_VA + CMD_SYNC per flush, nested (forwarded to the host vSMMU)" };
    } finally {
      sys.dispose();
    }
  },
};

export const smmuv3Bench: readonly BenchFigure[] = [translations, commands];
