import { describe, expect, it } from "vitest";
import { conformanceCases, runCase } from "@viommu/conformance";
import { vtdPlugin } from "../src/plugin.js";
import { vtdFaultRegisterCases } from "./vtd-cases.js";

/** The seed of the randomised cases (the hostile campaign): VIOMMU_SEED to replay a failure. */
const SEED = Number(process.env.VIOMMU_SEED ?? 1);

describe("conformance on Intel VT-d", () => {
  for (const kase of conformanceCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(vtdPlugin, kase, SEED, []);
      if (result.status === "n/a") expect(result.detail).toBeTruthy();
      else expect(result, result.detail).toMatchObject({ status: "pass" });
    });
  }

  it("declares a reason for every case that does not apply", () => {
    const na = conformanceCases.map((k) => runCase(vtdPlugin, k, 1, [])).filter((r) => r.status === "n/a");
    // VT-d has no event log in guest memory (faults go to registers) and no guest-owned queue.
    expect(na.map((r) => r.id).sort()).toEqual(["event-interrupt-direct", "event-log-rebase", "vqueue-invalidation-without-exits"]);
  });
});

describe("VT-d's own cases: the event rules on fault-recording registers", () => {
  for (const kase of vtdFaultRegisterCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(vtdPlugin, kase, SEED, []);
      expect(result, result.detail).toMatchObject({ status: "pass" });
    });
  }
});
