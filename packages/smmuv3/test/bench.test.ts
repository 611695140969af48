import { describe, expect, it } from "vitest";
import { BenchRefused, measurePrepared, type FigureSpec } from "@viommu/core";
import { smmuv3Plugin } from "../src/plugin.js";

const figures = smmuv3Plugin.bench!;
const specs = figures.filter((f): f is FigureSpec => "prepare" in f);

describe("SMMUv3 bench figures", () => {
  it("are named smmuv3-…; the reported ones run to a finite figure (the figures themselves are not asserted)", () => {
    expect(figures.map((f) => f.name)).toEqual([
      "smmuv3-iotlb-hit-translate-vs-map",
      "smmuv3-iotlb-hit-dma-device-vs-map",
      "smmuv3-invalidations-through-driver",
      "smmuv3-dma-fill-and-invalidate",
      "smmuv3-audit-on-vs-off",
      "smmuv3-dirty-bitmap-ms-per-gib",
      "smmuv3-page-request-round-trip-us",
    ]);
    for (const f of figures) {
      if (!("run" in f)) continue; // interleaved figures are measured and verified by `viommu bench`
      const r = f.run();
      expect(Number.isFinite(r.value)).toBe(true);
    }
  });

  for (const spec of specs) {
    it(`${spec.name}: every round's work verifies, and sabotaged work is refused`, async () => {
      const good = await spec.prepare({ quick: true });
      try {
        const r = measurePrepared(spec, good, { rounds: 2, batchMs: 1 });
        expect(r.verified).toBe(true);
        if (good.sameOutputs === true) expect(good.model.run(32)).toBe(good.baseline!.run(32));
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
});
