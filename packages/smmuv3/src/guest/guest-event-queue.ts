import { toHex64, type GuestEvent, type GuestMemory, type RawBits } from "@viommu/core";
import { decodeEvent, EventType } from "../format/event-record.js";
import { EVTQ_ENTRY_BYTES, QUEUE_OVERFLOW_FLAG, queueAdvance, queueEmpty, queueIndex } from "../format/queue-registers.js";
import type { SmmuMmio } from "./smmu-mmio.js";

/**
 * The guest driver's event queue (Linux `arm_smmu_evtq_thread`): records read from CONS up to PROD, then CONS
 * written back with OVACKFLG copied from PROD.OVFLG, which both consumes the records and acknowledges an
 * overflow. An overflow seen on the way is latched until `takeOverflow`.
 */
export class GuestEventQueue {
  private cons = 0;
  private overflowLatched = false;

  constructor(
    private readonly mmio: SmmuMmio,
    private readonly memory: GuestMemory,
    readonly base: number,
    readonly log2: number,
  ) {}

  /** Programs EVTQ_BASE, PROD and CONS (the queue must be disabled). */
  program(): void {
    this.cons = 0;
    this.overflowLatched = false;
    this.mmio.write64("EVTQ_BASE", BigInt(this.base) | BigInt(this.log2) | (1n << 62n));
    this.mmio.write32("EVTQ_PROD", 0);
    this.mmio.write32("EVTQ_CONS", 0);
  }

  /** Consumes every pending record. */
  drain(): RawBits[] {
    const prod = this.mmio.read32("EVTQ_PROD");
    if (((prod ^ this.cons) & QUEUE_OVERFLOW_FLAG) !== 0) this.overflowLatched = true;
    const records: RawBits[] = [];
    for (let budget = 2 ** this.log2; budget > 0 && !queueEmpty(prod, this.cons, this.log2); budget--) {
      const at = this.base + queueIndex(this.cons, this.log2) * EVTQ_ENTRY_BYTES;
      records.push(this.memory.readWords(at, new Uint32Array(8)));
      this.cons = queueAdvance(this.cons, this.log2);
    }
    this.cons = ((this.cons & ~QUEUE_OVERFLOW_FLAG) | (prod & QUEUE_OVERFLOW_FLAG)) >>> 0;
    this.mmio.write32("EVTQ_CONS", this.cons);
    return records;
  }

  /** Whether records were lost since the last call; acknowledges it. */
  takeOverflow(): boolean {
    const prod = this.mmio.read32("EVTQ_PROD");
    if (((prod ^ this.cons) & QUEUE_OVERFLOW_FLAG) !== 0) {
      this.overflowLatched = true;
      this.cons = ((this.cons & ~QUEUE_OVERFLOW_FLAG) | (prod & QUEUE_OVERFLOW_FLAG)) >>> 0;
      this.mmio.write32("EVTQ_CONS", this.cons);
    }
    const seen = this.overflowLatched;
    this.overflowLatched = false;
    return seen;
  }
}

const PAGE_REQUEST = EventType.E_PAGE_REQUEST;

/** An event record as the vendor-neutral guest event: DMA-related events name the StreamID and the input address. */
export function guestEventOf(raw: RawBits): GuestEvent {
  const e = decodeEvent(raw);
  const fields = e.fields as Readonly<Record<string, number | bigint>>;
  const rawHex = toHex64(raw);
  const sid = typeof fields.StreamID === "number" ? fields.StreamID : undefined;
  const input = fields.InputAddr;
  const address = typeof input === "bigint" && input <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(input) : undefined;
  const write = typeof fields.RnW === "number" ? fields.RnW === 0 : undefined;
  // The SubstreamID when the record says it is valid (C_BAD_SUBSTREAMID always carries it, without SSV).
  const ssid = typeof fields.SubstreamID === "number" && (fields.SSV === 1 || e.code === EventType.C_BAD_SUBSTREAMID) ? fields.SubstreamID : undefined;
  const pasid = ssid !== undefined ? { pasid: ssid } : {};
  if (e.code === PAGE_REQUEST) return { kind: "page-request", code: e.code, name: e.name, rid: sid, address, ...pasid, raw: rawHex };
  // A stalled transaction's record (Stall = 1): answered with CMD_RESUME naming its STAG, a one-page group.
  if (fields.Stall === 1 && typeof fields.STAG === "number") return { kind: "page-request", code: e.code, name: e.name, rid: sid, address, write, ...pasid, group: fields.STAG, last: true, raw: rawHex };
  if (e.name === "UNKNOWN" || e.name.startsWith("IMPDEF")) return { kind: "other", code: e.code, name: e.name, raw: rawHex };
  return { kind: "dma-fault", code: e.code, name: e.name, rid: sid, address, write, ...pasid, raw: rawHex };
}
