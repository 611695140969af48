/**
 * Ring arithmetic shared by command queues and event logs. Two conventions exist in hardware:
 * - "one-slot-free": head and tail are plain indices; the ring is full when advancing the tail would make it
 *   equal the head, so a ring of N entries holds N − 1;
 * - "wrap-bit": indices carry a wrap bit above the index; full when indices match and wrap bits differ
 *   (so a ring of N entries holds N).
 * Indices here are entry indices (vendors convert byte offsets or register fields at their edge).
 */
export type RingConvention = "one-slot-free" | "wrap-bit";

export class RingIndex {
  readonly entries: number;
  private readonly mask: number;

  constructor(
    readonly log2Entries: number,
    readonly convention: RingConvention,
  ) {
    if (!Number.isInteger(log2Entries) || log2Entries < 0 || log2Entries > 24) throw new RangeError(`ring size 2^${log2Entries} unsupported`);
    this.entries = 2 ** log2Entries;
    this.mask = this.entries - 1;
  }

  /** Entry index of a position (wrap bit stripped). */
  index(position: number): number {
    return position & this.mask;
  }

  /** The position after `position` (wrap bit toggles when the index wraps). */
  next(position: number): number {
    if (this.convention === "one-slot-free") return (position + 1) & this.mask;
    return (position + 1) & (this.entries * 2 - 1);
  }

  isEmpty(producer: number, consumer: number): boolean {
    return producer === consumer;
  }

  isFull(producer: number, consumer: number): boolean {
    if (this.convention === "one-slot-free") return ((producer + 1) & this.mask) === (consumer & this.mask);
    return (producer & this.mask) === (consumer & this.mask) && producer !== consumer;
  }

  /** Entries waiting between consumer and producer. */
  pending(producer: number, consumer: number): number {
    if (this.convention === "one-slot-free") return (producer - consumer + this.entries) & this.mask;
    return (producer - consumer + 2 * this.entries) & (2 * this.entries - 1);
  }

  /** Whether a guest-written position is well-formed for this ring. */
  valid(position: number): boolean {
    const limit = this.convention === "one-slot-free" ? this.entries : 2 * this.entries;
    return Number.isInteger(position) && position >= 0 && position < limit;
  }
}
