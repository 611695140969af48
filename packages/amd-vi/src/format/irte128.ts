import { defineLayout, encodeLayout, type DecodedStructure, type Fields, type Layout, type RawBits } from "@viommu/core";
import { fieldRecord } from "./layout-tools.js";

/**
 * 128-bit interrupt remapping table entry, used when Control.GAEn = 1 (spec x86.md B5.3; Linux union
 * irte_ga_lo / irte_ga_hi, QEMU struct irte_ga). Two forms, chosen by GuestMode (bit 7):
 *
 * Remapped (GuestMode = 0): [0] RemapEn, [1] SupIOPF, [4:2] IntType, [5] RqEoi, [6] DM, [31:8]
 * Destination[23:0], [63:32] GATag (Linux; QEMU reserves it), [71:64] Vector, [127:120] Destination[31:24]
 * (used with Control.XTEn = 1).
 *
 * Guest virtual APIC (GuestMode = 1): [0] RemapEn, [1] SupIOPF, [2] GALogIntr, [5] GAPPIDis (AMD's
 * posted "GAPPI disable" series, EFR2.GAPPIDisSup; reserved before), [6] IsRun, [31:8] Destination[23:0]
 * (the host APIC of the running vCPU), [63:32] GATag, [71:64] Vector (guest vector), [115:76] GA root
 * pointer (the vAPIC backing page, SPA[51:12]), [127:120] Destination[31:24].
 */
export const irte128RemapLayout = defineLayout("IRTE128", 128, [
  { name: "RemapEn", bit: 0, width: 1 },
  { name: "SupIOPF", bit: 1, width: 1 },
  { name: "IntType", bit: 2, width: 3 },
  { name: "RqEoi", bit: 5, width: 1 },
  { name: "DM", bit: 6, width: 1 },
  { name: "GuestMode", bit: 7, width: 1 },
  { name: "Destination_23_0", bit: 8, width: 24 },
  { name: "GATag", bit: 32, width: 32 },
  { name: "Vector", bit: 64, width: 8 },
  { name: "Destination_31_24", bit: 120, width: 8 },
] as const);

export const irte128VapicLayout = defineLayout("IRTE128_VAPIC", 128, [
  { name: "RemapEn", bit: 0, width: 1 },
  { name: "SupIOPF", bit: 1, width: 1 },
  { name: "GALogIntr", bit: 2, width: 1 },
  { name: "GAPPIDis", bit: 5, width: 1 },
  { name: "IsRun", bit: 6, width: 1 },
  { name: "GuestMode", bit: 7, width: 1 },
  { name: "Destination_23_0", bit: 8, width: 24 },
  { name: "GATag", bit: 32, width: 32 },
  { name: "Vector", bit: 64, width: 8 },
  { name: "GARootPtr", bit: 76, width: 40, shift: 12 },
  { name: "Destination_31_24", bit: 120, width: 8 },
] as const);

export type Irte128RemapFields = Fields<typeof irte128RemapLayout>;
export type Irte128VapicFields = Fields<typeof irte128VapicLayout>;
export const IRTE128_BYTES = 16;

export function irte128Layout(raw: RawBits): Layout {
  return (raw[0]! & 0x80) !== 0 ? irte128VapicLayout : irte128RemapLayout;
}

/** The 32-bit destination (Destination[31:24] joined to Destination[23:0]); hot path, no allocation. */
export function irte128Destination(raw: RawBits): number {
  return (raw[3]! >>> 24) * 2 ** 24 + (raw[0]! >>> 8);
}

export function decodeIrte128(raw: RawBits): DecodedStructure {
  const guestMode = (raw[0]! >>> 7) & 1;
  const fields = fieldRecord(irte128Layout(raw), raw);
  fields["Destination"] = irte128Destination(raw);
  return { name: guestMode ? "GUEST_VIRTUAL_APIC" : "REMAPPED", code: guestMode, fields };
}

export function encodeIrte128Remap(fields: Partial<Irte128RemapFields>): RawBits {
  return encodeLayout(irte128RemapLayout, fields);
}

export function encodeIrte128Vapic(fields: Partial<Irte128VapicFields>): RawBits {
  return encodeLayout(irte128VapicLayout, { ...fields, GuestMode: 1 });
}

/**
 * The remapped-form entry Linux irte_ga_prepare writes: delivery mode, destination mode, the APIC ID split
 * by APICID_TO_IRTE_DEST_LO/HI, vector, valid.
 */
export function linuxIrte128(options: { vector: number; destination: number; logical?: boolean; deliveryMode?: number }): RawBits {
  return encodeIrte128Remap({
    RemapEn: 1,
    IntType: options.deliveryMode ?? 0,
    DM: options.logical ? 1 : 0,
    Destination_23_0: options.destination & 0xffffff,
    Destination_31_24: Math.floor(options.destination / 2 ** 24) & 0xff,
    Vector: options.vector,
  });
}
