import { describe, expect, it } from "vitest";
import { conformanceCases, runCase } from "@viommu/conformance";
import { smmuv3Plugin } from "../src/plugin.js";

describe("conformance on SMMUv3", () => {
  for (const kase of conformanceCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(smmuv3Plugin, kase, 1, []);
      if (result.status === "n/a") expect(result.detail).toBeTruthy();
      else expect(result, result.detail).toMatchObject({ status: "pass" });
      // The isolation cases run whole fuzzed systems; the machine they run on is shared.
    }, 30_000);
  }
});
