import { toHex64, type GuestEvent, type GuestMemory, type RawBits } from "@viommu/core";
import { decodePriEntry } from "../format/pri-entry.js";
import { PRIQ_ENTRY_BYTES, QUEUE_OVERFLOW_FLAG, queueAdvance, queueEmpty, queueIndex } from "../format/queue-registers.js";
import type { SmmuMmio } from "./smmu-mmio.js";

/** The name a PRI queue entry goes by in a guest event (the structure's: IHI0070 Chapter 8). */
export const PRIQ_ENTRY_NAME = "PRIQ_ENTRY";

/**
 * The guest driver's PRI queue (Linux `arm_smmu_priq_thread`): entries read from CONS up to PROD, then CONS written
 * back with OVACKFLG copied from PROD.OVFLG, which consumes the entries and acknowledges an overflow (after which the
 * SMMU writes entries again, IHI0070 §8.1). A group whose Last entry was lost to an overflow was answered by the SMMU
 * itself; the driver answers the groups it reads.
 */
export class GuestPriQueue {
  private cons = 0;
  private overflowSeen = false;

  constructor(
    private readonly mmio: SmmuMmio,
    private readonly memory: GuestMemory,
    readonly base: number,
    readonly log2: number,
  ) {}

  /** Programs PRIQ_BASE (WA), PROD and CONS (the queue must be disabled). */
  program(): void {
    this.cons = 0;
    this.mmio.write64("PRIQ_BASE", BigInt(this.base) | BigInt(this.log2) | (1n << 62n));
    this.mmio.write32("PRIQ_PROD", 0);
    this.mmio.write32("PRIQ_CONS", 0);
  }

  /** Consumes every pending entry. */
  drain(): RawBits[] {
    const prod = this.mmio.read32("PRIQ_PROD");
    if (((prod ^ this.cons) & QUEUE_OVERFLOW_FLAG) !== 0) this.overflowSeen = true;
    const entries: RawBits[] = [];
    for (let budget = 2 ** this.log2; budget > 0 && !queueEmpty(prod, this.cons, this.log2); budget--) {
      entries.push(this.memory.readWords(this.base + queueIndex(this.cons, this.log2) * PRIQ_ENTRY_BYTES, new Uint32Array(4)));
      this.cons = queueAdvance(this.cons, this.log2);
    }
    this.cons = ((this.cons & ~QUEUE_OVERFLOW_FLAG) | (prod & QUEUE_OVERFLOW_FLAG)) >>> 0;
    this.mmio.write32("PRIQ_CONS", this.cons);
    return entries;
  }

  /** Whether the SMMU reported an overflow since the last call. */
  takeOverflow(): boolean {
    const seen = this.overflowSeen;
    this.overflowSeen = false;
    return seen;
  }
}

/** A PRI queue entry as the vendor-neutral page-request event: StreamID, SubstreamID when valid, page, access, group. */
export function guestPageRequestOf(raw: RawBits): GuestEvent {
  const e = decodePriEntry(raw);
  const address = e.PageAddress;
  return {
    kind: "page-request",
    code: 0,
    name: PRIQ_ENTRY_NAME,
    rid: e.StreamID,
    ...(e.SSV === 1 ? { pasid: e.SubstreamID } : {}),
    ...(address <= BigInt(Number.MAX_SAFE_INTEGER) ? { address: Number(address) } : {}),
    write: e.Write === 1,
    group: e.PRGIndex,
    last: e.Last === 1,
    raw: toHex64(raw),
  };
}
