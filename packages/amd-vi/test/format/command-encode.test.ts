import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { toHex64 } from "@viommu/core";
import { buildCompletionWait, buildInvalidateIommuPages } from "../../src/format/index.js";
import { encodeCompletionWaitInto, encodeInvalidateIommuPagesInto } from "../../src/format/command-encode.js";

/** The vectors of command.test.ts (Linux build_completion_wait / build_inv_iommu_pages), through the driver's 32-bit encoders. */
describe("the flush path's 32-bit command encoders", () => {
  it("COMPLETION_WAIT: semaphore 0x102034000, S, data 5", () => {
    expect(toHex64(encodeCompletionWaitInto(new Uint32Array(4), 0x102034000, 5))).toEqual(["0x1000000102034001", "0x0000000000000005"]);
  });

  it("INVALIDATE_IOMMU_PAGES for one page: S = 0, PDE", () => {
    expect(toHex64(encodeInvalidateIommuPagesInto(new Uint32Array(4), 1, 0x5000, 0x1000))).toEqual(["0x3000000100000000", "0x0000000000005002"]);
  });

  it("INVALIDATE_IOMMU_PAGES for 2 MiB at 0x200000: address 0x2FF000 | S", () => {
    expect(toHex64(encodeInvalidateIommuPagesInto(new Uint32Array(4), 1, 0x200000, 0x200000))[1]).toBe("0x00000000002ff003");
  });

  it("a guest table's PASID sits in [19:0] with GN", () => {
    expect(toHex64(encodeInvalidateIommuPagesInto(new Uint32Array(4), 0x22, 0x7f00_0000_1000, 0x1000, 0xabcde))).toEqual(["0x30000022000abcde", "0x00007f0000001006"]);
  });

  it("write the words Linux's builders write, for any range below 2^52 and any PASID", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 40 - 1 }), fc.integer({ min: 0, max: 52 }), fc.integer({ min: 1, max: 2 ** 12 }), fc.option(fc.integer({ min: 0, max: 0xfffff }), { nil: undefined }), fc.integer({ min: 0, max: 0xffff }), (page, sizeShift, count, pasid, domainId) => {
        const address = page * 4096;
        const size = Math.min(count * 2 ** sizeShift, 2 ** 52 - address);
        const expected = buildInvalidateIommuPages({ domainId, address: BigInt(address), size: BigInt(size), pasid });
        expect(toHex64(encodeInvalidateIommuPagesInto(new Uint32Array(4), domainId, address, size, pasid))).toEqual(toHex64(expected));
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 49 - 1 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (slot, data) => {
        expect(toHex64(encodeCompletionWaitInto(new Uint32Array(4), slot * 8, data))).toEqual(toHex64(buildCompletionWait(slot * 8, BigInt(data))));
      }),
    );
  });
});
