import { describe, expect, it } from "vitest";
import { conformanceCases, runCase } from "@viommu/conformance";
import { amdViPlugin, createAmdViPlugin } from "../src/plugin.js";

describe("conformance on amd-vi (nested, hardware vIOMMU)", () => {
  for (const kase of conformanceCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(amdViPlugin, kase, 1, []);
      if (result.status === "n/a") expect(result.detail).toBeTruthy();
      else expect(result, result.detail).toMatchObject({ status: "pass" });
    });
  }
});

describe("conformance on amd-vi with the command buffer trapped by the VMM", () => {
  const trapped = createAmdViPlugin({ commandBuffer: "trapped" });
  for (const kase of conformanceCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(trapped, kase, 1, []);
      if (result.status === "n/a") expect(result.detail).toBeTruthy();
      else expect(result, result.detail).toMatchObject({ status: "pass" });
    });
  }
});
