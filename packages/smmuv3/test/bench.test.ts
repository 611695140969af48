import { describe, expect, it } from "vitest";
import { smmuv3Plugin } from "../src/plugin.js";

describe("SMMUv3 bench figures", () => {
  it("are named smmuv3-… and each runs to a finite figure (the figures themselves are not asserted)", () => {
    const figures = smmuv3Plugin.bench!;
    expect(figures.map((f) => f.name)).toEqual(["smmuv3-translations-per-s", "smmuv3-commands-per-s", "smmuv3-dirty-bitmap-ms-per-gib", "smmuv3-page-request-round-trip-us"]);
    for (const f of figures) {
      if (!("run" in f)) continue; // interleaved figures are measured and verified by `viommu bench`
      const r = f.run();
      expect(Number.isFinite(r.value)).toBe(true);
    }
  });
});
