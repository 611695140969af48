import { describe, expect, it } from "vitest";
import { decodePgfaults, encodePageResponse, encodePgfault, PgfaultFlag } from "../src/index.js";

describe("fault-file records", () => {
  it("decode struct iommu_hwpt_pgfault at the uapi offsets (flags 0, dev_id 4, pasid 8, grpid 12, perm 16, addr 24, length 32, cookie 36)", () => {
    const bytes = new Uint8Array(80);
    const v = new DataView(bytes.buffer);
    v.setUint32(0, PgfaultFlag.PASID_VALID, true);
    v.setUint32(4, 7, true);
    v.setUint32(8, 0x8_0001, true);
    v.setUint32(12, 0x1ff, true);
    v.setUint32(16, 3, true);
    v.setBigUint64(24, 0x7f12_3456_7000n, true);
    v.setUint32(32, 4096, true);
    v.setUint32(36, 42, true);
    bytes.set(encodePgfault({ devId: 7, pasid: undefined, groupId: 2, perm: 1, address: 0x5000, length: 4096 }, 43, true), 40);
    expect(decodePgfaults(bytes)).toEqual([
      { devId: 7, pasid: 0x8_0001, groupId: 0x1ff, perm: 3, address: 0x7f12_3456_7000, length: 4096, cookie: 42, last: false },
      { devId: 7, pasid: undefined, groupId: 2, perm: 1, address: 0x5000, length: 4096, cookie: 43, last: true },
    ]);
  });

  it("encode struct iommu_hwpt_page_response as cookie then code", () => {
    expect([...encodePageResponse(0x0102_0304, 1)]).toEqual([4, 3, 2, 1, 1, 0, 0, 0]);
  });
});
