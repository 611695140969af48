import { describe, expect, it } from "vitest";
import type { FigureSpec } from "@viommu/core";
import { checkInterleavedFigures } from "../../../../test-support/bench-figures.js";
import { vtdPlugin } from "../../src/plugin.js";

const specs = (vtdPlugin.bench ?? []).filter((f): f is FigureSpec => "prepare" in f);

describe("VT-d interleaved bench figures", () => {
  it("include the invalidations through the reference driver, with and without a DMA fill", () => {
    expect(specs.map((s) => s.name)).toEqual(["vtd-invalidations-through-driver", "vtd-dma-fill-and-invalidate"]);
  });

  checkInterleavedFigures(specs);
});
