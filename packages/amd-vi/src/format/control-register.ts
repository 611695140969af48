import { defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";
import { fieldRecord, type FieldRecord } from "./layout-tools.js";

/**
 * IOMMU Control register (MMIO 0x0018, spec x86.md B2.1). Bit numbers from Linux CONTROL_* (including
 * AMDESE/linux-iommu for NumIntRemapMode, EPHEn, GCR3TRPMode), the rest from Xen's union
 * amd_iommu_control and VirtualBox's IOMMU_CTRL_T (both AMD spec transcriptions).
 *
 * Bit 43: Linux and QEMU use [44:43] NumIntRemapMode; Xen and VirtualBox name bit 43 DomainIDPNE.
 * Following Linux. SNPAVICEn: Linux sets bit 61 only; the field is declared 3 bits wide like its feature
 * field EFR2.SNPAVICSup [7:5] (an inference; bits 63:62 are otherwise unassigned). Bit 42 is PprAutoRspAon
 * (spec, Xen, VirtualBox); one AMDESE vIOMMU branch defines it as 48, which is GDUpdateDis everywhere else.
 */
export const controlLayout = defineLayout("Control", 64, [
  { name: "IommuEn", bit: 0, width: 1 },
  { name: "HtTunEn", bit: 1, width: 1 },
  { name: "EventLogEn", bit: 2, width: 1 },
  { name: "EventIntEn", bit: 3, width: 1 },
  { name: "ComWaitIntEn", bit: 4, width: 1 },
  { name: "InvTimeOut", bit: 5, width: 3 },
  { name: "PassPW", bit: 8, width: 1 },
  { name: "ResPassPW", bit: 9, width: 1 },
  { name: "Coherent", bit: 10, width: 1 },
  { name: "Isoc", bit: 11, width: 1 },
  { name: "CmdBufEn", bit: 12, width: 1 },
  { name: "PPRLogEn", bit: 13, width: 1 },
  { name: "PPRIntEn", bit: 14, width: 1 },
  { name: "PPREn", bit: 15, width: 1 },
  { name: "GTEn", bit: 16, width: 1 },
  { name: "GAEn", bit: 17, width: 1 },
  { name: "CRW", bit: 18, width: 4 },
  { name: "SmiFEn", bit: 22, width: 1 },
  { name: "SlfWBdis", bit: 23, width: 1 },
  { name: "SmiFLogEn", bit: 24, width: 1 },
  { name: "GAMEn", bit: 25, width: 3 },
  { name: "GALogEn", bit: 28, width: 1 },
  { name: "GAIntEn", bit: 29, width: 1 },
  { name: "DualPprLogEn", bit: 30, width: 2 },
  { name: "DualEventLogEn", bit: 32, width: 2 },
  { name: "DevTblSegEn", bit: 34, width: 3 },
  { name: "PrivAbrtEn", bit: 37, width: 2 },
  { name: "PprAutoRspEn", bit: 39, width: 1 },
  { name: "MarcEn", bit: 40, width: 1 },
  { name: "BlkStopMrkEn", bit: 41, width: 1 },
  { name: "PprAutoRspAon", bit: 42, width: 1 },
  { name: "NumIntRemapMode", bit: 43, width: 2 },
  { name: "EPHEn", bit: 45, width: 1 },
  { name: "HADUpdate", bit: 46, width: 2 },
  { name: "GDUpdateDis", bit: 48, width: 1 },
  { name: "XTEn", bit: 50, width: 1 },
  { name: "IntCapXTEn", bit: 51, width: 1 },
  { name: "vCmdEn", bit: 52, width: 1 },
  { name: "vIommuEn", bit: 53, width: 1 },
  { name: "GAUpdateDis", bit: 54, width: 1 },
  { name: "GAPPIEn", bit: 55, width: 1 },
  { name: "GCR3TRPMode", bit: 58, width: 1 },
  { name: "IRTCacheDis", bit: 59, width: 1 },
  { name: "SNPAVICEn", bit: 61, width: 3 },
] as const);

export type ControlFields = Fields<typeof controlLayout>;

/** InvTimeOut encodings (Linux CTRL_INV_TO_*): 7 is reserved. */
export const InvTimeOut = { None: 0, Ms1: 1, Ms10: 2, Ms100: 3, S1: 4, S10: 5, S100: 6 } as const;

/** GAMEn value Linux writes for guest virtual APIC mode (CONTROL_GAM_EN sets bit 25 = value 1). */
export const GAMEN_VAPIC = 1;
/** NumIntRemapMode value for 2048 interrupts per device (Linux CONTROL_NUM_INT_REMAP_MODE_2K). */
export const NUM_INT_REMAP_MODE_2K = 1;

export function decodeControl(raw: RawBits): FieldRecord {
  return fieldRecord(controlLayout, raw);
}

export function encodeControl(fields: Partial<ControlFields>): RawBits {
  return encodeLayout(controlLayout, fields);
}

/** Control bit tests for the hot path (MMIO write handling), on the register's two halves. */
export function controlBit(lo: number, hi: number, bit: number): boolean {
  return bit < 32 ? ((lo >>> bit) & 1) === 1 : ((hi >>> (bit - 32)) & 1) === 1;
}
