import { describe, expect, it } from "vitest";
import { conformanceCases, runCase } from "@viommu/conformance";
import { hypervPlugin } from "../src/plugin.js";

describe("conformance on hyperv", () => {
  for (const kase of conformanceCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(hypervPlugin, kase, 1, []);
      if (result.status === "n/a") {
        expect(result.detail).toBeTruthy();
        // n/a only for a capability the plugin declares absent, with its reason.
        for (const cap of kase.requires) if (!hypervPlugin.capabilities[cap]) expect(hypervPlugin.capabilities.reasons?.[cap]).toBeTruthy();
      } else expect(result, result.detail).toMatchObject({ status: "pass" });
    });
  }
});
