import { describe, expect, it } from "vitest";
import type { FigureSpec } from "@viommu/core";
import { checkInterleavedFigures } from "../../../test-support/bench-figures.js";
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

  checkInterleavedFigures(specs);
});
