import type { AcpiTool } from "@viommu/core";
import { decodeIortFields } from "./iort-fields.js";
import { buildIort, DEFAULT_SMMU_BASE, smmuGsivs } from "../vmm/iort-builder.js";

/**
 * `viommu acpi --vendor smmuv3`: the IORT for one SMMUv3 at QEMU virt's address with its PCI root complex, and
 * `viommu acpi --decode` of any IORT (QEMU's, firmware's) field by field as iasl prints it.
 */
export const smmuv3Acpi: AcpiTool = {
  signature: "IORT",
  generate(): Uint8Array {
    return buildIort({ smmuBase: DEFAULT_SMMU_BASE, gsivs: smmuGsivs(0) });
  },
  decode: decodeIortFields,
};
