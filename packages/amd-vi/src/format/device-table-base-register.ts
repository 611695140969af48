import { defineLayout, encodeLayout, type RawBits } from "@viommu/core";
import { fieldRecord, type FieldRecord } from "./layout-tools.js";

/**
 * Device Table Base Address register (MMIO 0x0000, spec x86.md B1): [8:0] Size, [51:12] DevTabBase.
 * The table is (Size + 1) × 4 KiB and holds (Size + 1) × 128 entries of 32 bytes; Linux writes
 * Size = dev_table_size / 4096 − 1 (init.c iommu_set_device_table).
 */
export const deviceTableBaseLayout = defineLayout("DeviceTableBase", 64, [
  { name: "Size", bit: 0, width: 9 },
  { name: "DevTabBase", bit: 12, width: 40, shift: 12 },
] as const);

/**
 * Device Table Segment n Base Address registers (MMIO 0x0100 + 8(n−1), n = 1..7, used when
 * Control.DevTblSegEn is set): [7:0] Size, [51:12] base (AMD spec rev 3.05 as VirtualBox lays it out).
 */
export const deviceTableSegmentBaseLayout = defineLayout("DeviceTableSegmentBase", 64, [
  { name: "Size", bit: 0, width: 8 },
  { name: "DevTabBase", bit: 12, width: 40, shift: 12 },
] as const);

export const DEVICE_TABLE_ENTRY_BYTES = 32;

/** Bytes of the device table a Size value describes. */
export function deviceTableBytes(size: number): number {
  return (size + 1) * 4096;
}

/** How many 32-byte entries (DeviceIDs 0..n−1) the table holds for a Size value. */
export function deviceTableEntries(size: number): number {
  return (size + 1) * 128;
}

/** Size field for a table that must cover DeviceIDs 0..lastDeviceId (Linux: a power-of-two table, here the exact minimum). */
export function deviceTableSizeFor(lastDeviceId: number): number {
  return Math.ceil(((lastDeviceId + 1) * DEVICE_TABLE_ENTRY_BYTES) / 4096) - 1;
}

export function decodeDeviceTableBase(raw: RawBits): FieldRecord {
  return fieldRecord(deviceTableBaseLayout, raw);
}

export function encodeDeviceTableBase(base: number, size: number): RawBits {
  return encodeLayout(deviceTableBaseLayout, { DevTabBase: base, Size: size });
}
