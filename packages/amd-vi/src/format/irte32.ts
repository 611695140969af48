import { defineLayout, encodeLayout, type DecodedStructure, type Fields, type RawBits } from "@viommu/core";
import { fieldRecord } from "./layout-tools.js";

/**
 * 32-bit (legacy) interrupt remapping table entry, used when Control.GAEn = 0 (spec x86.md B5.2; Linux
 * union irte, QEMU union irte, VirtualBox IRTE_T): [0] RemapEn, [1] SupIOPF, [4:2] IntType, [5] RqEoi,
 * [6] DM (1 = logical), [7] GuestMode (QEMU's and VirtualBox's name; Linux rsvd_1; must be 0 in this
 * format), [15:8] Destination, [23:16] Vector, [31:24] reserved.
 *
 * IntType: QEMU accepts only 0 (fixed) and 1 (arbitrated); Linux writes the APIC delivery mode.
 */
export const irte32Layout = defineLayout("IRTE32", 32, [
  { name: "RemapEn", bit: 0, width: 1 },
  { name: "SupIOPF", bit: 1, width: 1 },
  { name: "IntType", bit: 2, width: 3 },
  { name: "RqEoi", bit: 5, width: 1 },
  { name: "DM", bit: 6, width: 1 },
  { name: "GuestMode", bit: 7, width: 1 },
  { name: "Destination", bit: 8, width: 8 },
  { name: "Vector", bit: 16, width: 8 },
] as const);

export type Irte32Fields = Fields<typeof irte32Layout>;
export const IRTE32_BYTES = 4;

/** Decodes the 32-bit entry (raw bits of 32, or the low half of a 64-bit word as the CLI passes it). */
export function decodeIrte32(raw: RawBits): DecodedStructure {
  const fields = fieldRecord(irte32Layout, raw.length === 1 ? raw : raw.subarray(0, 1));
  return { name: "IRTE", code: Number(fields["RemapEn"]), fields };
}

export function encodeIrte32(fields: Partial<Irte32Fields>): number {
  return encodeLayout(irte32Layout, fields)[0]!;
}

/** The entry Linux irte_prepare writes: valid, delivery mode, destination mode, APIC ID, vector. */
export function linuxIrte32(options: { vector: number; destination: number; logical?: boolean; deliveryMode?: number }): number {
  return encodeIrte32({
    RemapEn: 1,
    IntType: options.deliveryMode ?? 0,
    DM: options.logical ? 1 : 0,
    Destination: options.destination,
    Vector: options.vector,
  });
}
