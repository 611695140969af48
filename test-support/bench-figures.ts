import { expect, it } from "vitest";
import { BenchRefused, measurePrepared, type FigureSpec } from "@viommu/core";

export interface InterleavedFigureChecks {
  /** The test's title after the figure's name. */
  readonly title?: string;
  /** Operations both sides run to compare checksums. */
  readonly batch?: number;
  /** The figure must declare that model and baseline compute the same outputs (else they are compared only when it does). */
  readonly sameOutputs?: boolean;
}

/**
 * One test per interleaved figure: a prepared figure measures with every round verified (and, when model and
 * baseline compute the same outputs, their checksums agree); a freshly prepared one, sabotaged, is refused.
 */
export function checkInterleavedFigures(specs: readonly FigureSpec[], checks: InterleavedFigureChecks = {}): void {
  const batch = checks.batch ?? 32;
  for (const spec of specs) {
    it(`${spec.name}: ${checks.title ?? "every round's work verifies, and sabotaged work is refused"}`, async () => {
      const good = await spec.prepare({ quick: true });
      try {
        expect(measurePrepared(spec, good, { rounds: 2, batchMs: 1 }).verified).toBe(true);
        if (checks.sameOutputs === true) expect(good.sameOutputs).toBe(true);
        if (good.sameOutputs === true) expect(good.model.run(batch)).toBe(good.baseline!.run(batch));
      } finally {
        good.dispose?.();
      }
      const bad = await spec.prepare({ quick: true });
      try {
        bad.sabotage!();
        expect(() => measurePrepared(spec, bad, { rounds: 2, batchMs: 1 })).toThrow(BenchRefused);
      } finally {
        bad.dispose?.();
      }
    }, 60_000);
  }
}
