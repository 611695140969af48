import type { EntryReader } from "@viommu/core";
import { describe, expect, it } from "vitest";
import { EventType } from "../../src/format/event-record.js";
import { DEFAULT_SMMUV3_HW } from "../../src/hw/smmuv3-hw-config.js";
import { smmuFeatures } from "../../src/translate/smmu-features.js";
import { readSte, streamTableConfig } from "../../src/translate/stream-table-lookup.js";
import { newSmmuWalkInfo } from "../../src/translate/walk-info.js";

/** Memory of 64-bit entries: the address of each read is noted; unwritten memory reads as 0. */
function memory(entries: Record<number, bigint>): EntryReader & { reads: number[] } {
  const reads: number[] = [];
  return {
    reads,
    readEntry(address: number, out: Uint32Array): boolean {
      reads.push(address);
      const v = entries[address] ?? 0n;
      out[0] = Number(v & 0xffff_ffffn);
      out[1] = Number(v >> 32n);
      return true;
    },
  };
}

/**
 * IHI 0070 5.1 L1STD: L2Ptr is bits [55:6], and "bits L2Ptr[N:0] are treated as 0 by the SMMU, where
 * N == 5 + (Span - 1)": the level-2 array is aligned to its size.
 */
describe("the level-2 stream table an L1STD points to (IHI 0070 5.1)", () => {
  // A two-level table at 0x10000 with SPLIT 8 (256 StreamIDs per level-2 array) for 16-bit StreamIDs.
  const table = streamTableConfig(0x1_0000, 16, 8, 1, smmuFeatures(DEFAULT_SMMUV3_HW.idr));
  const steAddressOf = (l1std: bigint, sid: number): number | undefined => {
    const mem = memory({ [0x1_0000 + Math.floor(sid / 256) * 8]: l1std });
    const event = readSte(table, sid, mem, new Uint32Array(16), newSmmuWalkInfo());
    return event === 0 ? mem.reads[1] : undefined;
  };

  it("is aligned to its size: the L2Ptr bits below it, and the RES0 bit 5, are treated as 0", () => {
    expect(table.twoLevel).toBe(true);
    // Span 9: 256 STEs, 16 KiB: L2Ptr[13:0] treated as 0.
    expect(steAddressOf(0x4_2000_4000n | 9n, 0x20)).toBe(0x4_2000_4000 + 0x20 * 64);
    expect(steAddressOf(0x4_2000_7fe0n | 9n, 0x20)).toBe(0x4_2000_4000 + 0x20 * 64);
    // Span 2: 2 STEs, 128 bytes: L2Ptr[6:0] treated as 0, bit 7 kept.
    expect(steAddressOf(0x4_2000_40c0n | 2n, 0x101)).toBe(0x4_2000_4080 + 64);
    // Span 1: one STE: bit 5 alone is RES0, treated as 0.
    expect(steAddressOf(0x4_2000_4060n | 1n, 0x200)).toBe(0x4_2000_4040);
  });

  it("is no STE outside the span: C_BAD_STREAMID", () => {
    const mem = memory({ [0x1_0000]: 0x4_2000_4000n | 1n });
    expect(readSte(table, 0x01, mem, new Uint32Array(16), newSmmuWalkInfo())).toBe(EventType.C_BAD_STREAMID);
  });
});
