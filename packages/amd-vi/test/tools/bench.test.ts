import { describe, expect, it } from "vitest";
import { amdViPlugin } from "../../src/plugin.js";

describe("bench figures", () => {
  it("are named amd-vi-… and every one runs, reporting numbers (values are not asserted)", () => {
    const figures = amdViPlugin.bench ?? [];
    expect(figures.map((f) => f.name)).toEqual([
      "amd-vi-translations-per-s",
      "amd-vi-commands-per-s",
      "amd-vi-interventions-per-1000-invalidations-trapped",
      "amd-vi-interventions-per-1000-invalidations-hw-vqueue",
      "amd-vi-swiotlb-bytes-copied",
    ]);
    for (const f of figures) {
      const r = f.run();
      expect(Number.isFinite(r.value), f.name).toBe(true);
    }
  }, 60_000);
});
