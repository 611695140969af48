import { NO_PASID } from "../contract/iommu-unit.js";
import { newWalkResult, type WalkResult } from "../translate/walk-result.js";

/**
 * Superseded by the verified, interleaved harness in `interleaved.ts` (`measurePrepared`): kept while vendor
 * figures still call it. Operations per second of `batch(n)` (which performs n operations), measured over at least `minMs` after a
 * warm-up so the JIT has settled. Wall-clock: for `viommu bench` figures only, never asserted in tests.
 */
export function opsPerSecond(batch: (n: number) => void, minMs = 300): number {
  batch(10_000);
  let n = 10_000;
  let total = 0;
  let ops = 0;
  while (total < minMs) {
    const t0 = performance.now();
    batch(n);
    const dt = performance.now() - t0;
    total += dt;
    ops += n;
    if (dt < minMs / 10) n *= 2;
  }
  return (ops / total) * 1000;
}

/** What `translationsPerSecond` drives: a device's ATS-like translate and the guest's flush of its domain. */
export interface TranslationBenchTarget {
  translate(iova: number, write: boolean, pasid: number, out: WalkResult): WalkResult;
  flush(): void;
}

/**
 * Translations per second over `pages` distinct 4 KiB pages from `iova` (already mapped read-write), reads and
 * writes alternating, the domain flushed every `flushEveryRounds` passes so both IOTLB hits and full walks
 * are measured. Throws if a translation faults (the setup is wrong, not the figure).
 */
export function translationsPerSecond(target: TranslationBenchTarget, iova: number, pages: number, flushEveryRounds = 10): number {
  const out = newWalkResult();
  let page = 0;
  let round = 0;
  return opsPerSecond((n) => {
    for (let i = 0; i < n; i++) {
      if (page === 0 && round % flushEveryRounds === 0) target.flush();
      target.translate(iova + page * 4096 + 8, (page & 1) === 1, NO_PASID, out);
      if (!out.ok) throw new Error(`bench translation faulted at page ${page}`);
      if (++page === pages) {
        page = 0;
        round++;
      }
    }
  });
}
