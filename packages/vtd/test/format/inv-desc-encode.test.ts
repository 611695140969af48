import { describe, expect, it } from "vitest";
import { toHex64 } from "@viommu/core";
import { encodeInvWaitInto, encodeIotlbInvInto, encodePIotlbInvInto } from "../../src/format/inv-desc-encode.js";
import { encodeVtdS1Invalidate, encodeVtdS1InvalidateInto } from "../../src/format/uapi.js";

/** The vectors of inv-desc.test.ts, through the driver's 32-bit encoders. */
describe("the flush path's 32-bit descriptor encoders", () => {
  it("page-selective IOTLB invalidation: 4 pages at 0xFFFFE000, leaf-only hint, DR and DW", () => {
    expect(toHex64(encodeIotlbInvInto(new Uint32Array(4), 3, 4, 1, 1, 2, 1, 0xffff_e000))).toEqual(["0x00000000000400f2", "0x00000000ffffe042"]);
  });

  it("domain-selective IOTLB invalidation of DID 8", () => {
    expect(toHex64(encodeIotlbInvInto(new Uint32Array(4), 2, 8, 1, 1))).toEqual(["0x00000000000800e2", "0x0000000000000000"]);
  });

  it("PASID-based IOTLB page-selective invalidation in PASID 0xFFFFF, 256 bits with the upper half zero", () => {
    const out = new Uint32Array(8).fill(0xffff_ffff);
    expect(toHex64(encodePIotlbInvInto(out, 3, 0x1234, 0xfffff, 9, 1, 0x7fff_ffe0_0000))).toEqual(["0x000fffff12340036", "0x00007fffffe00049", "0x0000000000000000", "0x0000000000000000"]);
  });

  it("invalidation wait with status write of 2 to 0x1052004", () => {
    expect(toHex64(encodeInvWaitInto(new Uint32Array(4), { SW: 1 }, 2, 0x0105_2004))).toEqual(["0x0000000200000025", "0x0000000001052004"]);
  });

  it("the forwarded VTD_S1 invalidation entry is the uapi struct's bytes", () => {
    const into = encodeVtdS1InvalidateInto(new Uint8Array(24).fill(0xee), 0x7fff_ffe0_0000, 3, 1);
    expect(Buffer.from(into).toString("hex")).toBe("0000e0ff ff7f0000 03000000 00000000 01000000 00000000".replaceAll(" ", ""));
    expect(into).toEqual(encodeVtdS1Invalidate({ addr: 0x7fff_ffe0_0000n, npages: 3n, flags: 1 }));
  });
});
