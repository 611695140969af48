import { WalkFault, type WalkResult } from "@viommu/core";
import { EventClass, EventType } from "../format/event-record.js";

/**
 * What the architectural lookup learnt about one transaction besides the vendor-neutral `WalkResult`: the
 * event the SMMU records for it (IHI0070 §7.3) and the fields that event carries. One instance is owned by each
 * translator and refilled per transaction, so the hot path allocates nothing.
 */
export interface SmmuWalkInfo {
  /** The event number to record, or 0 when the transaction succeeded or was terminated without a record (abort STE, GBPA). */
  event: number;
  /** The event is written to the event queue (CD.R / STE.S2R gate translation-walk events; configuration errors always are). */
  record: boolean;
  stage2: boolean;
  /** EventClass of the access that faulted (CD fetch, stage-1 table walk, input address). */
  eventClass: number;
  /** The IPA a stage-2 fault was translating. */
  ipa: number;
  /** The address of a failed fetch (F_STE_FETCH, F_CD_FETCH, F_WALK_EABT). */
  fetchAddress: number;
  /** The CD's ASID when stage 1 translated (or −1). */
  asid: number;
  /** Stage 1 was bypassed (STE bypass, S1DSS bypass, SMMU disabled with GBPA bypass). */
  bypass: boolean;
}

export function newSmmuWalkInfo(): SmmuWalkInfo {
  return { event: 0, record: false, stage2: false, eventClass: EventClass.IN, ipa: 0, fetchAddress: 0, asid: -1, bypass: false };
}

export function resetSmmuWalkInfo(info: SmmuWalkInfo): void {
  info.event = 0;
  info.record = false;
  info.stage2 = false;
  info.eventClass = EventClass.IN;
  info.ipa = 0;
  info.fetchAddress = 0;
  info.asid = -1;
  info.bypass = false;
}

/** The translation-walk event for a walker fault (both stages; IHI0070 §7.3.12–7.3.15, §7.3.11). */
export function walkFaultEvent(fault: WalkFault): number {
  switch (fault) {
    case WalkFault.AddressSize:
      return EventType.F_ADDR_SIZE;
    case WalkFault.AccessFlag:
      return EventType.F_ACCESS;
    case WalkFault.Permission:
      return EventType.F_PERMISSION;
    case WalkFault.External:
      return EventType.F_WALK_EABT;
    default:
      return EventType.F_TRANSLATION;
  }
}

/** Marks `out` as failed by a configuration problem (no page was walked): the event says which. */
export function configFault(out: WalkResult, info: SmmuWalkInfo, event: number, input: number): void {
  out.ok = false;
  out.mapped = false;
  out.fault = WalkFault.Translation;
  out.stage = 1;
  out.faultInput = input;
  info.event = event;
  info.record = event !== 0;
}

/**
 * Whether a transaction's input is an address the model can carry: a non-negative integer below 2^53. Anything
 * else (a fraction, NaN, a value at or above 2^53 such as a sign-extended TTB1-half address) is outside every
 * range the SMMU checks, and gets the event an address beyond that range gets.
 */
export function isInputAddress(x: number): boolean {
  return Number.isSafeInteger(x) && x >= 0;
}

/**
 * A transaction that bypasses stage 1 (IHI0070 §3.4): its address is the output, unless it exceeds the
 * `limitBits` the SMMU implements (the OAS for an STE bypassing every stage, the IAS when stage 1 alone is
 * bypassed), when it is terminated with F_ADDR_SIZE (CLASS IN, S2 = 0, always recorded).
 */
export function bypassChecked(out: WalkResult, info: SmmuWalkInfo, input: number, limitBits: number): void {
  if (isInputAddress(input) && input < 2 ** limitBits) return bypassResult(out, info, input);
  configFault(out, info, EventType.F_ADDR_SIZE, input);
  out.fault = WalkFault.AddressSize;
  info.eventClass = EventClass.IN;
}

/** Marks `out` as a transaction passed through untranslated (output = input). */
export function bypassResult(out: WalkResult, info: SmmuWalkInfo, input: number): void {
  out.ok = true;
  out.mapped = true;
  out.output = input;
  out.pageShift = 12;
  out.perms = 15;
  out.fault = WalkFault.None;
  out.stage = 1;
  out.faultInput = input;
  info.bypass = true;
}
