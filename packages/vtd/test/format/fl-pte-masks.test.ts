import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EntryKind, newEntryDecode } from "@viommu/core";
import { FlPteFormat, flPteReservedMasks } from "../../src/format/index.js";

describe("first-level decoding against QEMU's reserved masks (vtd_fpte_rsvd)", () => {
  it("faults a present entry exactly when it sets a bit of its level's mask", () => {
    const out = newEntryDecode();
    fc.assert(
      fc.property(
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        fc.integer({ min: 1, max: 5 }),
        fc.constantFrom(39, 46, 48, 52),
        fc.boolean(),
        (lo, hi, level, haw, fl1gp) => {
          const lo1 = (lo | 1) >>> 0;
          const masks = flPteReservedMasks({ haw, fl1gp });
          const large = (lo1 & 0x80) !== 0 && masks.largeLeaf[level] !== undefined;
          const mask = large ? masks.largeLeaf[level]! : masks.entry[level]!;
          const value = (BigInt(hi) << 32n) | BigInt(lo1);
          new FlPteFormat({ haw, fl1gp }).decodeEntry(lo1, hi, level, out);
          expect(out.kind === EntryKind.Fault).toBe((value & mask) !== 0n);
          if (out.kind === EntryKind.Leaf) expect(out.pageShift).toBe(12 + 9 * (level - 1));
        },
      ),
    );
  });
});
