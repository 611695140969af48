import { describe, expect, it } from "vitest";
import { conformanceCases, runCase } from "@viommu/conformance";
import { smmuv3Plugin } from "@viommu/smmuv3";
import { tegra241CmdqvPlugin } from "../src/plugin.js";
import { tegra241Cases } from "./tegra241-cases.js";

/** The seed of the randomised cases (the hostile campaign): VIOMMU_SEED to replay a failure. */
const SEED = Number(process.env.VIOMMU_SEED ?? 1);

describe("conformance on tegra241-cmdqv (the vendor-neutral suite, then the vQUEUE cases)", () => {
  for (const kase of [...conformanceCases, ...tegra241Cases]) {
    it(`${kase.id}: ${kase.rule}`, () => {
      const result = runCase(tegra241CmdqvPlugin, kase, SEED, [smmuv3Plugin]);
      if (result.status === "n/a") expect(result.detail).toBeTruthy();
      else expect(result, `seed ${SEED}: ${result.detail}`).toMatchObject({ status: "pass" });
    });
  }
});

describe("the n/a set of tegra241-cmdqv", () => {
  it("is exactly the cases its declared-absent capabilities explain, each with the vendor's reason", () => {
    const plugin = tegra241CmdqvPlugin;
    const na = conformanceCases.filter((k) => k.requires.some((cap) => !plugin.capabilities[cap]));
    expect(na.map((k) => k.id).sort()).toEqual(["device-interrupt-posted", "event-interrupt-direct", "interrupt-remapping-blocks-invalid", "interrupt-remapping-delivers", "interrupt-remapping-fault-reported", "ir-only-mode", "shadow-interrupt-remap-keeps-translation"]);
    for (const k of na) for (const cap of k.requires) if (!plugin.capabilities[cap]) expect(plugin.capabilities.reasons?.[cap], `${k.id}: ${cap}`).toBeTruthy();
  });
});
