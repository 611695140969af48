import { defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";
import { fieldRecord, type FieldRecord } from "./layout-tools.js";

/**
 * Guest virtual APIC (GA) log: the tail-address register (MMIO 0x00E8, [51:3] where the IOMMU writes the
 * log's tail) and the 8-byte log entry (spec x86.md B1, B5.3; Linux GA_TAG / GA_DEVID / GA_REQ_TYPE).
 */
export const gaLogTailAddressLayout = defineLayout("GaLogTailAddress", 64, [
  { name: "GATAddr", bit: 3, width: 49, shift: 3 },
] as const);

/** One GA log entry: [31:0] GATag, [47:32] DeviceID, [63:60] type (1 = GUEST_NR: vCPU not running). */
export const gaLogEntryLayout = defineLayout("GaLogEntry", 64, [
  { name: "GATag", bit: 0, width: 32 },
  { name: "DeviceID", bit: 32, width: 16 },
  { name: "Type", bit: 60, width: 4 },
] as const);

export type GaLogEntryFields = Fields<typeof gaLogEntryLayout>;

export const GA_LOG_ENTRY_BYTES = 8;
export const GaLogType = { GUEST_NR: 1 } as const;

export function decodeGaLogEntry(raw: RawBits): FieldRecord {
  return fieldRecord(gaLogEntryLayout, raw);
}

export function encodeGaLogEntry(fields: Partial<GaLogEntryFields>): RawBits {
  return encodeLayout(gaLogEntryLayout, fields);
}
