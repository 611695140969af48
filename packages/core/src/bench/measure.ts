/**
 * Operations per second of `batch(n)` (which performs n operations), measured over at least `minMs` after a
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
