import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fillIovaList, HV_IOMMU_MAX_FLUSH_VA_COUNT } from "../../src/guest/flush-list.js";

describe("fillIovaList (hv_iommu_fill_iova_list)", () => {
  it("holds 508 entries per input page", () => {
    expect(HV_IOMMU_MAX_FLUSH_VA_COUNT).toBe(508);
  });

  it.each([
    // [start, end inclusive, entries]
    [0x1000, 0x1fff, [[1, 0]]],
    [0x0, 0x3fff, [[0, 2]]],
    [0x1000, 0x4fff, [[1, 0], [2, 1], [4, 0]]],
    [0x10_0000, 0x10_2fff, [[0x100, 1], [0x102, 0]]],
    // An end ending in 0x000 still covers its page (HVPFN_UP(end + 1), the review's fix).
    [0x2000, 0x3000, [[2, 1]]],
    [0x1234, 0x1235, [[1, 0]]],
  ])("[0x%s, 0x%s] → %j", (start, end, entries) => {
    expect(fillIovaList(start, end)!.map((e) => [e.page_number, e.page_mask_shift])).toEqual(entries);
  });

  it("returns undefined (the caller flushes everything) when the blocks do not fit the capacity", () => {
    expect(fillIovaList(0x1000, 0x4fff, 2)).toBeUndefined();
    expect(fillIovaList(0x1000, 0x4fff, 3)).toHaveLength(3);
  });

  it("covers exactly the pages of the range with naturally aligned blocks", () => {
    fc.assert(
      fc.property(fc.nat(2 ** 30), fc.integer({ min: 1, max: 2 ** 24 }), (startPage, pages) => {
        const list = fillIovaList(startPage * 4096, (startPage + pages) * 4096 - 1)!;
        let next = startPage;
        for (const e of list) {
          expect(e.page_number).toBe(next);
          expect(e.page_number % 2 ** e.page_mask_shift).toBe(0);
          next += 2 ** e.page_mask_shift;
        }
        expect(next).toBe(startPage + pages);
        expect(list.length).toBeLessThanOrEqual(2 * 31);
      }),
      { numRuns: 300, seed: 3 },
    );
  });
});
