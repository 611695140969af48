import type { GuestMemory } from "@viommu/core";
import { encodePageRequest, PAGE_REQUEST_BYTES, pageRequestQueueEntries, type PageRequestFields } from "../format/page-request.js";
import type { EventInterrupt } from "./fault-recorder.js";

/** PRS bits. */
export const Prs = { PPR: 1 << 0, PRO: 1 << 1 } as const;

/**
 * The page request queue (VT-d §7.5): a ring of 32-byte page request descriptors at PQA that hardware fills at
 * PQT and software drains from PQH. A request that finds the ring full sets PRS.PRO (and FSTS.PRO) and is
 * dropped; a new request sets PRS.PPR and raises the page-request event if PPR was clear.
 */
export class PageRequestQueue {
  pqa = 0n;
  head = 0;
  tail = 0;
  prs = 0;

  constructor(
    private readonly memory: GuestMemory,
    readonly event: EventInterrupt,
    private readonly overflowed: () => void,
  ) {}

  /** Guest physical address of entry 0, from PQA. */
  get base(): number {
    return Number((this.pqa & 0x000f_ffff_ffff_f000n) % (1n << 52n));
  }

  get sizeBytes(): number {
    return pageRequestQueueEntries(Number(this.pqa & 7n)) * PAGE_REQUEST_BYTES;
  }

  /**
   * A write of PQA. Software programs PQH and PQT for the new queue; until it does, they are kept inside it (taken
   * modulo its size), so the unit never writes past the ring it was given.
   */
  writeAddress(value: bigint): void {
    this.pqa = value;
    this.head %= this.sizeBytes;
    this.tail %= this.sizeBytes;
  }

  writeHead(value: bigint): void {
    this.head = Number(value & 0x7ffe0n) % this.sizeBytes;
  }

  /** PQT is written by hardware; software may only reset it (to 0) before programming a new queue. */
  writeTail(value: bigint): void {
    this.tail = Number(value & 0x7ffe0n) % this.sizeBytes;
  }

  writePrs(value: number): void {
    this.prs &= ~(value & (Prs.PPR | Prs.PRO));
    if (this.prs === 0) this.event.clearPending();
  }

  /**
   * Whether `count` more requests fit (one slot always stays free) in slots the unit can write: a page request
   * group is queued whole or not at all.
   */
  canTake(count: number): boolean {
    const size = this.sizeBytes;
    const free = ((this.head - this.tail - PAGE_REQUEST_BYTES + 2 * size) % size) / PAGE_REQUEST_BYTES;
    if (!(count >= 0) || count > free) return false;
    for (let i = 0; i < count; i++) if (!this.memory.hostReadable(this.base + ((this.tail + i * PAGE_REQUEST_BYTES) % size), PAGE_REQUEST_BYTES)) return false;
    return true;
  }

  /** A request the queue cannot take: PRS.PRO and FSTS.PRO, the request dropped. */
  refuse(): void {
    this.prs |= Prs.PRO;
    this.overflowed();
  }

  /** Queues one page request; false when it was dropped (queue full or not in guest memory). */
  submit(fields: Partial<PageRequestFields>): boolean {
    const next = (this.tail + PAGE_REQUEST_BYTES) % this.sizeBytes;
    const at = this.base + this.tail;
    if (next === this.head || !this.memory.hostReadable(at, PAGE_REQUEST_BYTES)) {
      this.refuse();
      return false;
    }
    this.memory.writeWords(at, encodePageRequest(fields));
    this.tail = next;
    const wasPending = (this.prs & Prs.PPR) !== 0;
    this.prs |= Prs.PPR;
    if (!wasPending) this.event.raise();
    return true;
  }

  /** Applies a checked state (head and tail inside the ring PQA describes). */
  restore(s: { pqa: bigint; head: number; tail: number; prs: number }): void {
    this.pqa = s.pqa;
    this.head = s.head;
    this.tail = s.tail;
    this.prs = s.prs;
  }
}
