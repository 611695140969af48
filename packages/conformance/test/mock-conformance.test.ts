import { describe, expect, it } from "vitest";
import { mockPlugin } from "@viommu/example-mock/plugin";
import { conformanceCases, runCase } from "../src/index.js";

describe("conformance on the mock vendor", () => {
  for (const kase of conformanceCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(mockPlugin, kase, 1, []);
      if (result.status === "n/a") expect(result.detail).toBeTruthy();
      else expect(result, result.detail).toMatchObject({ status: "pass" });
    });
  }
});
