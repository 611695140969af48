import { decodeLayout, defineLayout, encodeLayout, type FieldSpec, type Fields, type Layout, type RawBits } from "@viommu/core";

/**
 * Event queue records: 32 bytes, event number in bits [7:0] (IHI0070 §7.3; spec arm-hyperv-virtio.md §1.11).
 * One layout per event type, holding only the fields that event defines (the rest are RES0). Positions are
 * absolute within the 256-bit record.
 *
 * Choices (see the package report):
 * - F_CD_FETCH carries FetchAddr in dw3 (architecture, Linux); QEMU writes it into the InputAddr slot.
 * - F_WALK_EABT has no Stall/STAG: the architecture lists only F_TRANSLATION, F_ADDR_SIZE, F_ACCESS and
 *   F_PERMISSION as events with a Stall parameter. TTRnW is defined for F_PERMISSION only.
 * - C_BAD_SUBSTREAMID has no SSV (its SubstreamID is always valid); F_STREAM_DISABLED has only StreamID.
 * - NSIPA (dw3 bit 0) and the E_PAGE_REQUEST flag/Span positions come from the IHI0070 record diagrams, not
 *   from Linux or QEMU (neither decodes them). IMPLEMENTATION DEFINED Reason fields are not declared.
 */

const EVENT_ID = { name: "EventID", bit: 0, width: 8 } as const;
const SSV = { name: "SSV", bit: 11, width: 1 } as const;
const SUBSTREAM = { name: "SubstreamID", bit: 12, width: 20 } as const;
const STREAM = { name: "StreamID", bit: 32, width: 32 } as const;
const STAG = { name: "STAG", bit: 64, width: 16 } as const;
const STALL = { name: "Stall", bit: 95, width: 1 } as const;
const PNU = { name: "PnU", bit: 97, width: 1 } as const;
const IND = { name: "InD", bit: 98, width: 1 } as const;
const RNW = { name: "RnW", bit: 99, width: 1 } as const;
const S2 = { name: "S2", bit: 103, width: 1 } as const;
const CLASS = { name: "CLASS", bit: 104, width: 2 } as const;
const TTRNW = { name: "TTRnW", bit: 108, width: 1 } as const;
/** The full 64-bit input address: a bigint. */
const INPUT_ADDR = { name: "InputAddr", bit: 128, width: 64, big: true } as const;
const NSIPA = { name: "NSIPA", bit: 192, width: 1 } as const;
const IPA = { name: "IPA", bit: 204, width: 40, shift: 12 } as const;
const FETCH_ADDR = { name: "FetchAddr", bit: 195, width: 49, shift: 3 } as const;

const COMMON = [EVENT_ID, SSV, SUBSTREAM, STREAM] as const;
const FAULT = [...COMMON, STAG, STALL, PNU, IND, RNW, S2, CLASS, INPUT_ADDR, NSIPA, IPA] as const;

function evt<const Fs extends readonly FieldSpec[]>(name: string, fields: Fs): Layout<Fs> {
  return defineLayout(name, 256, fields);
}

/** Every event type, by mnemonic. */
export const eventLayouts = {
  F_UUT: evt("F_UUT", [...COMMON, PNU, IND, RNW, INPUT_ADDR] as const),
  C_BAD_STREAMID: evt("C_BAD_STREAMID", COMMON),
  F_STE_FETCH: evt("F_STE_FETCH", [...COMMON, FETCH_ADDR] as const),
  C_BAD_STE: evt("C_BAD_STE", COMMON),
  F_BAD_ATS_TREQ: evt("F_BAD_ATS_TREQ", [...COMMON, INPUT_ADDR] as const),
  F_STREAM_DISABLED: evt("F_STREAM_DISABLED", [EVENT_ID, STREAM] as const),
  F_TRANSL_FORBIDDEN: evt("F_TRANSL_FORBIDDEN", [EVENT_ID, STREAM, RNW, INPUT_ADDR] as const),
  C_BAD_SUBSTREAMID: evt("C_BAD_SUBSTREAMID", [EVENT_ID, SUBSTREAM, STREAM] as const),
  F_CD_FETCH: evt("F_CD_FETCH", [...COMMON, FETCH_ADDR] as const),
  C_BAD_CD: evt("C_BAD_CD", COMMON),
  F_WALK_EABT: evt("F_WALK_EABT", [...COMMON, PNU, IND, RNW, S2, CLASS, INPUT_ADDR, FETCH_ADDR] as const),
  F_TRANSLATION: evt("F_TRANSLATION", FAULT),
  F_ADDR_SIZE: evt("F_ADDR_SIZE", FAULT),
  F_ACCESS: evt("F_ACCESS", FAULT),
  F_PERMISSION: evt("F_PERMISSION", [...FAULT, TTRNW] as const),
  F_TLB_CONFLICT: evt("F_TLB_CONFLICT", [...COMMON, PNU, IND, RNW, S2, INPUT_ADDR, IPA] as const),
  F_CFG_CONFLICT: evt("F_CFG_CONFLICT", COMMON),
  E_PAGE_REQUEST: evt("E_PAGE_REQUEST", [
    ...COMMON,
    { name: "uX", bit: 97, width: 1 },
    { name: "uW", bit: 98, width: 1 },
    { name: "uR", bit: 99, width: 1 },
    { name: "pX", bit: 101, width: 1 },
    { name: "pW", bit: 102, width: 1 },
    { name: "pR", bit: 103, width: 1 },
    { name: "Span", bit: 108, width: 8 },
    { name: "InputAddr", bit: 140, width: 52, shift: 12, big: true },
  ] as const),
  F_VMS_FETCH: evt("F_VMS_FETCH", [...COMMON, FETCH_ADDR] as const),
} as const;

export type EventName = keyof typeof eventLayouts;
export type EventFields<N extends EventName> = Fields<(typeof eventLayouts)[N]>;

export const EventType = {
  F_UUT: 0x01,
  C_BAD_STREAMID: 0x02,
  F_STE_FETCH: 0x03,
  C_BAD_STE: 0x04,
  F_BAD_ATS_TREQ: 0x05,
  F_STREAM_DISABLED: 0x06,
  F_TRANSL_FORBIDDEN: 0x07,
  C_BAD_SUBSTREAMID: 0x08,
  F_CD_FETCH: 0x09,
  C_BAD_CD: 0x0a,
  F_WALK_EABT: 0x0b,
  F_TRANSLATION: 0x10,
  F_ADDR_SIZE: 0x11,
  F_ACCESS: 0x12,
  F_PERMISSION: 0x13,
  F_TLB_CONFLICT: 0x20,
  F_CFG_CONFLICT: 0x21,
  E_PAGE_REQUEST: 0x24,
  F_VMS_FETCH: 0x25,
} as const satisfies Record<EventName, number>;

/** Event numbers 0xE0..0xEF are IMPLEMENTATION DEFINED (IMPDEF_EVENT0..15). */
export const IMPDEF_EVENT_FIRST = 0xe0;
export const IMPDEF_EVENT_LAST = 0xef;

/** CLASS values of fault records: what the faulting access was doing. */
export const EventClass = { CD: 0, TT: 1, IN: 2 } as const;

/** Events Linux forwards to a guest through the iommufd vEVENTQ (spec iommufd.md §3.6), StreamID rewritten. */
export const VEVENTQ_FORWARDED_EVENTS: readonly number[] = [
  EventType.C_BAD_STE,
  EventType.F_STREAM_DISABLED,
  EventType.C_BAD_SUBSTREAMID,
  EventType.C_BAD_CD,
  EventType.F_TRANSLATION,
  EventType.F_ADDR_SIZE,
  EventType.F_ACCESS,
  EventType.F_PERMISSION,
];

const nameByType = new Map<number, EventName>(Object.entries(EventType).map(([name, code]) => [code, name as EventName]));
const impdefLayout = defineLayout("IMPDEF_EVENT", 256, [EVENT_ID] as const);

/** The mnemonic of an event number: a defined event, IMPDEF_EVENTn, or undefined (reserved). */
export function eventName(code: number): string | undefined {
  const name = nameByType.get(code);
  if (name !== undefined) return name;
  if (code >= IMPDEF_EVENT_FIRST && code <= IMPDEF_EVENT_LAST) return `IMPDEF_EVENT${code - IMPDEF_EVENT_FIRST}`;
  return undefined;
}

export type DecodedEvent =
  | { readonly [N in EventName]: { readonly name: N; readonly code: number; readonly fields: EventFields<N> } }[EventName]
  | { readonly name: string; readonly code: number; readonly fields: { readonly EventID: number } };

/**
 * Decodes a 256-bit event record (8 × 32-bit halves). Never throws for 256 bits: IMPLEMENTATION DEFINED events
 * decode as IMPDEF_EVENTn and reserved numbers as UNKNOWN, both with just their EventID.
 */
export function decodeEvent(raw: RawBits): DecodedEvent {
  const code = raw[0]! & 0xff;
  const name = nameByType.get(code);
  if (name === undefined) return { name: eventName(code) ?? "UNKNOWN", code, fields: decodeLayout(impdefLayout, raw) };
  return { name, code, fields: decodeLayout(eventLayouts[name], raw) } as DecodedEvent;
}

/** Encodes an event record; EventID comes from `name`, unspecified fields are zero. */
export function encodeEvent<N extends EventName>(name: N, fields: Partial<Omit<EventFields<N>, "EventID">>): RawBits {
  const raw = encodeLayout(eventLayouts[name] as Layout, fields as Partial<Fields<Layout>>);
  raw[0] = ((raw[0]! & ~0xff) | EventType[name]) >>> 0;
  return raw;
}

/** A vEVENT for the guest (Linux arm_vmaster_report_event): the record with StreamID replaced by the vSID. */
export function withStreamId(raw: RawBits, streamId: number): RawBits {
  const out = raw.slice();
  out[1] = streamId >>> 0;
  return out;
}
