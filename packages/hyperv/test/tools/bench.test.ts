/**
 * The Hyper-V bench figures verify their own work: each model and baseline batch checks out on a correct system,
 * and each figure's sabotage (a missing flush, a page left mapped) makes it refuse. Timing is never asserted.
 */
import { describe, expect, it } from "vitest";
import type { FigureSpec, Prepared } from "@viommu/core";
import { hypervPlugin } from "../../src/plugin.js";
import { createHypervBenchFigures } from "../../src/tools/bench.js";

/** One batch: NaN or a failed check is a refusal (the string says why); undefined when it checks out. */
function refusal(p: Prepared, n: number): string | undefined {
  const model = p.model.run(n);
  if (Number.isNaN(model)) return "model batch failed";
  const problem = p.model.verify?.();
  if (problem !== undefined) return problem;
  if (p.baseline !== undefined) {
    const base = p.baseline.run(n);
    if (Number.isNaN(base)) return "baseline batch failed";
    if (p.sameOutputs === true && base !== model) return `checksums differ: ${model} vs ${base}`;
    return p.baseline.verify?.();
  }
  return undefined;
}

describe("hyperv bench figures", () => {
  const figures = createHypervBenchFigures(() => hypervPlugin) as readonly FigureSpec[];

  it("are the plugin's, all FigureSpecs with a same-run baseline", () => {
    expect(hypervPlugin.bench?.map((f) => f.name)).toEqual(["hyperv-iotlb-hit-translate-vs-map", "hyperv-audit-on-vs-off", "hyperv-invalidations-through-driver", "hyperv-dma-fill-and-invalidate", "hyperv-s2-map-reps"]);
    for (const f of figures) expect("prepare" in f).toBe(true);
  });

  for (const figure of createHypervBenchFigures(() => hypervPlugin) as readonly FigureSpec[]) {
    it(`${figure.name}: every batch checks out, and the sabotaged work is refused`, async () => {
      const p = await figure.prepare({ quick: true });
      try {
        for (const n of [1, 64, 3000]) expect(refusal(p, n), `${figure.name} n=${n}`).toBeUndefined();
        expect(p.sabotage).toBeDefined();
        p.sabotage!();
        expect(refusal(p, 4096), `${figure.name} after sabotage`).toBeDefined();
      } finally {
        p.dispose?.();
      }
    });
  }
});
