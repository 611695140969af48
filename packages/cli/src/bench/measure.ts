/** One figure of `viommu bench`, in the shared JSON shape. */
export interface Figure {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly baseline?: number;
  readonly ratio?: number;
  readonly note?: string;
}

/**
 * Operations per second of `batch(n)` (which performs n operations), measured over at least `minMs`
 * after a warm-up, so the JIT has settled. Wall-clock: benchmarks measure, tests never assert on them.
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

export function round(value: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
