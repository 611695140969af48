import { describe, expect, it } from "vitest";
import { readStruct, structProblem, writeStruct } from "../../src/format/byte-layout.js";
import { hwptHypervS1Layout, viommuInvalidateHypervLayout } from "../../src/format/iommufd-uapi.js";

describe("the model's iommufd payloads", () => {
  it("iommu_hwpt_hyperv_s1 is 16 bytes: domain_id, flags (FIVE_LEVEL), s1_root", () => {
    const bytes = writeStruct(hwptHypervS1Layout, { domain_id: 0x12345678, flags: { FIVE_LEVEL: 1 }, s1_root: 0xabcd_e000n });
    expect([...bytes]).toEqual([0x78, 0x56, 0x34, 0x12, 1, 0, 0, 0, 0x00, 0xe0, 0xcd, 0xab, 0, 0, 0, 0]);
    expect(readStruct(hwptHypervS1Layout, bytes)).toEqual({ domain_id: 0x12345678, flags: { FIVE_LEVEL: 1 }, s1_root: 0xabcd_e000n });
    bytes[4] = 2;
    expect(structProblem(hwptHypervS1Layout, bytes)).toBeDefined();
  });

  it("iommu_viommu_invalidate_hyperv is 24 bytes with a reserved tail that must be zero", () => {
    const bytes = writeStruct(viommuInvalidateHypervLayout, { domain_id: 3, flags: { ALL: 0 }, page_number: 0x10n, page_mask_shift: 4 });
    expect(bytes.length).toBe(24);
    expect(readStruct(viommuInvalidateHypervLayout, bytes)).toMatchObject({ domain_id: 3, page_number: 0x10n, page_mask_shift: 4 });
    expect(structProblem(viommuInvalidateHypervLayout, bytes)).toBeUndefined();
    bytes[23] = 1;
    expect(structProblem(viommuInvalidateHypervLayout, bytes)).toBeDefined();
  });
});
