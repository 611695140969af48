import { describe, expect, it } from "vitest";
import { conformanceCases, runCase } from "@viommu/conformance";
import { amdViPlugin, createAmdViPlugin } from "../src/plugin.js";

/** The seed of the randomised cases (the hostile campaign): VIOMMU_SEED to replay a failure. */
const SEED = Number(process.env.VIOMMU_SEED ?? 1);

describe("conformance on amd-vi (nested, hardware vIOMMU)", () => {
  for (const kase of conformanceCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(amdViPlugin, kase, SEED, []);
      if (result.status === "n/a") expect(result.detail).toBeTruthy();
      else expect(result, `seed ${SEED}: ${result.detail}`).toMatchObject({ status: "pass" });
    });
  }
});

describe("conformance on amd-vi with the command buffer trapped by the VMM", () => {
  const trapped = createAmdViPlugin({ commandBuffer: "trapped" });
  for (const kase of conformanceCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(trapped, kase, SEED, []);
      if (result.status === "n/a") expect(result.detail).toBeTruthy();
      else expect(result, `seed ${SEED}: ${result.detail}`).toMatchObject({ status: "pass" });
    });
  }
});

describe("the n/a set of amd-vi", () => {
  it("is exactly the cases its declared-absent capabilities explain, each with the vendor's reason", () => {
    const plugin = amdViPlugin;
    const na = conformanceCases.filter((k) => k.requires.some((cap) => !plugin.capabilities[cap]));
    expect(na.map((k) => k.id).sort()).toEqual([]);
    for (const k of na) for (const cap of k.requires) if (!plugin.capabilities[cap]) expect(plugin.capabilities.reasons?.[cap], `${k.id}: ${cap}`).toBeTruthy();
  });
});

describe("the n/a set of amd-vi (trapped command buffer)", () => {
  it("is exactly the cases its declared-absent capabilities explain, each with the vendor's reason", () => {
    const plugin = createAmdViPlugin({ commandBuffer: "trapped" });
    const na = conformanceCases.filter((k) => k.requires.some((cap) => !plugin.capabilities[cap]));
    expect(na.map((k) => k.id).sort()).toEqual(["event-interrupt-direct", "vqueue-invalidation-without-exits"]);
    for (const k of na) for (const cap of k.requires) if (!plugin.capabilities[cap]) expect(plugin.capabilities.reasons?.[cap], `${k.id}: ${cap}`).toBeTruthy();
  });
});
