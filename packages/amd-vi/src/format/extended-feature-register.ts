import { defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";
import { fieldRecord, type FieldRecord } from "./layout-tools.js";

/**
 * Extended Feature Register (MMIO 0x0030, also copied into IVHD 11h/40h; spec x86.md B2.2).
 * Bit numbers: Linux FEATURE_* (AMDESE/linux-iommu has the newest: HATS, GATS, GLX, PASMAX, GIOSUP,
 * HASUP, EPHSUP, HDSUP, VIOMMU, SNP), Xen's union amd_iommu_ext_features and VirtualBox IOMMU_EFR_T
 * for the rest. Disagreements: bit 62 is ForcePhyDestSup in VirtualBox and reserved in Xen; bit 63 is
 * SNPSup in Linux and reserved in Xen (older specification). Following Linux, and VirtualBox where Linux
 * is silent. Bits 26, 27, 30, 47 and 53 are reserved.
 */
export const efrLayout = defineLayout("ExtendedFeature", 64, [
  { name: "PrefSup", bit: 0, width: 1 },
  { name: "PPRSup", bit: 1, width: 1 },
  { name: "XTSup", bit: 2, width: 1 },
  { name: "NXSup", bit: 3, width: 1 },
  { name: "GTSup", bit: 4, width: 1 },
  { name: "GAPPISup", bit: 5, width: 1 },
  { name: "IASup", bit: 6, width: 1 },
  { name: "GASup", bit: 7, width: 1 },
  { name: "HESup", bit: 8, width: 1 },
  { name: "PCSup", bit: 9, width: 1 },
  { name: "HATS", bit: 10, width: 2 },
  { name: "GATS", bit: 12, width: 2 },
  { name: "GLXSup", bit: 14, width: 2 },
  { name: "SmiFSup", bit: 16, width: 2 },
  { name: "SmiFRC", bit: 18, width: 3 },
  { name: "GAMSup", bit: 21, width: 3 },
  { name: "DualPprLogSup", bit: 24, width: 2 },
  { name: "DualEventLogSup", bit: 28, width: 2 },
  { name: "SATSSup", bit: 31, width: 1 },
  { name: "PASmax", bit: 32, width: 5 },
  { name: "USSup", bit: 37, width: 1 },
  { name: "DevTblSegSup", bit: 38, width: 2 },
  { name: "PprOvrflwEarlySup", bit: 40, width: 1 },
  { name: "PPRAutoRspSup", bit: 41, width: 1 },
  { name: "MarcSup", bit: 42, width: 2 },
  { name: "BlkStopMrkSup", bit: 44, width: 1 },
  { name: "PerfOptSup", bit: 45, width: 1 },
  { name: "MsiCapMmioSup", bit: 46, width: 1 },
  { name: "GIoSup", bit: 48, width: 1 },
  { name: "HASup", bit: 49, width: 1 },
  { name: "EPHSup", bit: 50, width: 1 },
  { name: "AttrFWSup", bit: 51, width: 1 },
  { name: "HDSup", bit: 52, width: 1 },
  { name: "InvIotlbTypeSup", bit: 54, width: 1 },
  { name: "vIommuSup", bit: 55, width: 1 },
  { name: "VmGuardIOSup", bit: 56, width: 1 },
  { name: "VmTableSize", bit: 57, width: 4 },
  { name: "GAUpdateDisSup", bit: 61, width: 1 },
  { name: "ForcePhyDestSup", bit: 62, width: 1 },
  { name: "SNPSup", bit: 63, width: 1 },
] as const);

/**
 * Extended Feature 2 Register (MMIO 0x01A0; spec x86.md B2.3; AMDESE/linux-iommu FEATURE_*: SEVSNPIO_SUP,
 * GCR3TRPMODE, SNPAVICSUP, NUM_INT_REMAP_SUP, HT_RANGE_IGNORE; GAPPIDisSup bit 4 from AMD's posted
 * "GAPPI disable" series). QEMU numint2k sets bit 8.
 */
export const efr2Layout = defineLayout("ExtendedFeature2", 64, [
  { name: "SEVSNPIOSup", bit: 1, width: 1 },
  { name: "GCR3TRPModeSup", bit: 3, width: 1 },
  { name: "GAPPIDisSup", bit: 4, width: 1 },
  { name: "SNPAVICSup", bit: 5, width: 3 },
  { name: "NumIntRemapSup", bit: 8, width: 2 },
  { name: "HtRangeIgnore", bit: 11, width: 1 },
] as const);

export type EfrFields = Fields<typeof efrLayout>;
export type Efr2Fields = Fields<typeof efr2Layout>;

/** EFR bit 63: the IOMMU supports SEV-SNP (B10.2). Its own constant so SNP checks read as such. */
export const EFR_SNPSUP_BIT = 63;

/** HATS value 3: host (v1) translation not supported (Linux sets amd_iommu_hatdis; QEMU with dma-translation off). */
export const HATS_HOST_TRANSLATION_DISABLED = 3;

export function decodeEfr(raw: RawBits): FieldRecord {
  return fieldRecord(efrLayout, raw);
}

export function encodeEfr(fields: Partial<EfrFields>): RawBits {
  return encodeLayout(efrLayout, fields);
}

export function decodeEfr2(raw: RawBits): FieldRecord {
  return fieldRecord(efr2Layout, raw);
}

export function encodeEfr2(fields: Partial<Efr2Fields>): RawBits {
  return encodeLayout(efr2Layout, fields);
}

/** Whether EFR.SNPSup is set, from the register's high half. */
export function efrSnpSupported(efrHi: number): boolean {
  return ((efrHi >>> (EFR_SNPSUP_BIT - 32)) & 1) === 1;
}

/**
 * Host (v1) page-table levels HATS allows: Linux computes the VA size as (HATS + 3) × 9 + 21, so 0 = 4
 * levels (48 bits), 1 = 5 (57), 2 = 6 (64); 3 means host translation is unsupported (undefined here).
 */
export function hatsMaxLevels(hats: number): number | undefined {
  return hats >= 0 && hats <= 2 ? hats + 4 : undefined;
}

/** Guest (v2) page-table levels GATS allows: 0 = 4-level, 1 = 5-level (Linux uses 5 only with GATS = 1 and LA57). */
export function gatsMaxLevels(gats: number): number | undefined {
  return gats === 0 ? 4 : gats === 1 ? 5 : undefined;
}

/** Largest PASID the IOMMU supports: 2^(PASmax + 1) − 1 (Linux caps the driver at 16 bits). */
export function maxPasid(pasMax: number): number {
  return 2 ** (pasMax + 1) - 1;
}

/**
 * QEMU's default EFR (hw/i386/amd_iommu.h AMDVI_DEFAULT_EXT_FEATURES): PrefSup, PPRSup, IASup, GTSup,
 * HESup, GASup, HATS = 2 and GATS = 2 as QEMU writes them.
 */
export const QEMU_DEFAULT_EFR = 0x2_9d3n;
