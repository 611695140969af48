import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";

/**
 * Posted-interrupt descriptor: 512 bits (64-byte aligned) that a posted IRTE's PDA names. Intel VT-d spec §9.12
 * (and the Intel SDM's VMX posted-interrupt descriptor, which is the same structure); bit positions as Linux
 * `struct pi_desc` (arch/x86/include/asm/posted_intr.h) comments them: PIR [255:0], one bit per vector; ON
 * (outstanding notification) 256; SN (suppress notification) 257; [271:258] reserved; NV (notification vector)
 * [279:272]; [287:280] reserved; NDST (notification destination) [319:288], the APIC id in bits [303:296] in
 * xAPIC mode and all 32 bits with x2APIC; [511:320] reserved. Not in ../shared/spec/ (see the package report).
 */
export const postedInterruptDescriptorLayout = defineLayout("pi_desc", 512, [
  { name: "ON", bit: 256, width: 1 },
  { name: "SN", bit: 257, width: 1 },
  { name: "NV", bit: 272, width: 8 },
  { name: "NDST", bit: 288, width: 32 },
] as const);

export type PostedInterruptDescriptorFields = Fields<typeof postedInterruptDescriptorLayout>;

/** Bytes of a descriptor, and its alignment. */
export const PI_DESC_BYTES = 64;

/** Byte offsets of the control word's parts within the descriptor (for in-place updates without decoding). */
export const PiDescOffset = {
  /** PIR: 8 dwords, vector v at dword v >> 5, bit v & 31. */
  PIR: 0,
  /** ON (bit 0) and SN (bit 1) in the dword at 32; NV in its byte 2. */
  CONTROL: 32,
  NDST: 36,
} as const;

export const PI_DESC_ON = 1 << 0;
export const PI_DESC_SN = 1 << 1;

export function decodePostedInterruptDescriptor(raw: RawBits): PostedInterruptDescriptorFields & { readonly PIR: readonly number[] } {
  const pir: number[] = [];
  for (let v = 0; v < 256; v++) if ((raw[v >>> 5]! >>> (v & 31)) & 1) pir.push(v);
  return { ...decodeLayout(postedInterruptDescriptorLayout, raw), PIR: pir };
}

/** A descriptor with `pir` vectors requested and the control fields given. */
export function encodePostedInterruptDescriptor(fields: Partial<PostedInterruptDescriptorFields> & { readonly PIR?: readonly number[] }): RawBits {
  const { PIR, ...control } = fields;
  const raw = encodeLayout(postedInterruptDescriptorLayout, control);
  for (const v of PIR ?? []) {
    if (!Number.isInteger(v) || v < 0 || v > 255) throw new RangeError(`vector ${v}`);
    raw[v >>> 5] = (raw[v >>> 5]! | (1 << (v & 31))) >>> 0;
  }
  return raw;
}

/** The NDST value for physical APIC id `apicId`: bits [15:8] in xAPIC mode (`(dest << 8) & 0xFF00`, as KVM writes it), all 32 bits with x2APIC. */
export function piDescNdst(apicId: number, x2apic: boolean): number {
  return x2apic ? apicId >>> 0 : (apicId << 8) & 0xff00;
}
