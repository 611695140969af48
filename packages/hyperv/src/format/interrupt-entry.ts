import { defineLayout, type Fields } from "@viommu/core";
import { bits, defineByteLayout, struct, u32, u64, viewOf, type ByteCodec, type ByteFields, type ByteInit, type FlatFields } from "./byte-layout.js";

/**
 * hv_interrupt_entry and its payloads (spec arm-hyperv-virtio.md §5.2; Linux include/hyperv/hvgdk_mini.h):
 * source u32 @0, reserved1 u32 @4, then a union of the MSI entry and the IO-APIC RTE @8. The x86 MSI entry is
 * 8 bytes (entry 16 bytes), the arm64 one 16 bytes (entry 24 bytes), which shifts every later member of the
 * interrupt hypercalls.
 */
export type HvArch = "x64" | "arm64";

export const HvInterruptSource = {
  HV_INTERRUPT_SOURCE_MSI: 1,
  HV_INTERRUPT_SOURCE_IOAPIC: 2,
} as const;

/** union hv_msi_address_register (x86): the low 32 bits of the MSI address. */
export const msiAddressLayout = defineLayout("hv_msi_address_register", 32, [
  { name: "destination_mode", bit: 2, width: 1 },
  { name: "redirection_hint", bit: 3, width: 1 },
  { name: "destination_id", bit: 12, width: 8 },
  { name: "msi_base", bit: 20, width: 12 },
] as const);

/** union hv_msi_data_register (x86). */
export const msiDataLayout = defineLayout("hv_msi_data_register", 32, [
  { name: "vector", bit: 0, width: 8 },
  { name: "delivery_mode", bit: 8, width: 3 },
  { name: "level_assert", bit: 14, width: 1 },
  { name: "trigger_mode", bit: 15, width: 1 },
] as const);

/** union hv_msi_entry, x86: address then data, 8 bytes. */
export const msiEntryX64Layout = defineByteLayout("hv_msi_entry", 8, [
  { name: "address", offset: 0, codec: bits(msiAddressLayout, 4) },
  { name: "data", offset: 4, codec: bits(msiDataLayout, 4) },
] as const);

/** union hv_msi_entry, arm64: a full 64-bit address, 16 bytes. */
export const msiEntryArm64Layout = defineByteLayout("hv_msi_entry", 16, [
  { name: "address", offset: 0, codec: u64 },
  { name: "data", offset: 8, codec: u32 },
  { name: "reserved", offset: 12, codec: u32, reserved: true },
] as const);

/** union hv_ioapic_rte: an IO-APIC redirection table entry. */
export const ioapicRteLayout = defineLayout("hv_ioapic_rte", 64, [
  { name: "vector", bit: 0, width: 8 },
  { name: "delivery_mode", bit: 8, width: 3 },
  { name: "destination_mode", bit: 11, width: 1 },
  { name: "delivery_status", bit: 12, width: 1 },
  { name: "interrupt_polarity", bit: 13, width: 1 },
  { name: "remote_irr", bit: 14, width: 1 },
  { name: "trigger_mode", bit: 15, width: 1 },
  { name: "interrupt_mask", bit: 16, width: 1 },
  { name: "destination_id", bit: 56, width: 8 },
] as const);

export type MsiEntryX64 = ByteFields<typeof msiEntryX64Layout>;
export type MsiEntryArm64 = ByteFields<typeof msiEntryArm64Layout>;
export type IoapicRte = Fields<typeof ioapicRteLayout>;

/**
 * A decoded hv_interrupt_entry. The payload union is shown through the view its source selects: msi_entry for
 * MSI, ioapic_rte for IO-APIC (x86 only); for any other source neither view applies and `payload` holds the raw
 * bytes as little-endian 64-bit words.
 */
export interface HvInterruptEntry<A extends HvArch = HvArch> {
  readonly source: number;
  readonly reserved1: number;
  readonly msi_entry: (A extends "x64" ? MsiEntryX64 : MsiEntryArm64) | undefined;
  readonly ioapic_rte: IoapicRte | undefined;
  readonly payload: readonly bigint[];
}

export interface HvInterruptEntryInit<A extends HvArch = HvArch> {
  readonly source: number;
  readonly msi_entry?: A extends "x64" ? ByteInit<typeof msiEntryX64Layout> : ByteInit<typeof msiEntryArm64Layout>;
  readonly ioapic_rte?: Partial<IoapicRte>;
  /** Raw payload words, written only when neither view is given (an entry whose source selects no view). */
  readonly payload?: readonly bigint[];
}

export function interruptEntrySize(arch: HvArch): number {
  return arch === "x64" ? 16 : 24;
}

const ioapicRte = bits(ioapicRteLayout, 8);

/** The hv_interrupt_entry member codec for one architecture. */
export function interruptEntryCodec<A extends HvArch>(arch: A): ByteCodec<HvInterruptEntry<A>, HvInterruptEntryInit<A>> {
  const msiLayout = arch === "x64" ? msiEntryX64Layout : msiEntryArm64Layout;
  const msi = struct(msiLayout as typeof msiEntryX64Layout);
  const size = interruptEntrySize(arch);
  return {
    size,
    read(view, offset): HvInterruptEntry<A> {
      const source = view.getUint32(offset, true);
      const payload: bigint[] = [];
      for (let at = 8; at < size; at += 8) payload.push(view.getBigUint64(offset + at, true));
      return {
        source,
        reserved1: view.getUint32(offset + 4, true),
        msi_entry: source === HvInterruptSource.HV_INTERRUPT_SOURCE_MSI ? (msi.read(view, offset + 8) as HvInterruptEntry<A>["msi_entry"]) : undefined,
        ioapic_rte: arch === "x64" && source === HvInterruptSource.HV_INTERRUPT_SOURCE_IOAPIC ? ioapicRte.read(view, offset + 8) : undefined,
        payload,
      };
    },
    write(view, offset, value): void {
      if (value.msi_entry !== undefined && value.ioapic_rte !== undefined) throw new RangeError("hv_interrupt_entry: one payload view, not both");
      if (value.ioapic_rte !== undefined && arch !== "x64") throw new RangeError("hv_interrupt_entry: no IO-APIC RTE on arm64");
      u32.write(view, offset, value.source);
      if (value.msi_entry !== undefined) msi.write(view, offset + 8, value.msi_entry as ByteInit<typeof msiEntryX64Layout>);
      if (value.ioapic_rte !== undefined) ioapicRte.write(view, offset + 8, value.ioapic_rte);
      if (value.msi_entry === undefined && value.ioapic_rte === undefined && value.payload !== undefined) {
        if (value.payload.length > (size - 8) / 8) throw new RangeError(`hv_interrupt_entry: payload of ${value.payload.length} words`);
        value.payload.forEach((word, i) => u64.write(view, offset + 8 + 8 * i, word));
      }
    },
    flatten(value, prefix, out: FlatFields): void {
      out[`${prefix}.source`] = value.source;
      out[`${prefix}.reserved1`] = value.reserved1;
      if (value.msi_entry !== undefined) msi.flatten(value.msi_entry as MsiEntryX64, `${prefix}.msi_entry`, out);
      else if (value.ioapic_rte !== undefined) ioapicRte.flatten(value.ioapic_rte, `${prefix}.ioapic_rte`, out);
      else value.payload.forEach((word, i) => (out[`${prefix}.payload[${i}]`] = word));
    },
    problem(view, offset): string | undefined {
      if (view.getUint32(offset + 4, true) !== 0) return "hv_interrupt_entry.reserved1 is not zero";
      const source = view.getUint32(offset, true);
      if (source === HvInterruptSource.HV_INTERRUPT_SOURCE_MSI) return msi.problem(view, offset + 8);
      if (arch === "x64" && source === HvInterruptSource.HV_INTERRUPT_SOURCE_IOAPIC) return ioapicRte.problem(view, offset + 8);
      // Other sources select no view: Linux leaves MAP's logical_interrupt_entry all zero (source 0), so the
      // source itself is a semantic check for the VMM, not a reserved-bit one.
      return undefined;
    },
  };
}

export const interruptEntryX64 = interruptEntryCodec("x64");
export const interruptEntryArm64 = interruptEntryCodec("arm64");

/** Decodes an interrupt entry from bytes (e.g. the one HVCALL_MAP_DEVICE_INTERRUPT returned). */
export function readInterruptEntry<A extends HvArch>(arch: A, bytes: Uint8Array, offset = 0): HvInterruptEntry<A> {
  if (offset < 0 || offset + interruptEntrySize(arch) > bytes.length) throw new RangeError(`hv_interrupt_entry: ${interruptEntrySize(arch)} bytes at ${offset} exceed ${bytes.length}`);
  return interruptEntryCodec(arch).read(viewOf(bytes), offset);
}

/**
 * The MSI message Linux composes from the entry the root partition got back (arch/x86/hyperv/irqdomain.c
 * entry_to_msi_msg): address_lo = the entry's address word, address_hi = 0, data = the data word.
 */
export function msiMessageOf(entryBytes: Uint8Array): { address_lo: number; address_hi: number; data: number } {
  const view = viewOf(entryBytes);
  return { address_lo: view.getUint32(8, true), address_hi: 0, data: view.getUint32(12, true) };
}
