import { describe, expect, it } from "vitest";
import { mockPlugin } from "@viommu/example-mock/plugin";
import { conformanceCases, runCase } from "../src/index.js";

const SEED = Number(process.env.VIOMMU_SEED ?? 1);

describe("conformance on the mock vendor", () => {
  for (const kase of conformanceCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(mockPlugin, kase, SEED, []);
      if (result.status === "n/a") expect(result.detail).toBeTruthy();
      else expect(result, `seed ${SEED}: ${result.detail}`).toMatchObject({ status: "pass" });
    });
  }

  it("has exactly the n/a cases its capabilities explain", () => {
    const na = conformanceCases.filter((k) => k.requires.some((cap) => !mockPlugin.capabilities[cap])).map((k) => k.id);
    expect(na.sort()).toEqual(["device-interrupt-posted", "event-interrupt-direct", "page-request-resolved", "pasid-attach-separates", "sva-shares-process-addresses"]);
  });
});
