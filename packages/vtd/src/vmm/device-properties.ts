import { err, ok, PROPERTY_ON_OFF, PROPERTY_ON_OFF_AUTO, type DeviceProperty, type Result, type TranslationMode } from "@viommu/core";

/**
 * What the emulated unit offers its guest, as QEMU's intel-iommu properties set it (hw/i386/intel_iommu.c
 * vtd_properties, hw/i386/x86-iommu.c x86_iommu_properties; the CAP/ECAP bits each sets are vtd_cap_init's).
 */
export interface VtdDeviceConfig {
  /** CAP.CM. */
  readonly cachingMode: boolean;
  /** aw-bits: CAP.MGAW + 1, the SAGAW widths up to it, the DMAR's HAW + 1, the host address width of the tables. */
  readonly awBits: 39 | 48;
  /** ECAP.EIM. */
  readonly eim: boolean;
  /** ECAP.IR. */
  readonly intremap: boolean;
  /** ECAP.DT. */
  readonly deviceIotlb: boolean;
  /** ECAP.SMTS with first-level tables (FLTS), and the scalable-mode features on it (PRS, PASID). */
  readonly scalable: boolean;
  /** ECAP.PASID and PSS. */
  readonly pasid: boolean;
  /** ECAP.SC (and SNP then allowed in second-level leaves). */
  readonly snoopControl: boolean;
  /** CAP.FL1GP. */
  readonly fs1gp: boolean;
  /** ECAP.PT. */
  readonly pt: boolean;
  /** CAP.DRD and CAP.DWD. */
  readonly dmaDrain: boolean;
}

/**
 * The properties under QEMU's names. QEMU has no "scalable-mode" (7.2 and current both name it
 * "x-scalable-mode"), so only that name is taken. Defaults are this unit's: where QEMU's differ (caching-mode,
 * device-iotlb and dma-drain are off, on and on in QEMU) the description says so.
 */
export const vtdProperties: readonly DeviceProperty[] = [
  { name: "caching-mode", description: "CAP.CM: the guest announces not-present to present changes (QEMU's default is off, but QEMU refuses an assigned device without it; so does this VMM when it translates DMA)", values: PROPERTY_ON_OFF, defaultValue: "on" },
  {
    name: "aw-bits",
    description: "guest address width: CAP.MGAW + 1, SAGAW 39-bit (and 48-bit at 48), the DMAR's Host Address Width",
    defaultValue: "48",
    check: (v) => (v === "39" || v === "48" ? undefined : v === "57" ? "57-bit (5-level) guest tables are not offered: QEMU accepts only 39 and 48 (vtd_decide_config)" : "QEMU accepts only 39 and 48"),
  },
  { name: "eim", description: "ECAP.EIM: x2APIC (32-bit) interrupt destinations; needs intremap", values: PROPERTY_ON_OFF_AUTO, defaultValue: "auto" },
  { name: "intremap", description: "ECAP.IR: interrupt remapping (x86-iommu)", values: PROPERTY_ON_OFF_AUTO, defaultValue: "auto" },
  { name: "device-iotlb", description: "ECAP.DT: device-TLBs (ATS) in context entries (x86-iommu; QEMU's default is off)", values: PROPERTY_ON_OFF, defaultValue: "on" },
  { name: "pt", description: "ECAP.PT: pass-through translation type (x86-iommu)", values: PROPERTY_ON_OFF, defaultValue: "on" },
  { name: "x-scalable-mode", description: "ECAP.SMTS with first-level tables (ECAP.FLTS, as QEMU's x-flts): scalable-mode root tables, PASIDs and page requests; off leaves legacy mode only", values: PROPERTY_ON_OFF, defaultValue: "on" },
  { name: "x-pasid-mode", description: "ECAP.PASID with 20-bit PASIDs (PSS 19): the VMM attaches each guest PASID; needs scalable mode and nesting (default: on when nesting, off otherwise)", values: PROPERTY_ON_OFF, defaultValue: "off" },
  { name: "snoop-control", description: "ECAP.SC: SNP honoured in second-level leaves", values: PROPERTY_ON_OFF, defaultValue: "off" },
  { name: "fs1gp", description: "CAP.FL1GP (CAP bit 56): 1 GiB first-level pages", values: PROPERTY_ON_OFF, defaultValue: "on" },
  { name: "dma-drain", description: "CAP.DRD and CAP.DWD: read and write draining (QEMU's default is on)", values: PROPERTY_ON_OFF, defaultValue: "off" },
];

/**
 * The unit's configuration from the properties given (already checked against `vtdProperties` by core) and the
 * translation mode; a combination QEMU refuses, or one this VMM cannot honour in `mode`, is EINVAL naming it.
 */
export function vtdDeviceConfig(mode: TranslationMode, properties: Readonly<Record<string, string>> = {}): Result<VtdDeviceConfig> {
  const p = (name: string): string | undefined => properties[name];
  const translating = mode !== "ir-only";
  const on = (name: string, otherwise: boolean): boolean => (p(name) === undefined || p(name) === "auto" ? otherwise : p(name) === "on");
  const cachingMode = on("caching-mode", translating);
  if (translating && !cachingMode) return err("EINVAL", `caching-mode=off: a VMM that ${mode === "nested" ? "nests" : "shadows"} the guest's tables for assigned devices needs to see every map (QEMU refuses device assignment without caching-mode=on)`);
  const intremap = on("intremap", true);
  if (!intremap && mode === "ir-only") return err("EINVAL", "intremap=off in interrupt-remapping-only mode leaves the unit nothing to do");
  if (p("eim") === "on" && !intremap) return err("EINVAL", "eim=on cannot be selected without intremap=on (QEMU vtd_decide_config)");
  const eim = intremap && on("eim", true);
  const scalable = on("x-scalable-mode", true);
  if (!scalable && mode === "nested") return err("EINVAL", "x-scalable-mode=off: nesting needs the guest's first-level tables, which only scalable mode has");
  const pasid = on("x-pasid-mode", mode === "nested");
  if (pasid && !scalable) return err("EINVAL", "x-pasid-mode=on needs x-scalable-mode=on (QEMU vtd_decide_config)");
  if (pasid && mode !== "nested") return err("EINVAL", `x-pasid-mode=on in ${mode} mode: a shadowing VMM keeps no address space per PASID`);
  return ok({
    cachingMode,
    awBits: p("aw-bits") === "39" ? 39 : 48,
    eim,
    intremap,
    deviceIotlb: on("device-iotlb", true),
    scalable,
    pasid,
    snoopControl: on("snoop-control", false),
    fs1gp: on("fs1gp", true),
    pt: on("pt", true),
    dmaDrain: on("dma-drain", false),
  });
}
