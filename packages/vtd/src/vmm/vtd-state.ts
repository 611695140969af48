import { err, ok, type Result, type StateValue } from "@viommu/core";
import type { EventInterrupt } from "./fault-recorder.js";
import type { VtdDevice } from "./vtd-device.js";

export const VTD_STATE_KIND = "vtd-iommu";
export const VTD_STATE_VERSION = 1;

type EventState = [number, number, number, number];

function eventState(e: EventInterrupt): EventState {
  return [e.control >>> 0, e.data, e.address, e.upperAddress];
}

function setEvent(e: EventInterrupt, s: unknown): void {
  if (!Array.isArray(s) || s.length !== 4 || !s.every((x) => Number.isInteger(x))) return;
  [e.control, e.data, e.address, e.upperAddress] = s as EventState;
}

/**
 * Everything guest-visible the device holds outside guest memory: register values, what SRTP and SIRTP
 * latched, the queues' pointers, the fault records and the event blocks. Host objects are not saved: the
 * destination rebuilds them from the guest's tables.
 */
export function snapshotVtdState(d: VtdDevice): Record<string, StateValue> {
  const r = d.registers;
  return {
    gsts: r.gsts >>> 0,
    rtaddr: r.rtaddr.toString(),
    latchedRoot: [d.translator.rootTable, d.translator.ttm],
    ccmd: r.ccmd.toString(),
    iva: r.iva.toString(),
    iotlb: r.iotlb.toString(),
    ics: r.ics,
    faults: d.faults.snapshot(),
    queue: d.queue.snapshot(),
    remapper: { ...d.remapper.snapshot(), latchedIrta: d.remapper.irta.toString() },
    prq: { pqa: d.prq.pqa.toString(), head: d.prq.head, tail: d.prq.tail, prs: d.prq.prs },
    events: [eventState(d.faults.event), eventState(d.invalidationEvent), eventState(d.prq.event)],
  };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isBigText = (v: unknown): v is string => typeof v === "string" && /^\d{1,20}$/.test(v);

/** Applies a decoded state; EINVAL (and nothing changed) when its shape is not this version's. */
export function restoreVtdState(d: VtdDevice, value: StateValue): Result<void> {
  if (!isObject(value)) return err("EINVAL", "VT-d state is not an object");
  const v = value;
  const faults = v.faults;
  const queue = v.queue;
  const remapper = v.remapper;
  const prq = v.prq;
  const latched = v.latchedRoot;
  const shapeOk =
    isInt(v.gsts) &&
    isBigText(v.rtaddr) &&
    isBigText(v.ccmd) &&
    isBigText(v.iva) &&
    isBigText(v.iotlb) &&
    isInt(v.ics) &&
    Array.isArray(latched) &&
    latched.length === 2 &&
    latched.every(isInt) &&
    isObject(faults) &&
    Array.isArray(faults.records) &&
    faults.records.length === d.faults.records.length &&
    faults.records.every(isInt) &&
    isInt(faults.status) &&
    isInt(faults.fri) &&
    isInt(faults.next) &&
    isObject(queue) &&
    isBigText(queue.iqa) &&
    isInt(queue.head) &&
    isInt(queue.tail) &&
    typeof queue.enabled === "boolean" &&
    typeof queue.lastWasWait === "boolean" &&
    isObject(remapper) &&
    isBigText(remapper.irta) &&
    isBigText(remapper.latchedIrta) &&
    typeof remapper.enabled === "boolean" &&
    typeof remapper.cfis === "boolean" &&
    typeof remapper.latched === "boolean" &&
    isObject(prq) &&
    isBigText(prq.pqa) &&
    isInt(prq.head) &&
    isInt(prq.tail) &&
    isInt(prq.prs) &&
    Array.isArray(v.events) &&
    v.events.length === 3;
  if (!shapeOk) return err("EINVAL", "VT-d state has an unexpected shape");
  const r = d.registers;
  r.gsts = (v.gsts as number) >>> 0;
  r.rtaddr = BigInt(v.rtaddr as string);
  r.ccmd = BigInt(v.ccmd as string);
  r.iva = BigInt(v.iva as string);
  r.iotlb = BigInt(v.iotlb as string);
  r.ics = (v.ics as number) & 1;
  d.translator.rootTable = latched[0] as number;
  d.translator.ttm = (latched[1] as number) & 3;
  d.faults.restore(faults as { records: number[]; status: number; fri: number; next: number });
  d.queue.restore(queue as { iqa: string; head: number; tail: number; enabled: boolean; lastWasWait: boolean });
  // The latched IRT is re-latched from its saved value, then IRTA gets what software last wrote.
  d.remapper.restore({ irta: remapper.latchedIrta as string, enabled: remapper.enabled as boolean, cfis: remapper.cfis as boolean, latched: remapper.latched as boolean }, true);
  d.remapper.irta = BigInt(remapper.irta as string);
  d.prq.pqa = BigInt(prq.pqa as string);
  d.prq.writeHead(BigInt(prq.head as number));
  d.prq.writeTail(BigInt(prq.tail as number));
  d.prq.prs = (prq.prs as number) & 3;
  const events = v.events as unknown[];
  setEvent(d.faults.event, events[0]);
  setEvent(d.invalidationEvent, events[1]);
  setEvent(d.prq.event, events[2]);
  return ok();
}
