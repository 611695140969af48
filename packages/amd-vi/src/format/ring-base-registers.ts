import { defineLayout, encodeLayout, type Layout, type RawBits } from "@viommu/core";

/**
 * The base registers of the IOMMU's in-memory rings (spec x86.md B1): base address in [51:12] and a
 * 4-bit length code in [59:56]. Command buffer (0x08, ComLen), event log (0x10, EventLen), PPR log
 * (0x38, PPRLen), GA log (0xE0, GALen), and the dual-log B copies (0xF0 PPR log B, 0xF8 event log B).
 *
 * Length code: 0–7 reserved, 8 = a 4 KiB ring, each step doubles it up to 15 = 512 KiB. With 16-byte
 * entries that is 2^len entries (Linux writes 9 = 512 commands/events/PPR entries); with the GA log's 8-byte
 * entries it is 2^(len+1) (Linux GA_LOG_SIZE_512 writes 8 for 512 entries). One rule covers both:
 * ring bytes = 2^(len + 4).
 */
type RingBaseFields<Base extends string, Len extends string> = readonly [
  { readonly name: Base; readonly bit: 12; readonly width: 40; readonly shift: 12 },
  { readonly name: Len; readonly bit: 56; readonly width: 4 },
];

/** One ring's base register under the spec's names for its two fields. */
function ringBaseLayout<const Base extends string, const Len extends string>(name: string, baseName: Base, lenName: Len): Layout<RingBaseFields<Base, Len>> {
  return defineLayout(name, 64, [
    { name: baseName, bit: 12, width: 40, shift: 12 },
    { name: lenName, bit: 56, width: 4 },
  ] as const);
}

export const commandBufferBaseLayout = ringBaseLayout("CommandBufferBase", "ComBase", "ComLen");
export const eventLogBaseLayout = ringBaseLayout("EventLogBase", "EventBase", "EventLen");
export const pprLogBaseLayout = ringBaseLayout("PprLogBase", "PPRLogBase", "PPRLen");
export const gaLogBaseLayout = ringBaseLayout("GaLogBase", "GALogBase", "GALen");
export const pprLogBBaseLayout = ringBaseLayout("PprLogBBase", "PPRLogBBase", "PPRLogBLen");
export const eventLogBBaseLayout = ringBaseLayout("EventLogBBase", "EventLogBBase", "EventLogBLen");

/** The smallest legal length code (4 KiB); codes below are reserved. */
export const MIN_RING_LENGTH_CODE = 8;
export const MAX_RING_LENGTH_CODE = 15;

export function ringLengthCodeValid(code: number): boolean {
  return Number.isInteger(code) && code >= MIN_RING_LENGTH_CODE && code <= MAX_RING_LENGTH_CODE;
}

/** Ring bytes for a length code (any of the rings). */
export function ringBytes(code: number): number {
  return 2 ** (code + 4);
}

/** Entries of `entryBytes` (16 for command/event/PPR, 8 for the GA log) a length code gives. */
export function ringEntries(code: number, entryBytes: 8 | 16): number {
  return ringBytes(code) / entryBytes;
}

/** The length code for a ring of `bytes` bytes (a power of two from 4 KiB to 512 KiB). */
export function ringLengthCodeFor(bytes: number): number {
  const code = Math.log2(bytes) - 4;
  if (!ringLengthCodeValid(code)) throw new RangeError(`no AMD-Vi ring length code for ${bytes} bytes`);
  return code;
}

export function encodeCommandBufferBase(base: number, code: number): RawBits {
  return encodeLayout(commandBufferBaseLayout, { ComBase: base, ComLen: code });
}

export function encodeEventLogBase(base: number, code: number): RawBits {
  return encodeLayout(eventLogBaseLayout, { EventBase: base, EventLen: code });
}

export function encodePprLogBase(base: number, code: number): RawBits {
  return encodeLayout(pprLogBaseLayout, { PPRLogBase: base, PPRLen: code });
}

export function encodeGaLogBase(base: number, code: number): RawBits {
  return encodeLayout(gaLogBaseLayout, { GALogBase: base, GALen: code });
}
