import { describe, expect, it } from "vitest";
import type { MappingLeaf, TableInspector, TranslationContext } from "@viommu/core";
import { collectMappings } from "../src/commands/mappings.js";

/** An inspector over leaves given by hand: what collectMappings makes of them is what is tested. */
function inspector(contexts: readonly { context: TranslationContext; leaves: readonly MappingLeaf[] }[]): TableInspector {
  return {
    contexts: () => contexts.map((c) => c.context),
    leaves(context, visit) {
      const found = contexts.find((c) => c.context === context)!;
      found.leaves.forEach(visit);
      return found.leaves.length;
    },
  };
}

const leaf = (iova: number, output: number, size = 0x1000, write = true, table = 0x5000): MappingLeaf => ({ iova, output, size, read: true, write, entryAddress: table + ((iova >>> 12) & 0x1ff) * 8 });

describe("viommu mappings' ranges", () => {
  it("joins leaves contiguous in IOVA and output with the same permissions, counting page sizes", () => {
    const a: TranslationContext = { rid: 0x200, domain: 9, root: 0x3000, mode: "second-level" };
    const found = collectMappings(
      inspector([
        {
          context: a,
          leaves: [
            leaf(0x10_0000, 0x40_0000),
            leaf(0x10_1000, 0x40_1000),
            leaf(0x10_2000, 0x40_2000, 0x1000, false), // read-only: a new range
            leaf(0x10_3000, 0x90_0000, 0x1000, false), // output jumps: a new range
            leaf(0x20_0000, 0xa0_0000, 0x20_0000), // 2 MiB
            leaf(0x40_0000, 0xc0_0000),
          ],
        },
      ]),
      () => true,
      () => true,
    );
    expect(found).toHaveLength(1);
    expect(found[0]!.leaves).toBe(6);
    expect(found[0]!.ranges.map((r) => [r.iova, r.output, r.length, r.write, r.pages])).toEqual([
      [0x10_0000, 0x40_0000, 0x2000, true, { "4K": 2 }],
      [0x10_2000, 0x40_2000, 0x1000, false, { "4K": 1 }],
      [0x10_3000, 0x90_0000, 0x1000, false, { "4K": 1 }],
      [0x20_0000, 0xa0_0000, 0x20_1000, true, { "2M": 1, "4K": 1 }],
    ]);
    expect(found[0]!.anomalies).toEqual([]);
  });

  it("flags a leaf whose output the dump does not hold, and a table two domains share, but not one domain's devices", () => {
    const a: TranslationContext = { rid: 0x100, domain: 1, root: 0x3000, mode: "second-level" };
    const b: TranslationContext = { rid: 0x108, domain: 1, root: 0x3000, mode: "second-level" };
    const c: TranslationContext = { rid: 0x200, domain: 2, root: 0x8000, mode: "second-level" };
    const found = collectMappings(
      inspector([
        { context: a, leaves: [leaf(0x1000, 0x1_0000)] },
        { context: b, leaves: [leaf(0x1000, 0x1_0000)] },
        { context: c, leaves: [leaf(0x2000, 0x9000_0000)] },
      ]),
      (address) => address < 0x8000_0000,
      () => true,
    );
    expect(found[0]!.anomalies).toEqual(["table 0x5000 is also reached from 02:00.0 (0x200) (domain 2)"]);
    expect(found[1]!.anomalies).toEqual(["table 0x5000 is also reached from 02:00.0 (0x200) (domain 2)"]);
    expect(found[2]!.anomalies).toHaveLength(2);
    expect(found[2]!.ranges[0]!.anomalies).toEqual(["0x2000 → 0x90000000 lies outside the memory image"]);
  });

  it("keeps only the selected contexts", () => {
    const a: TranslationContext = { rid: 0x100, root: 0x3000, mode: "stage 1" };
    const b: TranslationContext = { rid: 0x200, root: 0x4000, mode: "stage 1" };
    const found = collectMappings(inspector([{ context: a, leaves: [] }, { context: b, leaves: [] }]), () => true, (x) => x.rid === 0x200);
    expect(found.map((m) => m.context.rid)).toEqual([0x200]);
  });
});
