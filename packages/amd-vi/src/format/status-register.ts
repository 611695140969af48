import { defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";
import { fieldRecord, type FieldRecord } from "./layout-tools.js";

/**
 * IOMMU Status register (MMIO 0x2020, spec x86.md B2.5). Bits 0–10 from Linux MMIO_STATUS_* and QEMU;
 * bits 11–18 (dual logs, PPR early overflow) from the AMD specification as VirtualBox's IOMMU_STATUS_T
 * lays it out.
 *
 * Bits 8–10: Linux (which drives the GA log) has 8 GALogRun, 9 GALogOverflow, 10 GAInt; Xen has 8 overflow,
 * 9 interrupt, 10 run. Following Linux (VirtualBox agrees with Linux).
 */
export const statusLayout = defineLayout("Status", 64, [
  { name: "EventOverflow", bit: 0, width: 1 },
  { name: "EventLogInt", bit: 1, width: 1 },
  { name: "ComWaitInt", bit: 2, width: 1 },
  { name: "EventLogRun", bit: 3, width: 1 },
  { name: "CmdBufRun", bit: 4, width: 1 },
  { name: "PPROverflow", bit: 5, width: 1 },
  { name: "PPRInt", bit: 6, width: 1 },
  { name: "PPRLogRun", bit: 7, width: 1 },
  { name: "GALogRun", bit: 8, width: 1 },
  { name: "GALogOverflow", bit: 9, width: 1 },
  { name: "GAInt", bit: 10, width: 1 },
  { name: "PPROverflowB", bit: 11, width: 1 },
  { name: "PPRLogActive", bit: 12, width: 1 },
  { name: "EventOverflowB", bit: 15, width: 1 },
  { name: "EventLogActive", bit: 16, width: 1 },
  { name: "PPROverflowEarlyB", bit: 17, width: 1 },
  { name: "PPROverflowEarly", bit: 18, width: 1 },
] as const);

export type StatusFields = Fields<typeof statusLayout>;

/** Status bits software clears by writing 1 (the overflow and interrupt bits of B2.5). QEMU's low byte is 0x67. */
export const STATUS_W1C_MASK = 0x667;
/** Status bits software cannot write (the "run" bits). QEMU's low byte is 0x98. */
export const STATUS_READ_ONLY_MASK = 0x198;

export const StatusBit = {
  EventOverflow: 1 << 0,
  EventLogInt: 1 << 1,
  ComWaitInt: 1 << 2,
  EventLogRun: 1 << 3,
  CmdBufRun: 1 << 4,
  PPROverflow: 1 << 5,
  PPRInt: 1 << 6,
  PPRLogRun: 1 << 7,
  GALogRun: 1 << 8,
  GALogOverflow: 1 << 9,
  GAInt: 1 << 10,
} as const;

export function decodeStatus(raw: RawBits): FieldRecord {
  return fieldRecord(statusLayout, raw);
}

export function encodeStatus(fields: Partial<StatusFields>): RawBits {
  return encodeLayout(statusLayout, fields);
}

/** The status value after software writes `written` to it: W1C bits named in `written` clear, the rest stay. */
export function statusAfterWrite(current: number, written: number): number {
  return (current & ~(written & STATUS_W1C_MASK)) >>> 0;
}
