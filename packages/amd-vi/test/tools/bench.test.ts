import { describe, expect, it } from "vitest";
import type { FigureSpec } from "@viommu/core";
import { checkInterleavedFigures } from "../../../../test-support/bench-figures.js";
import { amdViPlugin } from "../../src/plugin.js";

const specs = (amdViPlugin.bench ?? []).filter((f): f is FigureSpec => "prepare" in f);

describe("bench figures", () => {
  it("are named amd-vi-… and every one runs, reporting numbers (values are not asserted)", () => {
    const figures = amdViPlugin.bench ?? [];
    expect(figures.map((f) => f.name)).toEqual([
      "amd-vi-translations-per-s",
      "amd-vi-commands-per-s",
      "amd-vi-invalidations-through-driver",
      "amd-vi-dma-fill-and-invalidate",
      "amd-vi-interventions-per-1000-invalidations-trapped",
      "amd-vi-interventions-per-1000-invalidations-hw-vqueue",
      "amd-vi-swiotlb-bytes-copied",
      "amd-vi-dirty-bitmap-read-per-gib",
      "amd-vi-page-request-round-trip",
      "amd-vi-interventions-per-1000-msis-remapped",
      "amd-vi-interventions-per-1000-msis-posted",
    ]);
    for (const f of figures) {
      if (!("run" in f)) continue; // interleaved figures are measured and verified by `viommu bench`
      const r = f.run();
      expect(Number.isFinite(r.value), f.name).toBe(true);
      // What each figure verified about its own work shows in what it reports.
      if (f.name === "amd-vi-swiotlb-bytes-copied") expect(r).toMatchObject({ value: 2 ** 21, baseline: 0 });
      if (f.name === "amd-vi-interventions-per-1000-msis-remapped") expect(r).toMatchObject({ value: 1000, baseline: 0 });
      if (f.name === "amd-vi-interventions-per-1000-msis-posted") expect(r).toMatchObject({ value: 0, baseline: 1000 });
    }
  }, 120_000);

  checkInterleavedFigures(specs);
});
