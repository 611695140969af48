import type { EntryReader } from "@viommu/core";
import { EventType } from "../format/event-record.js";
import { L1STD_BYTES, l1StdReaches, STE_BYTES, strtabL1Index, strtabL2Index } from "../format/stream-table.js";
import type { SmmuFeatures } from "./smmu-features.js";
import type { SmmuWalkInfo } from "./walk-info.js";

/** A stream table as STRTAB_BASE / STRTAB_BASE_CFG describe it, with the SMMU's limits applied. */
export interface StreamTableConfig {
  /** The table's address, aligned down as the SMMU ignores the low bits. */
  readonly base: number;
  /** log2 of the StreamIDs covered (LOG2SIZE capped at IDR1.SIDSIZE). */
  readonly log2Size: number;
  readonly twoLevel: boolean;
  readonly split: number;
}

/**
 * The stream table the registers describe (IHI0070 §6.3.25–26): LOG2SIZE above SIDSIZE behaves as SIDSIZE;
 * FMT 2-level needs IDR0.ST_LEVEL (otherwise, and for the reserved FMT values, the table is linear); SPLIT is 6,
 * 8 or 10, the reserved values behave as 6, and a SPLIT at or above LOG2SIZE gives one level-1 descriptor. The base is aligned down to the (level-1) table size, as QEMU
 * does with the bits the architecture says must be zero.
 */
export function streamTableConfig(address: number, log2SizeField: number, splitField: number, fmt: number, f: SmmuFeatures): StreamTableConfig {
  const log2Size = Math.min(log2SizeField, f.sidBits);
  const twoLevel = fmt === 1 && f.twoLevelStrtab;
  const split = Math.min(splitField === 8 || splitField === 10 ? splitField : 6, log2Size);
  const bytes = twoLevel ? 2 ** (log2Size - split) * L1STD_BYTES : 2 ** log2Size * STE_BYTES;
  const align = Math.max(bytes, twoLevel ? L1STD_BYTES : STE_BYTES);
  return { base: address - (address % align), log2Size, twoLevel, split };
}

const entry = new Uint32Array(2);

/**
 * Reads the 64-byte STE of `sid` into `out` (16 halves). Returns 0, or the event the SMMU records instead:
 * C_BAD_STREAMID for a StreamID beyond the table or an invalid / too short level-1 descriptor, F_STE_FETCH when
 * the table memory cannot be read (`info.fetchAddress` says where).
 */
export function readSte(table: StreamTableConfig, sid: number, reader: EntryReader, out: Uint32Array, info: SmmuWalkInfo): number {
  if (!Number.isInteger(sid) || sid < 0 || sid >= 2 ** table.log2Size) return EventType.C_BAD_STREAMID;
  let steAddress: number;
  if (table.twoLevel) {
    const l1 = table.base + strtabL1Index(sid, table.split) * L1STD_BYTES;
    if (!reader.readEntry(l1, entry)) {
      info.fetchAddress = l1;
      return EventType.F_STE_FETCH;
    }
    const span = entry[0]! & 0x1f;
    if (!l1StdReaches(span, table.split, sid)) return EventType.C_BAD_STREAMID;
    // L2Ptr is bits [51:6] (bit 5 RES0); bits [5 + (Span - 1):0] are treated as 0, aligning the level-2 array to
    // its size (IHI 0070 5.1). Span is at most SPLIT + 1 = 11 here, so the mask stays in the low word. QEMU 7.2
    // clears bits [4:0] only (l1std_l2ptr()).
    const l2Ptr = ((entry[0]! & ~(2 ** (span + 5) - 1)) >>> 0) + (entry[1]! & 0xfffff) * 2 ** 32;
    steAddress = l2Ptr + strtabL2Index(sid, table.split) * STE_BYTES;
  } else {
    steAddress = table.base + sid * STE_BYTES;
  }
  for (let i = 0; i < 8; i++) {
    if (!reader.readEntry(steAddress + i * 8, entry)) {
      info.fetchAddress = steAddress + i * 8;
      return EventType.F_STE_FETCH;
    }
    out[2 * i] = entry[0]!;
    out[2 * i + 1] = entry[1]!;
  }
  return 0;
}
