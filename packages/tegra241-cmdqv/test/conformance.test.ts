import { describe, expect, it } from "vitest";
import { conformanceCases, runCase } from "@viommu/conformance";
import { smmuv3Plugin } from "@viommu/smmuv3";
import { tegra241CmdqvPlugin } from "../src/plugin.js";
import { tegra241Cases } from "./tegra241-cases.js";

describe("conformance on tegra241-cmdqv (the vendor-neutral suite, then the vQUEUE cases)", () => {
  for (const kase of [...conformanceCases, ...tegra241Cases]) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(tegra241CmdqvPlugin, kase, 1, [smmuv3Plugin]);
      if (result.status === "n/a") expect(result.detail).toBeTruthy();
      else expect(result, result.detail).toMatchObject({ status: "pass" });
    });
  }
});
