import type { GuestQueueView, QueuePointerRegister, RingPosition } from "@viommu/core";
import { PAGE_REQUEST_BYTES } from "../format/page-request.js";
import { registerOffset } from "../format/registers.js";
import type { InvalidationQueue } from "./invalidation-queue.js";
import type { PageRequestQueue } from "./page-request-queue.js";

/** IQH/IQT hold the ring offset in bytes in bits [18:4] (128-bit units); PQH/PQT in bits [18:5] (256-bit units). */
const IQ_POINTER_MASK = 0x7fff0n;
const PQ_POINTER_MASK = 0x7ffe0n;

/**
 * A ring pointer register whose value is the byte offset of the slot (VT-d's queue registers): the index is
 * offset / entry size, there is no wrap bit, and bits outside `mask` are kept from the current value.
 */
function offsetPointer(address: number, mask: bigint, entryBytes: () => number): QueuePointerRegister {
  return {
    address,
    size: 8,
    encode(position: RingPosition, current: bigint): bigint {
      // The register holds only the offset field: an index that is no slot number encodes as slot 0.
      const offset = position.index * entryBytes();
      return (current & ~mask) | (Number.isSafeInteger(offset) && offset >= 0 ? BigInt(offset) & mask : 0n);
    },
    decode(value: bigint): RingPosition {
      return { index: Math.floor(Number(value & mask) / entryBytes()), wrap: false };
    },
  };
}

/**
 * The guest-visible queues of a VT-d unit as core's vendor-neutral views: the invalidation queue (produced by
 * the guest at IQT, consumed by the unit at IQH; base and size latched from IQA when queued invalidation was
 * enabled; 128- or 256-bit descriptors per IQA.DW) and the page request queue (produced by the unit at PQT,
 * consumed by the guest at PQH; base and size from PQA, 32-byte descriptors; unconfigured while PQA is 0).
 */
export function vtdGuestQueues(mmioBase: number, queue: InvalidationQueue, prq: PageRequestQueue): GuestQueueView[] {
  const iqBytes = (): number => queue.descriptorBytes;
  const iq: GuestQueueView = {
    name: "IQ",
    role: "command",
    producedBy: "guest",
    base: () => queue.ringBase,
    entries: () => queue.ringEntries,
    get entryBytes(): number {
      return queue.descriptorBytes;
    },
    producer: offsetPointer(mmioBase + registerOffset("IQT"), IQ_POINTER_MASK, iqBytes),
    consumer: offsetPointer(mmioBase + registerOffset("IQH"), IQ_POINTER_MASK, iqBytes),
  };
  const prqBytes = (): number => PAGE_REQUEST_BYTES;
  const pq: GuestQueueView = {
    name: "PRQ",
    role: "page-request",
    producedBy: "device",
    base: () => (prq.pqa === 0n ? undefined : prq.base),
    entries: () => (prq.pqa === 0n ? 0 : prq.sizeBytes / PAGE_REQUEST_BYTES),
    entryBytes: PAGE_REQUEST_BYTES,
    producer: offsetPointer(mmioBase + registerOffset("PQT"), PQ_POINTER_MASK, prqBytes),
    consumer: offsetPointer(mmioBase + registerOffset("PQH"), PQ_POINTER_MASK, prqBytes),
  };
  return [iq, pq];
}
