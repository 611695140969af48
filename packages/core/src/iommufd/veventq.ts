import { err, ok, type Result } from "../errors/errno.js";
import { drop, hold, IommufdObject } from "./object-table.js";
import { IommufdObjectType, IOMMU_VEVENTQ_FLAG_LOST_EVENTS, VEVENT_HEADER_BYTES, VEVENT_SEQUENCE_MASK } from "./uapi.js";

interface VeventNode {
  readonly flags: number;
  sequence: number;
  readonly payload: Uint8Array | undefined;
}

/**
 * A vEVENTQ (Linux `eventq.c`): at most `depth` real events; when full, one lost-events marker (header only,
 * flags LOST_EVENTS) sits at the tail and is re-stamped with a fresh sequence number for every further lost
 * event. A real event arriving while the marker is the tail replaces it, so the loss then shows only as a
 * sequence gap. Sequence numbers wrap from INT_MAX to 0.
 */
export class Veventq extends IommufdObject {
  readonly type = IommufdObjectType.VEVENTQ;
  private readonly nodes: VeventNode[] = [];
  private head = 0;
  private readonly marker: VeventNode = { flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS, sequence: 0, payload: undefined };
  private sequence = 0;
  private realEvents = 0;
  /** Called when records become readable (the VMM's poll wakeup). */
  onReadable: (() => void) | undefined;

  constructor(
    readonly viommu: IommufdObject,
    readonly eventType: number,
    readonly depth: number,
    private readonly unlink: () => void,
  ) {
    super();
    hold(viommu);
  }

  release(): void {
    this.nodes.length = 0;
    this.head = 0;
    this.realEvents = 0;
    this.unlink();
    drop(this.viommu);
  }

  get pendingEvents(): number {
    return this.realEvents;
  }

  get pendingRecords(): number {
    return this.nodes.length - this.head;
  }

  /** Queues an event (the driver's report); a full queue records the loss instead. */
  report(payload: Uint8Array): void {
    let node: VeventNode;
    if (this.realEvents === this.depth) node = this.marker;
    else {
      node = { flags: 0, sequence: 0, payload: payload.slice() };
      this.realEvents++;
    }
    if (this.nodes.length > this.head && this.nodes[this.nodes.length - 1] === this.marker) this.nodes.pop();
    node.sequence = this.sequence;
    this.sequence = (this.sequence + 1) & VEVENT_SEQUENCE_MASK;
    this.nodes.push(node);
    this.onReadable?.();
  }

  /**
   * Reads whole records into a buffer of `count` bytes: each is the 8-byte header (u32 flags, u32 sequence,
   * little-endian) and, for a real event, its payload. A record that does not fit stays for the next read.
   * An empty queue reads 0 bytes. EINVAL when `count` cannot hold even a header.
   */
  read(count: number): Result<Uint8Array> {
    if (!Number.isSafeInteger(count) || count < VEVENT_HEADER_BYTES) return err("EINVAL", `read count ${count} cannot hold a vEVENT header`);
    const chunks: Uint8Array[] = [];
    let used = 0;
    while (this.head < this.nodes.length) {
      const node = this.nodes[this.head]!;
      const size = VEVENT_HEADER_BYTES + (node.payload?.length ?? 0);
      if (used + size > count) break;
      const record = new Uint8Array(size);
      const view = new DataView(record.buffer);
      view.setUint32(0, node.flags, true);
      view.setUint32(4, node.sequence, true);
      if (node.payload !== undefined) record.set(node.payload, VEVENT_HEADER_BYTES);
      chunks.push(record);
      used += size;
      this.head++;
      if (node !== this.marker) this.realEvents--;
    }
    if (this.head === this.nodes.length) {
      this.nodes.length = 0;
      this.head = 0;
    }
    const out = new Uint8Array(used);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return ok(out);
  }
}

/**
 * The vEVENTQ's file: it holds a reference on the queue (so DESTROY answers EBUSY until it is closed), reads
 * never block, there is no write, and it is not seekable.
 */
export class VeventqFile {
  private open = true;

  constructor(readonly queue: Veventq) {
    hold(queue);
  }

  read(count: number, position = 0): Result<Uint8Array> {
    if (!this.open) return err("EINVAL", "file closed");
    if (position !== 0) return err("ESPIPE", "vEVENTQ file is not seekable");
    return this.queue.read(count);
  }

  write(_bytes: Uint8Array): Result<number> {
    return err("EINVAL", "vEVENTQ file has no write");
  }

  /** EPOLLIN when records are pending; never EPOLLOUT. */
  poll(): { readable: boolean; writable: boolean } {
    return { readable: this.open && this.queue.pendingRecords > 0, writable: false };
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    drop(this.queue);
  }

  get isOpen(): boolean {
    return this.open;
  }
}

/** Splits bytes read from a vEVENTQ file into records, given the payload size of the queue's type. */
export function parseVevents(bytes: Uint8Array, payloadBytes: number): { flags: number; sequence: number; payload: Uint8Array | undefined }[] {
  const out: { flags: number; sequence: number; payload: Uint8Array | undefined }[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  while (at + VEVENT_HEADER_BYTES <= bytes.length) {
    const flags = view.getUint32(at, true);
    const sequence = view.getUint32(at + 4, true);
    at += VEVENT_HEADER_BYTES;
    if (flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS) out.push({ flags, sequence, payload: undefined });
    else {
      out.push({ flags, sequence, payload: bytes.slice(at, at + payloadBytes) });
      at += payloadBytes;
    }
  }
  return out;
}

/**
 * Loss detection the way a VMM does it (selftest `_test_cmd_read_vevents`): a LOST_EVENTS marker, or a
 * sequence gap, means events were lost since `previous`.
 */
export function veventsLost(previous: number, record: { flags: number; sequence: number }): boolean {
  if (record.flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS) return true;
  return previous >= 0 && ((record.sequence - previous) & VEVENT_SEQUENCE_MASK) > 1;
}

