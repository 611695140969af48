import { describe, expect, it } from "vitest";
import { conformanceCases, runCase, type ConformanceCase } from "@viommu/conformance";
import type { VendorPlugin } from "@viommu/core";
import { amdViPlugin, createAmdViPlugin } from "../src/plugin.js";

/**
 * Cases AMD-Vi answers differently on purpose, with how it fails them. shadow-type1-entry-limit still expects
 * the guest's map beyond the type1 limit to succeed silently; AMD-Vi tells the guest instead: the flush of the
 * refused mapping halts the command buffer with ILLEGAL_COMMAND_ERROR, so the reference driver's map reports
 * the Completion-Wait timeout Linux would (see AmdViDevice.carriedOut). When the case accepts a visible
 * refusal this expectation fails, and the entry goes.
 */
const VISIBLE_REFUSALS: Readonly<Record<string, RegExp>> = { "shadow-type1-entry-limit": /^map: ETIMEDOUT \(Completion-Wait loop timed out\)$/ };

function run(plugin: VendorPlugin, kase: ConformanceCase): void {
  const result = runCase(plugin, kase, 1, []);
  const refusal = VISIBLE_REFUSALS[kase.id];
  if (refusal !== undefined) {
    expect(result.status).toBe("fail");
    expect(result.detail).toMatch(refusal);
  } else if (result.status === "n/a") expect(result.detail).toBeTruthy();
  else expect(result, result.detail).toMatchObject({ status: "pass" });
}

describe("conformance on amd-vi (nested, hardware vIOMMU)", () => {
  for (const kase of conformanceCases) it(`${kase.id}: ${kase.rule}`, () => run(amdViPlugin, kase));
});

describe("conformance on amd-vi with the command buffer trapped by the VMM", () => {
  const trapped = createAmdViPlugin({ commandBuffer: "trapped" });
  for (const kase of conformanceCases) it(`${kase.id}: ${kase.rule}`, () => run(trapped, kase));
});
