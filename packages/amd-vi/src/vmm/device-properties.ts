import { PROPERTY_ON_OFF, PROPERTY_ON_OFF_AUTO, type DeviceProperty } from "@viommu/core";

/** What the emulated IOMMU offers its guest, as QEMU's amd-iommu properties set it. */
export interface AmdViDeviceConfig {
  /** EFR.XTSup: 32-bit x2APIC destinations in 128-bit IRTEs and the XT interrupt control registers. */
  readonly xtsup: boolean;
  /** Interrupt remapping: the IVRS lists the IOAPIC (Linux remaps only then) and MSIs go through the IRTs. */
  readonly intremap: boolean;
  /** IotlbSup in the IVHD flags and the IOMMU capability header: device TLBs (ATS) offered. */
  readonly deviceIotlb: boolean;
}

/**
 * The properties under QEMU's names: hw/i386/amd_iommu.c amdvi_properties ("xtsup", QEMU 8.0 on) and
 * hw/i386/x86-iommu.c x86_iommu_properties ("intremap", "device-iotlb", "pt"). Defaults are this unit's; where
 * QEMU's differ (xtsup and device-iotlb are off in QEMU) the description says so.
 * - xtsup: QEMU sets AMDVI_FEATURE_XT in the EFR (amdvi_extended_feature_register).
 * - intremap: QEMU's build_amd_iommu lists the IOAPIC SPECIAL entry only with interrupt remapping
 *   (x86_iommu_ir_supported), and amdvi_int_remap_msi passes MSIs untranslated without it.
 * - device-iotlb: QEMU sets IotlbSup in the IVHD flags and the capability header from x86_iommu dt_supported
 *   (QEMU commit "i386/amd-iommu: Set IotlbSup based on x86_iommu::dt_supported"; QEMU 7.2 sets it always).
 * - pt: AMD-Vi has no pass-through capability bit to clear (a DTE with V clear or Mode 0 always passes), so
 *   only "on" is accepted.
 */
export const amdViProperties: readonly DeviceProperty[] = [
  { name: "xtsup", description: "EFR.XTSup: x2APIC (32-bit) destinations in 128-bit IRTEs (QEMU's default is off)", values: PROPERTY_ON_OFF, defaultValue: "on" },
  { name: "intremap", description: "interrupt remapping: the IVRS IOAPIC entry, MSIs remapped through the guest's IRTs (x86-iommu; auto = on)", values: PROPERTY_ON_OFF_AUTO, defaultValue: "auto" },
  { name: "device-iotlb", description: "IotlbSup in the IVHD flags and the IOMMU capability header (x86-iommu; QEMU's default is off)", values: PROPERTY_ON_OFF, defaultValue: "on" },
  {
    name: "pt",
    description: "pass-through (x86-iommu): always on for AMD-Vi",
    values: PROPERTY_ON_OFF,
    defaultValue: "on",
    check: (v) => (v === "off" ? "AMD-Vi has no pass-through capability to withdraw: a DTE with V clear or Mode 0 passes DMA through on every AMD IOMMU" : undefined),
  },
];

/** The configuration from the properties given (already checked against `amdViProperties` by core). */
export function amdViDeviceConfig(properties: Readonly<Record<string, string>> | undefined): AmdViDeviceConfig {
  const p = properties ?? {};
  return { xtsup: p["xtsup"] !== "off", intremap: p["intremap"] !== "off", deviceIotlb: p["device-iotlb"] !== "off" };
}
