import type { AcpiTool } from "@viommu/core";
import { emulatedFeatures } from "../vmm/emulated-features.js";
import { AMDVI_DEFAULT_MMIO_BASE } from "../vmm/amd-vi-device.js";
import { buildIvrs } from "../vmm/ivrs-builder.js";
import { decodeIvrsFields } from "./ivrs-fields.js";

/**
 * `viommu acpi --vendor amd-vi`: the IVRS the VMM publishes for one emulated IOMMU in nested mode at its
 * default base, with IVHD 10h and 11h (iasl cannot disassemble 40h); `--decode` lists an IVRS someone else
 * built field by field as iasl -d does.
 */
export const amdViAcpiTool: AcpiTool = {
  signature: "IVRS",
  generate(): Uint8Array {
    return buildIvrs({ mmioBase: AMDVI_DEFAULT_MMIO_BASE, iommuDeviceId: 0x0002, features: emulatedFeatures("nested", false) });
  },
  decode: decodeIvrsFields,
};
