import { describe, expect, it } from "vitest";
import { BenchRefused, measurePrepared, type FigureSpec } from "@viommu/core";
import { vtdPlugin } from "../../src/plugin.js";

const specs = (vtdPlugin.bench ?? []).filter((f): f is FigureSpec => "prepare" in f);

describe("VT-d interleaved bench figures", () => {
  it("include the invalidations through the reference driver, with and without a DMA fill", () => {
    expect(specs.map((s) => s.name)).toEqual(["vtd-invalidations-through-driver", "vtd-dma-fill-and-invalidate"]);
  });

  for (const spec of specs) {
    it(`${spec.name}: every round's work verifies, and sabotaged work is refused`, async () => {
      const good = await spec.prepare({ quick: true });
      try {
        expect(measurePrepared(spec, good, { rounds: 2, batchMs: 1 }).verified).toBe(true);
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
