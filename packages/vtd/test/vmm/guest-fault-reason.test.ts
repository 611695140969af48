import { describe, expect, it } from "vitest";
import { newWalkResult, WalkFault } from "@viommu/core";
import { VtdFaultReason } from "../../src/format/fault-reasons.js";
import { legacySecondLevelReason } from "../../src/vmm/guest-fault-reason.js";

/**
 * A legacy second-level table that cannot be read: through the context entry's SLPTPTR (the top level) the
 * context entry is programmed invalidly (03h, LCT.4); through a paging entry (below) it is 07h (LSL.1). QEMU 7.2
 * agrees on both (packages/qemu/test/findings/fixed).
 */
describe("legacy second-level fault reasons for a table outside memory", () => {
  for (const [levels, level, reason] of [
    [4, 4, VtdFaultReason.CONTEXT_ENTRY_INV],
    [3, 3, VtdFaultReason.CONTEXT_ENTRY_INV],
    [4, 3, VtdFaultReason.PAGING_ENTRY_INV],
    [4, 1, VtdFaultReason.PAGING_ENTRY_INV],
  ] as const) {
    it(`a ${levels}-level walk failing to read level ${level}: 0x${reason.toString(16)}`, () => {
      const walk = newWalkResult();
      walk.fault = WalkFault.External;
      walk.level = level;
      expect(legacySecondLevelReason(walk, false, levels)).toBe(reason);
    });
  }
});
