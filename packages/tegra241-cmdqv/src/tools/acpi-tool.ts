import type { AcpiTool } from "@viommu/core";
import { buildIort, DEFAULT_SMMU_BASE, smmuGsivs } from "@viommu/smmuv3";
import { buildCmdqvSsdt, qemuCmdqvAcpiDevice } from "../format/acpi-device.js";
import { iortSmmuIdentifier } from "../vmm/cmdqv-acpi.js";
import { defaultCmdqvPlacement } from "../vmm/tegra241-device.js";

/**
 * `viommu acpi --vendor tegra241-cmdqv`: the SSDT declaring the NVDA200C device of a one-VINTF CMDQV at the
 * VMM's default address, its _UID the SMMUv3 node of the IORT `viommu acpi --vendor smmuv3` writes (the two
 * tables go together). No `decode`: the CMDQV has no ACPI table of its own, only AML in a definition block (iasl -d
 * answers an SSDT with ASL source, not offset/field lines to compare with); the IORT it pairs with is decoded by
 * `viommu acpi --decode` under smmuv3.
 */
export const tegra241Acpi: AcpiTool = {
  signature: "SSDT",
  generate(): Uint8Array {
    const iort = { signature: "IORT", bytes: buildIort({ smmuBase: DEFAULT_SMMU_BASE, gsivs: smmuGsivs(0) }) };
    const placement = defaultCmdqvPlacement(0);
    return buildCmdqvSsdt([qemuCmdqvAcpiDevice(0, iortSmmuIdentifier([iort]), placement.base, placement.gsiv)]);
  },
};
