import { describe, expect, expectTypeOf, it } from "vitest";
import type { EmulatedIommu, GuestIommuDriver, PhysicalIommu, VendorPlugin, ViommuOps } from "@viommu/core";
import { ArmVsmmu, Smmuv3Device, Smmuv3GuestDriver, Smmuv3Unit, smmuv3Plugin } from "../src/index.js";
import pkg from "../package.json" with { type: "json" };

describe("the SMMUv3 package against the plugin contract", () => {
  it("implements each half of the contract at the type level", () => {
    expectTypeOf<Smmuv3Unit>().toMatchTypeOf<PhysicalIommu>();
    expectTypeOf<ArmVsmmu>().toMatchTypeOf<ViommuOps>();
    expectTypeOf<Smmuv3Device>().toMatchTypeOf<EmulatedIommu>();
    expectTypeOf<Smmuv3GuestDriver>().toMatchTypeOf<GuestIommuDriver>();
    expectTypeOf(smmuv3Plugin).toMatchTypeOf<VendorPlugin>();
  });

  it("declares its plugin in package.json and exports it from ./plugin", async () => {
    expect(pkg.viommu.plugin).toBe("./plugin");
    const mod = (await import("../src/plugin.js")) as { default: VendorPlugin };
    expect(mod.default).toBe(smmuv3Plugin);
    expect(smmuv3Plugin.types).toEqual({ viommu: 1, veventq: 1, hwInfo: 2, hwptData: 2, invalidateData: 1 });
  });
});
