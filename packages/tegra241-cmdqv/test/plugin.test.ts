import { describe, expect, expectTypeOf, it } from "vitest";
import { acpiTableProblem, Platform, type VendorPlugin } from "@viommu/core";
import { smmuv3Plugin, Smmuv3Unit } from "@viommu/smmuv3";
import { findCmdqvDevices } from "../src/guest/cmdqv-acpi-probe.js";
import { Tegra241CmdqvDriver } from "../src/hw/cmdqv-driver.js";
import { tegra241CmdqvPlugin } from "../src/plugin.js";
import { DEFAULT_CMDQV_BASE, DEFAULT_CMDQV_GSIV } from "../src/vmm/tegra241-device.js";

describe("the tegra241-cmdqv plugin", () => {
  it("extends smmuv3: its capabilities plus the vQUEUE, the Tegra uapi types", () => {
    expectTypeOf(tegra241CmdqvPlugin).toMatchTypeOf<VendorPlugin>();
    expect(tegra241CmdqvPlugin).toMatchObject({ id: "tegra241-cmdqv", extends: "smmuv3" });
    expect(tegra241CmdqvPlugin.capabilities).toMatchObject({ ...smmuv3Plugin.capabilities, vqueue: true, reasons: expect.any(Object) });
    expect(tegra241CmdqvPlugin.capabilities.reasons?.vqueue).toBeUndefined();
    expect(tegra241CmdqvPlugin.types).toMatchObject({ viommu: 2, hwQueue: 1, veventq: 2, hwInfo: 3, hwptData: 2, invalidateData: 1 });
    expect(tegra241CmdqvPlugin.bench?.map((b) => b.name)).toEqual(["tegra241-vcmdq-vs-trapped-invalidation", "tegra241-vcmdq-vs-trapped-invalidation-with-exit-cost", "tegra241-interventions-per-1000-invalidations"]);
  });

  it("builds SMMUv3 units with a CMDQV each, numbered apart although they report the parent's vendor", () => {
    const platform = new Platform({ plugins: [smmuv3Plugin, tegra241CmdqvPlugin] });
    const a = platform.createUnit("tegra241-cmdqv");
    const b = platform.createUnit("tegra241-cmdqv");
    expect(a.ok && b.ok).toBe(true);
    const units = platform.host.units as Smmuv3Unit[];
    expect(units.every((u) => u instanceof Smmuv3Unit && u.extension instanceof Tegra241CmdqvDriver)).toBe(true);
    expect(units.map((u) => u.name)).toEqual(["smmu0", "smmu1"]);
    expect((units[1]!.extension as Tegra241CmdqvDriver).hw.physicalBase).not.toBe((units[0]!.extension as Tegra241CmdqvDriver).hw.physicalBase);
    platform.dispose();
  });

  it("`viommu acpi` writes a valid SSDT whose NVDA200C device names the IORT SMMUv3 node of `viommu acpi --vendor smmuv3`", () => {
    const ssdt = tegra241CmdqvPlugin.acpi!.generate();
    expect(tegra241CmdqvPlugin.acpi!.signature).toBe("SSDT");
    expect(acpiTableProblem(ssdt)).toBeUndefined();
    expect(findCmdqvDevices(ssdt)).toEqual([{ uid: 1, base: DEFAULT_CMDQV_BASE, length: 0x50000, gsiv: DEFAULT_CMDQV_GSIV }]);
  });
});
