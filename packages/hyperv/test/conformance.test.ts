import { describe, expect, it } from "vitest";
import { conformanceCases, runCase } from "@viommu/conformance";
import { hypervPlugin } from "../src/plugin.js";

/** The seed of the randomised cases (the hostile campaign): VIOMMU_SEED to replay a failure. */
const SEED = Number(process.env.VIOMMU_SEED ?? 1);

describe("conformance on hyperv", () => {
  for (const kase of conformanceCases) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(hypervPlugin, kase, SEED, []);
      if (result.status === "n/a") {
        expect(result.detail).toBeTruthy();
        // n/a only for a capability the plugin declares absent, with its reason.
        for (const cap of kase.requires) if (!hypervPlugin.capabilities[cap]) expect(hypervPlugin.capabilities.reasons?.[cap]).toBeTruthy();
      } else expect(result, `seed ${SEED}: ${result.detail}`).toMatchObject({ status: "pass" });
    });
  }
});

describe("the n/a set of hyperv", () => {
  it("is exactly the cases its declared-absent capabilities explain, each with the vendor's reason", () => {
    const plugin = hypervPlugin;
    const na = conformanceCases.filter((k) => k.requires.some((cap) => !plugin.capabilities[cap]));
    expect(na.map((k) => k.id).sort()).toEqual(["cross-vm-isolation-shadow", "device-interrupt-posted", "dirty-tracking", "dma-fault-reported", "event-interrupt-delivery", "event-interrupt-direct", "event-log-overflow-reported", "event-log-rebase", "event-log-wrap", "faults-name-guest-ids", "interrupt-remapping-fault-reported", "live-migration-precopy", "non-affiliated-event", "page-request-resolved", "pasid-attach-separates", "shadow-interrupt-remap-keeps-translation", "shadow-mode-translation", "shadow-type1-entry-limit", "sriov-faults-stay-in-their-vm", "sva-shares-process-addresses", "vqueue-invalidation-without-exits"]);
    for (const k of na) for (const cap of k.requires) if (!plugin.capabilities[cap]) expect(plugin.capabilities.reasons?.[cap], `${k.id}: ${cap}`).toBeTruthy();
  });
});
