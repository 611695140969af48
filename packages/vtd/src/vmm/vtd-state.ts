import { StateReader, type Result, type StateValue } from "@viommu/core";
import { pageRequestQueueEntries, PAGE_REQUEST_BYTES } from "../format/page-request.js";
import { DescriptorWidth, invalidationQueueEntries } from "../format/registers.js";
import { EventControl, FSTS_RW1C, type EventInterrupt } from "./fault-recorder.js";
import type { InvalidationQueueState } from "./invalidation-queue.js";
import {
  CCMD_HELD,
  EVENT_ADDRESS_MASK,
  EVENT_DATA_MASK,
  Gsts,
  IOTLB_HELD,
  IQA_DW,
  IQA_MASK,
  IRTA_EIME,
  IRTA_MASK,
  IVA_MASK,
  PQA_MASK,
  RTADDR_MASK,
} from "./register-file.js";
import type { VtdDevice } from "./vtd-device.js";

export const VTD_STATE_KIND = "vtd-iommu";
/**
 * The format version `save` writes. Version 2 adds `cap` and `ecap`: the identification registers the guest
 * read, which fix every feature it may be using (address widths and SAGAW, caching mode, fault-record count,
 * scalable mode, PASIDs, interrupt remapping and EIM, device-TLBs, pass-through, snoop control, ...). Version 1
 * recorded neither, so it restored into a unit of any configuration the other fields happened to fit: the
 * guest's tables and interrupt remapping then met a unit that no longer offered what it had found (GSTS.IRES
 * kept under an ECAP.IR of 0, 4-level tables under a 39-bit SAGAW). A version-2 stream restores only into a
 * unit whose CAP and ECAP are those saved.
 */
export const VTD_STATE_VERSION = 2;
/**
 * Versions `restore` accepts. A version-1 stream restores as it always did, into this unit's own CAP and ECAP
 * (the value version 1 implies: the destination's configuration, unchecked); any other version is refused
 * naming it (core's decodeState).
 */
export const VTD_STATE_VERSIONS: readonly number[] = [1, 2];

type EventState = [number, number, number, number];

function eventState(e: EventInterrupt): EventState {
  return [e.control >>> 0, e.data, e.address, e.upperAddress];
}

/**
 * Everything guest-visible the device holds outside guest memory: register values, what SRTP and SIRTP
 * latched, the queues' pointers and error record, the fault records and the event blocks. Host objects are
 * not saved: the destination rebuilds them from the guest's tables.
 */
export function snapshotVtdState(d: VtdDevice): Record<string, StateValue> {
  const r = d.registers;
  return {
    cap: words64(d.registersModel.cap).toString(),
    ecap: words64(d.registersModel.ecap).toString(),
    gsts: r.gsts >>> 0,
    rtaddr: r.rtaddr.toString(),
    latchedRoot: [d.translator.rootTable, d.translator.ttm],
    ccmd: r.ccmd.toString(),
    iva: r.iva.toString(),
    iotlb: r.iotlb.toString(),
    ics: r.ics,
    faults: d.faults.snapshot(),
    queue: d.queue.snapshot() as unknown as StateValue,
    remapper: d.remapper.snapshot(),
    prq: { pqa: d.prq.pqa.toString(), head: d.prq.head, tail: d.prq.tail, prs: d.prq.prs },
    events: [eventState(d.faults.event), eventState(d.invalidationEvent), eventState(d.prq.event)],
  };
}

/** A 64-bit register held as two 32-bit words, low first. */
function words64(w: Uint32Array): bigint {
  return BigInt(w[0]! >>> 0) | (BigInt(w[1]! >>> 0) << 32n);
}

/** The CAP and ECAP values of a unit's register model (what a version-2 stream must match). */
export function identification(model: { readonly cap: Uint32Array; readonly ecap: Uint32Array }): { cap: bigint; ecap: bigint } {
  return { cap: words64(model.cap), ecap: words64(model.ecap) };
}

/** What the restoring device is: the limits every saved register, index and pointer is checked against. */
export interface VtdStateLimits {
  /** Its CAP and ECAP: a version-2 stream saved under others is refused. */
  readonly cap: bigint;
  readonly ecap: bigint;
  readonly faultRecords: number;
  /** ECAP.SMTS: IQA.DW may be set (256-bit descriptors). */
  readonly wideDescriptors: boolean;
  /** ECAP.EIM: IRTA.EIME and the event upper-address registers are implemented. */
  readonly eim: boolean;
}

/** A saved state every field of which has been checked: applying it cannot fail. */
export interface VtdSavedState {
  readonly gsts: number;
  readonly rtaddr: bigint;
  readonly rootTable: number;
  readonly ttm: number;
  readonly ccmd: bigint;
  readonly iva: bigint;
  readonly iotlb: bigint;
  readonly ics: number;
  readonly faults: { records: number[]; status: number; fri: number; next: number };
  readonly queue: InvalidationQueueState;
  readonly remapper: { irta: bigint; latchedIrta: bigint; enabled: boolean; cfis: boolean; latched: boolean };
  readonly prq: { pqa: bigint; head: number; tail: number; prs: number };
  readonly events: readonly [EventState, EventState, EventState];
}

/** The GSTS bits this unit can report (WBFS, AFLS and FLS never: write-buffer flushing and advanced fault logging are absent). */
const GSTS_HELD = Gsts.CFIS | Gsts.IRTPS | Gsts.IRES | Gsts.QIES | Gsts.RTPS | Gsts.TES;
/** What SRTP can latch: RTA bits [51:12] (vtd-device's translator keeps 52 address bits). */
const ROOT_LIMIT = 2 ** 52;
/** IQT as written: QT bits [18:4]. */
const IQT_LIMIT = 0x7fff0;
const U32 = 0xffff_ffff;

/** A 64-bit register value that holds only bits of `held`. */
function register(r: StateReader, name: string, held: bigint): bigint {
  const v = r.u64(name);
  r.check((v & ~held) === 0n, name, `is 0x${v.toString(16)}, with bits outside 0x${held.toString(16)} set`);
  return v;
}

/** A byte offset into a ring of `bytes` bytes, at a slot boundary of `slot` bytes. */
function ringOffset(r: StateReader, name: string, bytes: number, slot: number): number {
  const v = r.int(name, 0, bytes - slot);
  r.check(v % slot === 0, name, `is ${v}, not a multiple of ${slot}`);
  return v;
}

/** One event block [control, data, address, upper address] (fault, invalidation completion, page request). */
function eventBlock(e: StateReader, eim: boolean): EventState {
  const control = e.int(0, 0, U32);
  const data = e.int(1, 0, EVENT_DATA_MASK);
  const address = e.int(2, 0, U32);
  const upper = e.int(3, 0, eim ? U32 : 0);
  e.check((control & ~(EventControl.IM | EventControl.IP)) === 0, "control", `0x${control.toString(16)} has bits other than IM and IP`);
  e.check((address & ~EVENT_ADDRESS_MASK) === 0, "address", `0x${address.toString(16)} is not dword aligned`);
  return [control, data, address, upper];
}

/**
 * Checks a decoded VT-d state of format `version` field by field against the restoring device's configuration
 * (version 2: the CAP and ECAP saved are the device's own; every version: the fault-record count,
 * the queue sizes IQA and PQA give, the bits each register can hold, the consistency of GSTS with what it
 * reports) and returns it as a plain value; EINVAL naming the first bad field. Nothing is applied here.
 */
export function parseVtdState(value: StateValue, limits: VtdStateLimits, version: number): Result<VtdSavedState> {
  return StateReader.read(value, "VT-d", (r) => {
    if (version >= 2) {
      // The guest's view of the unit: restoring into another configuration would change it under the guest.
      const cap = r.u64("cap");
      r.check(cap === limits.cap, "cap", `is 0x${cap.toString(16)}, but this unit's CAP is 0x${limits.cap.toString(16)}: the guest was given a unit of another configuration`);
      const ecap = r.u64("ecap");
      r.check(ecap === limits.ecap, "ecap", `is 0x${ecap.toString(16)}, but this unit's ECAP is 0x${limits.ecap.toString(16)}: the guest was given a unit of another configuration`);
    }
    const gsts = r.u32("gsts");
    r.check((gsts & ~GSTS_HELD) === 0, "gsts", `is 0x${gsts.toString(16)}, with status bits this unit never sets`);
    const has = (bit: number): boolean => (gsts & bit) !== 0;
    const rtaddr = register(r, "rtaddr", RTADDR_MASK);
    const latched = r.array("latchedRoot", { exactly: 2 });
    const rootTable = latched[0]!.asInt(0, ROOT_LIMIT - 4096);
    const ttm = latched[1]!.asInt(0, 3);
    r.check(rootTable % 4096 === 0, "latchedRoot", `root table 0x${rootTable.toString(16)} is not page aligned`);
    r.check(has(Gsts.RTPS) || (rootTable === 0 && ttm === 0), "latchedRoot", "holds a root table but GSTS.RTPS is clear");
    const ccmd = register(r, "ccmd", CCMD_HELD);
    const iva = register(r, "iva", IVA_MASK);
    const iotlb = register(r, "iotlb", IOTLB_HELD);
    const ics = r.int("ics", 0, 1);

    const f = r.object("faults");
    const records = f.ints("records", 0, U32, { exactly: limits.faultRecords * 4 });
    const status = f.u32("status");
    f.check((status & ~FSTS_RW1C) === 0, "status", `is 0x${status.toString(16)}, with bits that are not status bits`);
    const faults = { records, status, fri: f.index("fri", limits.faultRecords), next: f.index("next", limits.faultRecords) };

    const q = r.object("queue");
    const iqaHeld = limits.wideDescriptors ? IQA_MASK | IQA_DW : IQA_MASK;
    const iqa = register(q, "iqa", iqaHeld);
    // The ring QIE latched (streams saved before it was kept latched IQA as written).
    const latchedIqa = q.has("latchedIqa") ? register(q, "latchedIqa", iqaHeld) : iqa;
    const enabled = q.bool("enabled");
    r.check(enabled === has(Gsts.QIES), "queue.enabled", `is ${enabled} but GSTS.QIES is ${has(Gsts.QIES) ? "set" : "clear"}`);
    const wide = (latchedIqa & IQA_DW) !== 0n;
    const slot = wide ? 32 : 16;
    const ringBytes = invalidationQueueEntries(Number(latchedIqa & 7n), wide ? DescriptorWidth.DW_256 : DescriptorWidth.DW_128) * slot;
    // IQH is 0 while queued invalidation is off (the hardware resets it) and a slot of the latched ring while on.
    const head = enabled ? ringOffset(q, "head", ringBytes, slot) : q.int("head", 0, 0);
    const tail = ringOffset(q, "tail", IQT_LIMIT + 16, 16);
    const lastWasWait = q.bool("lastWasWait");
    // IQERCD (absent from streams saved before it was kept: read as 0).
    let errors: [number, number, number] = [0, 0, 0];
    if (q.has("errors")) {
      const e = q.array("errors", { exactly: 3 });
      errors = [e[0]!.asInt(0, 0xf), e[1]!.asInt(0, 0xffff), e[2]!.asInt(0, 0xffff)];
    }

    const m = r.object("remapper");
    const irtaHeld = limits.eim ? IRTA_MASK | IRTA_EIME : IRTA_MASK;
    const remapper = { irta: register(m, "irta", irtaHeld), latchedIrta: register(m, "latchedIrta", irtaHeld), enabled: m.bool("enabled"), cfis: m.bool("cfis"), latched: m.bool("latched") };
    r.check(remapper.enabled === has(Gsts.IRES), "remapper.enabled", `disagrees with GSTS.IRES`);
    r.check(remapper.cfis === has(Gsts.CFIS), "remapper.cfis", `disagrees with GSTS.CFIS`);
    r.check(remapper.latched === has(Gsts.IRTPS), "remapper.latched", `disagrees with GSTS.IRTPS`);

    const p = r.object("prq");
    const pqa = register(p, "pqa", PQA_MASK);
    const prqBytes = pageRequestQueueEntries(Number(pqa & 7n)) * PAGE_REQUEST_BYTES;
    const prq = { pqa, head: ringOffset(p, "head", prqBytes, PAGE_REQUEST_BYTES), tail: ringOffset(p, "tail", prqBytes, PAGE_REQUEST_BYTES), prs: p.int("prs", 0, 3) };

    const ev = r.array("events", { exactly: 3 });
    const events = [eventBlock(ev[0]!, limits.eim), eventBlock(ev[1]!, limits.eim), eventBlock(ev[2]!, limits.eim)] as const;
    return {
      gsts,
      rtaddr,
      rootTable,
      ttm,
      ccmd,
      iva,
      iotlb,
      ics,
      faults,
      queue: { iqa, latchedIqa, head, tail, enabled, lastWasWait, errors },
      remapper,
      prq,
      events,
    };
  });
}

function setEvent(e: EventInterrupt, s: EventState): void {
  [e.control, e.data, e.address, e.upperAddress] = s;
}

/** Applies a checked state to the device's guest-visible parts (the host side is rebuilt by the caller). */
export function applyVtdState(d: VtdDevice, s: VtdSavedState, eimAllowed: boolean): void {
  const r = d.registers;
  r.gsts = s.gsts >>> 0;
  r.rtaddr = s.rtaddr;
  r.ccmd = s.ccmd;
  r.iva = s.iva;
  r.iotlb = s.iotlb;
  r.ics = s.ics;
  d.translator.rootTable = s.rootTable;
  d.translator.ttm = s.ttm;
  d.faults.restore(s.faults);
  d.queue.restore(s.queue);
  d.remapper.restore(s.remapper, eimAllowed);
  d.prq.restore(s.prq);
  setEvent(d.faults.event, s.events[0]);
  setEvent(d.invalidationEvent, s.events[1]);
  setEvent(d.prq.event, s.events[2]);
}
