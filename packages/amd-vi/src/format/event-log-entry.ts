import { defineLayout, encodeLayout, type DecodedStructure, type Layout, type RawBits } from "@viommu/core";
import { fieldRecord } from "./layout-tools.js";

/**
 * Event log entries (128 bits; spec x86.md B7). The event code is bits [63:60]; a code of 0 means "not
 * yet written" (Linux polls until it changes) and decodes as UNKNOWN.
 *
 * Sources: Linux EVENT_* and iommu_print_event / amd_iommu_report_rmp_* (what a Linux guest reads: devid
 * d0[15:0], PASID (d0 & 0xF0000) | d1[15:0], flags d1[27:16], address d3:d2), VirtualBox EVT_*_T (AMD spec
 * 3.05 field layouts, which give the per-event flag positions the spec file marks unverified: GN 48, NX 49,
 * US 50, I 51, PR 52, RW 53, PE 54, RZ 55, TR 56, confirming Linux's EVENT_FLAG_I and EVENT_FLAG_RW), and the
 * AMD spec 3.11 event list for codes 0xA–0xE (EVENT_COUNTER_ZERO = 0xA; VirtualBox's "0x10" is decimal 10
 * written as hex: a 4-bit code cannot hold 0x10). Address is the whole second qword, as Linux reads it;
 * for the hardware-error events the low 4 bits are reserved by the specification.
 */
export const EventCode = {
  ILLEGAL_DEV_TABLE_ENTRY: 0x1,
  IO_PAGE_FAULT: 0x2,
  DEV_TAB_HARDWARE_ERROR: 0x3,
  PAGE_TAB_HARDWARE_ERROR: 0x4,
  ILLEGAL_COMMAND_ERROR: 0x5,
  COMMAND_HARDWARE_ERROR: 0x6,
  IOTLB_INV_TIMEOUT: 0x7,
  INVALID_DEVICE_REQUEST: 0x8,
  INVALID_PPR_REQUEST: 0x9,
  EVENT_COUNTER_ZERO: 0xa,
  GUEST_EVENT_FAULT: 0xb,
  VIOMMU_HARDWARE_ERROR: 0xc,
  RMP_PAGE_FAULT: 0xd,
  RMP_HARDWARE_ERROR: 0xe,
} as const;
export type EventCode = (typeof EventCode)[keyof typeof EventCode];

/** Bit n of the 12-bit flags field (QW0 bit 48 + n), for building events. */
export const EventFlag = { GN: 1 << 0, NX: 1 << 1, US: 1 << 2, I: 1 << 3, PR: 1 << 4, RW: 1 << 5, PE: 1 << 6, RZ: 1 << 7, TR: 1 << 8 } as const;

export const EVENT_BYTES = 16;

const code = { name: "EventCode", bit: 60, width: 4 } as const;
const address = { name: "Address", bit: 64, width: 64, big: true } as const;
const deviceId = { name: "DeviceID", bit: 0, width: 16 } as const;
const pasid19To16 = { name: "PASID_19_16", bit: 16, width: 4 } as const;
const pasid15To0 = { name: "PASID_15_0", bit: 32, width: 16 } as const;
const domainIdOrPasid = { name: "DomainIDOrPASID", bit: 32, width: 16 } as const;
/** Hardware error Type [58:57]: the kind of bus error when fetching the structure. */
const hardwareErrorType = { name: "Type", bit: 57, width: 2 } as const;
/** The 12 flag bits as one field, for events whose individual flag positions are not in the sources read. */
const flagsField = { name: "Flags", bit: 48, width: 12 } as const;

type EventFlagName = keyof typeof EventFlag;
type FlagFields<Names extends readonly EventFlagName[]> = { [K in keyof Names]: { readonly name: Names[K]; readonly bit: number; readonly width: 1 } };

/** The named one-bit flag fields at their EventFlag positions (QW0 bit 48 + n), so each position is stated once. */
function flags<const Names extends readonly EventFlagName[]>(...names: Names): FlagFields<Names> {
  return names.map((name) => ({ name, bit: 48 + 31 - Math.clz32(EventFlag[name]), width: 1 as const })) as FlagFields<Names>;
}

export const illegalDevTableEntryLayout = defineLayout("ILLEGAL_DEV_TABLE_ENTRY", 128, [deviceId, pasid19To16, pasid15To0, ...flags("GN", "I", "RW", "RZ", "TR"), code, address] as const);

/** IO_PAGE_FAULT: QW0[47:32] is the DomainID, or PASID[15:0] when GN = 1. */
export const ioPageFaultLayout = defineLayout("IO_PAGE_FAULT", 128, [
  deviceId,
  pasid19To16,
  domainIdOrPasid,
  ...flags("GN", "NX", "US", "I", "PR", "RW", "PE", "RZ", "TR"),
  code,
  address,
] as const);

export const devTabHardwareErrorLayout = defineLayout("DEV_TAB_HARDWARE_ERROR", 128, [deviceId, ...flags("I", "RW", "TR"), hardwareErrorType, code, address] as const);

export const pageTabHardwareErrorLayout = defineLayout("PAGE_TAB_HARDWARE_ERROR", 128, [
  deviceId,
  domainIdOrPasid,
  ...flags("GN", "I", "RW", "TR"),
  hardwareErrorType,
  code,
  address,
] as const);

/** ILLEGAL_COMMAND_ERROR: the address is the physical address of the offending command. */
export const illegalCommandErrorLayout = defineLayout("ILLEGAL_COMMAND_ERROR", 128, [code, address] as const);

export const commandHardwareErrorLayout = defineLayout("COMMAND_HARDWARE_ERROR", 128, [hardwareErrorType, code, address] as const);

/** IOTLB_INV_TIMEOUT: the address is that of the INVALIDATE_IOTLB_PAGES command that timed out. */
export const iotlbInvTimeoutLayout = defineLayout("IOTLB_INV_TIMEOUT", 128, [deviceId, code, address] as const);

/** INVALID_DEVICE_REQUEST has its own US position (bit 49, NX's elsewhere) and a 3-bit Type. */
export const invalidDeviceRequestLayout = defineLayout("INVALID_DEVICE_REQUEST", 128, [
  deviceId,
  pasid19To16,
  pasid15To0,
  ...flags("GN"),
  { name: "US", bit: 49, width: 1 },
  ...flags("TR"),
  { name: "Type", bit: 57, width: 3 },
  code,
  address,
] as const);

/**
 * INVALID_PPR_REQUEST carries the PPR request in the PPR log layout (Linux: PPR_PASID of QW0, tag =
 * d1 & 0x3FF): [31:16] PASID[15:0], [41:32] tag, [45:42] PASID[19:16]. Its individual flag positions are not
 * in the sources read, so the 12 flag bits stay one field.
 */
export const invalidPprRequestLayout = defineLayout("INVALID_PPR_REQUEST", 128, [
  deviceId,
  { name: "PASID_15_0", bit: 16, width: 16 },
  { name: "Tag", bit: 32, width: 10 },
  { name: "PASID_19_16", bit: 42, width: 4 },
  flagsField,
  code,
  address,
] as const);

/** EVENT_COUNTER_ZERO (VirtualBox EVT_EVENT_COUNTER_ZERO): the counter value split [83:64] high, [127:96] low. */
export const eventCounterZeroLayout = defineLayout("EVENT_COUNTER_ZERO", 128, [
  code,
  { name: "CounterNote_51_32", bit: 64, width: 20 },
  { name: "CounterNote_31_0", bit: 96, width: 32 },
] as const);

/** RMP_PAGE_FAULT (SNP host; Linux amd_iommu_report_rmp_fault): [23:16] RMP flags, [47:32] VMG tag, flags, QW1 = GPA. */
export const rmpPageFaultLayout = defineLayout("RMP_PAGE_FAULT", 128, [
  deviceId,
  { name: "RMPFlags", bit: 16, width: 8 },
  { name: "VMGTag", bit: 32, width: 16 },
  flagsField,
  code,
  { name: "GPA", bit: 64, width: 64, big: true },
] as const);

/** RMP_HARDWARE_ERROR (Linux amd_iommu_report_rmp_hw_error): [47:32] VMG tag, flags, SPA = QW1 & ~7. */
export const rmpHardwareErrorLayout = defineLayout("RMP_HARDWARE_ERROR", 128, [
  deviceId,
  { name: "VMGTag", bit: 32, width: 16 },
  flagsField,
  code,
  { name: "SPA", bit: 67, width: 61, shift: 3, big: true },
] as const);

/** Events whose operands are not in the sources read (GUEST_EVENT_FAULT, VIOMMU_HARDWARE_ERROR, unknown codes). */
export const genericEventLayout = defineLayout("EVENT", 128, [
  { name: "Operand1", bit: 0, width: 60, big: true },
  code,
  { name: "Operand2", bit: 64, width: 64, big: true },
] as const);

const layoutByCode: ReadonlyMap<number, Layout> = new Map<number, Layout>([
  [EventCode.ILLEGAL_DEV_TABLE_ENTRY, illegalDevTableEntryLayout],
  [EventCode.IO_PAGE_FAULT, ioPageFaultLayout],
  [EventCode.DEV_TAB_HARDWARE_ERROR, devTabHardwareErrorLayout],
  [EventCode.PAGE_TAB_HARDWARE_ERROR, pageTabHardwareErrorLayout],
  [EventCode.ILLEGAL_COMMAND_ERROR, illegalCommandErrorLayout],
  [EventCode.COMMAND_HARDWARE_ERROR, commandHardwareErrorLayout],
  [EventCode.IOTLB_INV_TIMEOUT, iotlbInvTimeoutLayout],
  [EventCode.INVALID_DEVICE_REQUEST, invalidDeviceRequestLayout],
  [EventCode.INVALID_PPR_REQUEST, invalidPprRequestLayout],
  [EventCode.EVENT_COUNTER_ZERO, eventCounterZeroLayout],
  [EventCode.RMP_PAGE_FAULT, rmpPageFaultLayout],
  [EventCode.RMP_HARDWARE_ERROR, rmpHardwareErrorLayout],
]);

const nameByCode: ReadonlyMap<number, string> = new Map(Object.entries(EventCode).map(([name, c]) => [c, name]));

export function eventName(eventCode: number): string {
  return nameByCode.get(eventCode) ?? "UNKNOWN";
}

export function eventLayout(eventCode: number): Layout {
  return layoutByCode.get(eventCode) ?? genericEventLayout;
}

/** The event code from the entry's second 32-bit word (d1[31:28]). */
export function eventCodeOf(raw: RawBits): number {
  return raw[1]! >>> 28;
}

/** Decodes any 128 bits as an event log entry; never throws for a 128-bit input. */
export function decodeEvent(raw: RawBits): DecodedStructure {
  const c = eventCodeOf(raw);
  const fields = fieldRecord(eventLayout(c), raw);
  if ("PASID_15_0" in fields && "PASID_19_16" in fields) {
    fields["PASID"] = Number(fields["PASID_19_16"]) * 0x10000 + Number(fields["PASID_15_0"]);
  }
  if (c === EventCode.EVENT_COUNTER_ZERO) {
    fields["CounterNote"] = Number(fields["CounterNote_51_32"]) * 2 ** 32 + Number(fields["CounterNote_31_0"]);
  }
  return { name: eventName(c), code: c, fields };
}

/**
 * Builds an event from named fields (EventCode filled in). Values must fit their fields; the VMM builds
 * events from trusted values.
 */
export function encodeEvent(eventCode: EventCode, fields: Readonly<Record<string, number | bigint>>): RawBits {
  const layout = eventLayout(eventCode);
  return encodeLayout(layout, { ...fields, EventCode: eventCode } as never);
}

/** The 12-bit flags field as Linux reads it (d1[27:16]). */
export function eventFlags(raw: RawBits): number {
  return (raw[1]! >>> 16) & 0xfff;
}

/** An IO_PAGE_FAULT event: DeviceID, DomainID (or PASID with GN), the faulting address and flags (EventFlag bits). */
export function buildIoPageFaultEvent(options: { deviceId: number; domainIdOrPasid: number; address: bigint; flags: number; pasid19_16?: number }): RawBits {
  const raw = new Uint32Array(4);
  raw[0] = ((options.deviceId & 0xffff) | (((options.pasid19_16 ?? 0) & 0xf) << 16)) >>> 0;
  raw[1] = ((options.domainIdOrPasid & 0xffff) | ((options.flags & 0xfff) << 16) | (EventCode.IO_PAGE_FAULT << 28)) >>> 0;
  raw[2] = Number(options.address & 0xffff_ffffn);
  raw[3] = Number((options.address >> 32n) & 0xffff_ffffn);
  return raw;
}
