import { parseVevents, veventsLost, type VeventqFile } from "@viommu/core";

/** One record read from a vEVENTQ. */
export interface VeventRead {
  /** The event's payload; undefined for the lost-events marker. */
  readonly payload: Uint8Array | undefined;
  /** Events were lost just before this record (the marker itself, or a gap in the sequence numbers). */
  readonly lostBefore: boolean;
}

/**
 * The VMM's reader of one vEVENTQ file (QEMU reads its vEVENTQ fd the same way): whole records, `perRead` at a
 * time, at most `maxReads` reads per drain so a queue that keeps filling cannot hold the VMM's loop. The last
 * sequence number carries over from one drain to the next, so a gap between drains is seen too.
 */
export class VeventqReader {
  private lastSequence = -1;

  constructor(
    private readonly file: VeventqFile,
    /** The vendor's vEVENT payload size. */
    private readonly payloadBytes: number,
    private readonly perRead: number,
    private readonly maxReads: number,
  ) {}

  /** Every record readable now, oldest first. */
  drain(): VeventRead[] {
    const out: VeventRead[] = [];
    for (let round = 0; round < this.maxReads; round++) {
      const bytes = this.file.read(this.perRead * (8 + this.payloadBytes));
      if (!bytes.ok || bytes.value.length === 0) break;
      for (const record of parseVevents(bytes.value, this.payloadBytes)) {
        const lostBefore = veventsLost(this.lastSequence, record);
        this.lastSequence = record.sequence;
        out.push({ payload: record.payload, lostBefore });
      }
    }
    return out;
  }
}
