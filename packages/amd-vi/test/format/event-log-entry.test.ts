import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromWords64, toHex64 } from "@viommu/core";
import { EventCode, EventFlag, buildIoPageFaultEvent, decodeEvent, encodeEvent, eventFlags, eventLayout } from "../../src/format/index.js";

/**
 * Vectors from spec x86.md B7 bit positions; where Linux decodes the field (iommu_print_event:
 * type = d1 >> 28, devid = d0[15:0], pasid = (d0 & 0xF0000) | d1[15:0], flags = d1[27:16], address =
 * d3:d2), the test checks that reading too.
 */
function linuxView(raw: Uint32Array): { type: number; devid: number; pasid: number; flags: number } {
  return { type: raw[1]! >>> 28, devid: raw[0]! & 0xffff, pasid: (raw[0]! & 0xf0000) | (raw[1]! & 0xffff), flags: (raw[1]! >>> 16) & 0xfff };
}

describe("event log entries", () => {
  it("IO_PAGE_FAULT: devid 0x10, domain 5, PR | RW, address 0xDEAD000", () => {
    const raw = fromWords64(["0x2030000500000010", "0x000000000dead000"]);
    expect(linuxView(raw)).toEqual({ type: 2, devid: 0x10, pasid: 5, flags: 0x30 });
    const d = decodeEvent(raw);
    expect(d.name).toBe("IO_PAGE_FAULT");
    expect(d.fields).toMatchObject({ DeviceID: 0x10, DomainIDOrPASID: 5, GN: 0, NX: 0, US: 0, I: 0, PR: 1, RW: 1, PE: 0, RZ: 0, TR: 0, Address: 0xdead000n });
    expect(toHex64(buildIoPageFaultEvent({ deviceId: 0x10, domainIdOrPasid: 5, address: 0xdead000n, flags: EventFlag.PR | EventFlag.RW }))).toEqual(["0x2030000500000010", "0x000000000dead000"]);
  });
  it("IO_PAGE_FAULT flag positions: GN 48, NX 49, US 50, I 51, PR 52, RW 53, PE 54, RZ 55, TR 56", () => {
    const names = ["GN", "NX", "US", "I", "PR", "RW", "PE", "RZ", "TR"];
    names.forEach((name, n) => {
      const raw = fromWords64([(2n << 60n) | (1n << BigInt(48 + n)), 0n]);
      const f = decodeEvent(raw).fields;
      for (const other of names) expect(f[other]).toBe(other === name ? 1 : 0);
      expect(eventFlags(raw)).toBe(1 << n);
    });
  });
  it("ILLEGAL_DEV_TABLE_ENTRY with a 20-bit PASID", () => {
    const raw = fromWords64(["0x1001123400050010", "0x0000000000001000"]);
    expect(linuxView(raw).pasid).toBe(0x51234);
    expect(decodeEvent(raw).fields).toMatchObject({ DeviceID: 0x10, PASID_19_16: 5, PASID_15_0: 0x1234, PASID: 0x51234, GN: 1, Address: 0x1000n });
  });
  it("ILLEGAL_COMMAND_ERROR carries the command's address", () => {
    expect(decodeEvent(fromWords64(["0x5000000000000000", "0x0000000012345670"]))).toEqual({ name: "ILLEGAL_COMMAND_ERROR", code: 5, fields: { EventCode: 5, Address: 0x12345670n } });
  });
  it("INVALID_PPR_REQUEST uses the PPR layout for PASID and tag (Linux PPR_PASID, d1 & 0x3FF)", () => {
    const raw = fromWords64(["0x9000055523450100", "0x0000000000001000"]);
    expect(decodeEvent(raw).fields).toMatchObject({ DeviceID: 0x100, PASID_15_0: 0x2345, PASID_19_16: 1, PASID: 0x12345, Tag: 0x155 });
    expect(raw[1]! & 0x3ff).toBe(0x155);
  });
  it("DEV_TAB / PAGE_TAB / COMMAND hardware errors carry Type [58:57]", () => {
    expect(decodeEvent(fromWords64(["0x3400000000000010", "0x100000"])).fields).toMatchObject({ DeviceID: 0x10, Type: 2, Address: 0x100000n });
    expect(decodeEvent(fromWords64(["0x4201000700000010", "0x2000"])).fields).toMatchObject({ DomainIDOrPASID: 7, GN: 1, Type: 1 });
    expect(decodeEvent(fromWords64(["0x6600000000000000", "0x3000"])).fields).toMatchObject({ Type: 3, Address: 0x3000n });
  });
  it("IOTLB_INV_TIMEOUT and INVALID_DEVICE_REQUEST", () => {
    expect(decodeEvent(fromWords64(["0x7000000000000010", "0x4000"]))).toMatchObject({ name: "IOTLB_INV_TIMEOUT", fields: { DeviceID: 0x10, Address: 0x4000n } });
    expect(decodeEvent(fromWords64(["0x8f03000200010010", "0x0"])).fields).toMatchObject({ PASID: 0x10002, GN: 1, US: 1, TR: 1, Type: 7 });
  });
  it("EVENT_COUNTER_ZERO joins the counter note [83:64] : [127:96]", () => {
    expect(decodeEvent(fromWords64(["0xa000000000000000", "0x89abcdef00012345"])).fields).toMatchObject({ CounterNote: 0x1234589abcdef });
  });
  it("RMP_PAGE_FAULT and RMP_HARDWARE_ERROR as Linux reports them (SNP host)", () => {
    expect(decodeEvent(fromWords64(["0xd020000700030010", "0x1000"])).fields).toMatchObject({ DeviceID: 0x10, RMPFlags: 3, VMGTag: 7, Flags: 0x20, GPA: 0x1000n });
    expect(decodeEvent(fromWords64(["0xe000000700000010", "0x123457"])).fields).toMatchObject({ VMGTag: 7, SPA: 0x123450n });
  });
  it.each([
    [0x0, "UNKNOWN"],
    [0xb, "GUEST_EVENT_FAULT"],
    [0xc, "VIOMMU_HARDWARE_ERROR"],
    [0xf, "UNKNOWN"],
  ])("code %i decodes as %s with raw operands", (c, name) => {
    const d = decodeEvent(fromWords64([(BigInt(c) << 60n) | 0x42n, 7n]));
    expect(d).toEqual({ name, code: c, fields: { Operand1: 0x42n, EventCode: c, Operand2: 7n } });
  });
  it("encodes from named fields", () => {
    expect(toHex64(encodeEvent(EventCode.IOTLB_INV_TIMEOUT, { DeviceID: 0x10, Address: 0x4000n }))).toEqual(["0x7000000000000010", "0x0000000000004000"]);
    expect(eventLayout(EventCode.RMP_HARDWARE_ERROR).name).toBe("RMP_HARDWARE_ERROR");
  });
  it("decodes any 128 bits", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (a, b) => {
        expect(decodeEvent(fromWords64([a, b])).code).toBe(Number(a >> 60n));
      }),
    );
  });
});
