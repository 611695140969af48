import { describe, expect, it } from "vitest";
import { BenchRefused, measurePrepared, type FigureSpec } from "@viommu/core";
import { tegra241CmdqvPlugin } from "../../src/plugin.js";

const specs = tegra241CmdqvPlugin.bench!.filter((f): f is FigureSpec => "prepare" in f);

describe("Tegra241 interleaved invalidation figures", () => {
  it("are VCMDQ vs trapped CMDQ, without and with the VM exit cost", () => {
    expect(specs.map((s) => s.name)).toEqual(["tegra241-vcmdq-vs-trapped-invalidation", "tegra241-vcmdq-vs-trapped-invalidation-with-exit-cost"]);
  });

  for (const spec of specs) {
    it(`${spec.name}: every round verifies (each invalidation removed its entry), sabotaged work is refused`, async () => {
      const good = await spec.prepare({ quick: true });
      try {
        expect(measurePrepared(spec, good, { rounds: 2, batchMs: 1 }).verified).toBe(true);
        expect(good.model.run(16)).toBe(good.baseline!.run(16));
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
