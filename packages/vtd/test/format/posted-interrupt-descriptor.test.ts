import { describe, expect, it } from "vitest";
import { toWords64 } from "@viommu/core";
import {
  decodePostedInterruptDescriptor,
  encodePostedInterruptDescriptor,
  PI_DESC_BYTES,
  PI_DESC_ON,
  PI_DESC_SN,
  PiDescOffset,
  piDescNdst,
  postedInterruptDescriptorLayout,
} from "../../src/format/posted-interrupt-descriptor.js";

const hex = (w: readonly bigint[]): string[] => w.map((x) => `0x${x.toString(16)}`);

/**
 * Positions from the specification's posted-interrupt descriptor (VT-d §9.12, the VMX descriptor of the Intel
 * SDM) as Linux's `struct pi_desc` comments them (arch/x86/include/asm/posted_intr.h): PIR [255:0], ON 256,
 * SN 257, NV [279:272], NDST [319:288].
 */
describe("posted-interrupt descriptor", () => {
  it("lays ON, SN, NV and NDST out at bits 256, 257, [279:272] and [319:288] of a 512-bit, 64-byte structure", () => {
    expect(postedInterruptDescriptorLayout.bits).toBe(512);
    expect(PI_DESC_BYTES).toBe(64);
    expect(postedInterruptDescriptorLayout.fields.map((f) => [f.name, f.bit, f.width])).toEqual([
      ["ON", 256, 1],
      ["SN", 257, 1],
      ["NV", 272, 8],
      ["NDST", 288, 32],
    ]);
    expect([PiDescOffset.PIR, PiDescOffset.CONTROL, PiDescOffset.NDST, PI_DESC_ON, PI_DESC_SN]).toEqual([0, 32, 36, 1, 2]);
  });

  it("encodes a known descriptor word for word: vectors 0x45 and 0xf2 in PIR, ON, NV 0xf2, x2APIC NDST 3", () => {
    const raw = encodePostedInterruptDescriptor({ PIR: [0x45, 0xf2], ON: 1, SN: 0, NV: 0xf2, NDST: 3 });
    // PIR bit 0x45 is qword 1 bit 5; bit 0xf2 is qword 3 bit 50; control qword 4 = NDST << 32 | NV << 16 | ON.
    expect(hex(toWords64(raw))).toEqual(hex([0n, 1n << 5n, 0n, 1n << 50n, (3n << 32n) | (0xf2n << 16n) | 1n, 0n, 0n, 0n]));
    expect(decodePostedInterruptDescriptor(raw)).toEqual({ ON: 1, SN: 0, NV: 0xf2, NDST: 3, PIR: [0x45, 0xf2] });
  });

  it("puts an xAPIC destination in NDST[15:8] (bits 303:296) and an x2APIC one in all 32 bits, as KVM writes them", () => {
    expect(piDescNdst(5, false)).toBe(0x500);
    expect(piDescNdst(0x1_0005, true)).toBe(0x1_0005);
    const raw = encodePostedInterruptDescriptor({ NDST: piDescNdst(0x7f, false) });
    expect((toWords64(raw)[4]! >> 40n) & 0xffn).toBe(0x7fn);
  });

  it("refuses a vector outside 0–255", () => {
    expect(() => encodePostedInterruptDescriptor({ PIR: [256] })).toThrow(RangeError);
  });
});
