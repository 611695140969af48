import { describe, expect, it } from "vitest";
import type { FigureSpec } from "@viommu/core";
import { checkInterleavedFigures } from "../../../../test-support/bench-figures.js";
import { tegra241CmdqvPlugin } from "../../src/plugin.js";

const specs = tegra241CmdqvPlugin.bench!.filter((f): f is FigureSpec => "prepare" in f);

describe("Tegra241 interleaved invalidation figures", () => {
  it("are VCMDQ vs trapped CMDQ, without and with the VM exit cost", () => {
    expect(specs.map((s) => s.name)).toEqual(["tegra241-vcmdq-vs-trapped-invalidation", "tegra241-vcmdq-vs-trapped-invalidation-with-exit-cost"]);
  });

  checkInterleavedFigures(specs, { title: "every round verifies (each invalidation removed its entry), sabotaged work is refused", batch: 16, sameOutputs: true });
});
