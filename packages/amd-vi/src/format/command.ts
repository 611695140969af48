import { defineLayout, encodeLayout, hasReservedBits, rawBits, type DecodedStructure, type Layout, type RawBits } from "@viommu/core";
import { fieldRecord, firstZeroAtOrAbove12 } from "./layout-tools.js";

/**
 * Command buffer entries (128 bits; spec x86.md B6). The opcode is bits [63:60]. Sources: Linux
 * CMD_* and build_* in iommu.c (what a Linux guest writes), QEMU's per-command reserved-bit masks, Xen and
 * VirtualBox CMD_*_T (AMD spec 3.05 field names). Opcodes 9 INSERT_GUEST_EVENT and 10 RESET_VMMIO belong to
 * the hardware vIOMMU (AMD spec 3.11 command list); their operands are not published in the sources read,
 * so they decode as two raw operands.
 */
export const CommandOpcode = {
  COMPLETION_WAIT: 0x1,
  INVALIDATE_DEVTAB_ENTRY: 0x2,
  INVALIDATE_IOMMU_PAGES: 0x3,
  INVALIDATE_IOTLB_PAGES: 0x4,
  INVALIDATE_INTERRUPT_TABLE: 0x5,
  PREFETCH_IOMMU_PAGES: 0x6,
  COMPLETE_PPR_REQUEST: 0x7,
  INVALIDATE_IOMMU_ALL: 0x8,
  INSERT_GUEST_EVENT: 0x9,
  RESET_VMMIO: 0xa,
} as const;
export type CommandOpcode = (typeof CommandOpcode)[keyof typeof CommandOpcode];

export const COMMAND_BYTES = 16;

const opcodeField = { name: "Opcode", bit: 60, width: 4 } as const;
const deviceIdField = { name: "DeviceID", bit: 0, width: 16 } as const;
/** PASID [51:32] (PREFETCH_IOMMU_PAGES, COMPLETE_PPR_REQUEST); INVALIDATE_IOMMU_PAGES has it at [19:0]. */
const pasidHighField = { name: "PASID", bit: 32, width: 20 } as const;
/** S: the address word is a size-encoded range (see `invalidationRange`). */
const sizeField = { name: "S", bit: 64, width: 1 } as const;
/** GN: the PASID is valid (a guest, v2-table, request). */
const guestField = { name: "GN", bit: 66, width: 1 } as const;
/** Address[63:12] of the range's address word. */
const pageAddressField = { name: "Address", bit: 76, width: 52, shift: 12, big: true } as const;

/** COMPLETION_WAIT: [0] S store, [1] I interrupt, [2] F flush, [51:3] store address, [127:64] store data. */
export const completionWaitLayout = defineLayout("COMPLETION_WAIT", 128, [
  { name: "S", bit: 0, width: 1 },
  { name: "I", bit: 1, width: 1 },
  { name: "F", bit: 2, width: 1 },
  { name: "StoreAddress", bit: 3, width: 49, shift: 3 },
  opcodeField,
  { name: "StoreData", bit: 64, width: 64, big: true },
] as const);

export const invalidateDevtabEntryLayout = defineLayout("INVALIDATE_DEVTAB_ENTRY", 128, [deviceIdField, opcodeField] as const);

/** INVALIDATE_IOMMU_PAGES: [19:0] PASID (with GN), [47:32] DomainID, [64] S, [65] PDE, [66] GN, [127:76] address[63:12]. */
export const invalidateIommuPagesLayout = defineLayout("INVALIDATE_IOMMU_PAGES", 128, [
  { name: "PASID", bit: 0, width: 20 },
  { name: "DomainID", bit: 32, width: 16 },
  opcodeField,
  sizeField,
  { name: "PDE", bit: 65, width: 1 },
  guestField,
  pageAddressField,
] as const);

/**
 * INVALIDATE_IOTLB_PAGES: [15:0] DeviceID, [23:16] PASID[15:8], [31:24] MaxPend, [47:32] QueueID,
 * [55:48] PASID[7:0], [59:56] PASID[19:16], [64] S, [66] GN, [69:68] Type (EFR.InvIotlbTypeSup),
 * [127:76] address[63:12]. Linux build_inv_iotlb_pages writes PASID[15:8] to d0[23:16] and PASID[7:0] to
 * d1[23:16], and QueueID = DeviceID; Xen's mask reaches d1[27:16], which is where PASID[19:16] sits.
 * VirtualBox calls [23:16] "PASID lo" and [59:48] "PASID hi": the same bits, split differently.
 */
export const invalidateIotlbPagesLayout = defineLayout("INVALIDATE_IOTLB_PAGES", 128, [
  deviceIdField,
  { name: "PASID_15_8", bit: 16, width: 8 },
  { name: "MaxPend", bit: 24, width: 8 },
  { name: "QueueID", bit: 32, width: 16 },
  { name: "PASID_7_0", bit: 48, width: 8 },
  { name: "PASID_19_16", bit: 56, width: 4 },
  opcodeField,
  sizeField,
  guestField,
  { name: "Type", bit: 68, width: 2 },
  pageAddressField,
] as const);

export const invalidateInterruptTableLayout = defineLayout("INVALIDATE_INTERRUPT_TABLE", 128, [deviceIdField, opcodeField] as const);

/**
 * PREFETCH_IOMMU_PAGES (EFR.PrefSup; not used by Linux): [15:0] DeviceID, [31:24] PFCount, [51:32] PASID,
 * [64] S, [66] GN, [68] Inval, [127:76] address. Field names PFCount and Inval are the spec file's and are
 * marked unverified there; the bit positions agree with QEMU's reserved mask (QW0[23:16], QW0[59:52],
 * QW1 bits 1, 3, [11:5]).
 */
export const prefetchIommuPagesLayout = defineLayout("PREFETCH_IOMMU_PAGES", 128, [
  deviceIdField,
  { name: "PFCount", bit: 24, width: 8 },
  pasidHighField,
  opcodeField,
  sizeField,
  guestField,
  { name: "Inval", bit: 68, width: 1 },
  pageAddressField,
] as const);

/**
 * COMPLETE_PPR_REQUEST: [15:0] DeviceID, [51:32] PASID, [66] GN, [104:96] completion tag, [111:108]
 * status (the PCIe PRG response code: 0 success, 1 invalid request, 0xF failure). Linux
 * build_complete_ppr masks the tag to 9 bits and puts the status at d3[15:12]; VirtualBox declares a
 * 16-bit CompletionTag at [111:96] with no status; QEMU reserves neither. Following Linux.
 */
export const completePprRequestLayout = defineLayout("COMPLETE_PPR_REQUEST", 128, [
  deviceIdField,
  pasidHighField,
  opcodeField,
  guestField,
  { name: "CompletionTag", bit: 96, width: 9 },
  { name: "Status", bit: 108, width: 4 },
] as const);

export const invalidateIommuAllLayout = defineLayout("INVALIDATE_IOMMU_ALL", 128, [opcodeField] as const);

/** Operands of a command whose layout is not known here (opcodes 9, 10, and unknown opcodes). */
export const genericCommandLayout = defineLayout("COMMAND", 128, [
  { name: "Operand1", bit: 0, width: 60, big: true },
  opcodeField,
  { name: "Operand2", bit: 64, width: 64, big: true },
] as const);

const layoutByOpcode: ReadonlyMap<number, Layout> = new Map<number, Layout>([
  [CommandOpcode.COMPLETION_WAIT, completionWaitLayout],
  [CommandOpcode.INVALIDATE_DEVTAB_ENTRY, invalidateDevtabEntryLayout],
  [CommandOpcode.INVALIDATE_IOMMU_PAGES, invalidateIommuPagesLayout],
  [CommandOpcode.INVALIDATE_IOTLB_PAGES, invalidateIotlbPagesLayout],
  [CommandOpcode.INVALIDATE_INTERRUPT_TABLE, invalidateInterruptTableLayout],
  [CommandOpcode.PREFETCH_IOMMU_PAGES, prefetchIommuPagesLayout],
  [CommandOpcode.COMPLETE_PPR_REQUEST, completePprRequestLayout],
  [CommandOpcode.INVALIDATE_IOMMU_ALL, invalidateIommuAllLayout],
]);

const nameByOpcode: ReadonlyMap<number, string> = new Map(Object.entries(CommandOpcode).map(([name, code]) => [code, name]));

/** The opcode of a command from its second 32-bit word (d1[31:28]); for the queue hot path. */
export function commandOpcode(raw: RawBits): number {
  return raw[1]! >>> 28;
}

/** The spec's mnemonic for an opcode, or UNKNOWN. */
export function commandName(opcode: number): string {
  return nameByOpcode.get(opcode) ?? "UNKNOWN";
}

/** The layout of an opcode's operands, or undefined for opcodes whose operands are not known here. */
export function commandLayout(opcode: number): Layout | undefined {
  return layoutByOpcode.get(opcode);
}

/** Decodes any 128 bits as a command; never throws for a 128-bit input. */
export function decodeCommand(raw: RawBits): DecodedStructure {
  const code = commandOpcode(raw);
  const layout = layoutByOpcode.get(code) ?? genericCommandLayout;
  const fields = fieldRecord(layout, raw);
  if (code === CommandOpcode.INVALIDATE_IOTLB_PAGES) {
    fields["PASID"] = Number(fields["PASID_19_16"]) * 0x10000 + Number(fields["PASID_15_8"]) * 0x100 + Number(fields["PASID_7_0"]);
  }
  return { name: commandName(code), code, fields };
}

/**
 * Why a command is an ILLEGAL_COMMAND_ERROR (QEMU amdvi_cmdbuf_exec and its per-command reserved
 * masks), or undefined: an opcode outside 1..8, or a bit set outside the command's fields.
 */
export function commandProblem(raw: RawBits): "unknown-opcode" | "reserved-bits" | undefined {
  const layout = layoutByOpcode.get(commandOpcode(raw));
  if (layout === undefined) return "unknown-opcode";
  return hasReservedBits(layout, raw) ? "reserved-bits" : undefined;
}

function command(opcode: number): RawBits {
  const raw = rawBits(128);
  raw[1] = (opcode << 28) >>> 0;
  return raw;
}

/** COMPLETION_WAIT as Linux writes it (build_completion_wait: S = 1, semaphore address, data); `interrupt` adds I. */
export function buildCompletionWait(storeAddress: number, storeData: bigint, options: { interrupt?: boolean; flush?: boolean; store?: boolean } = {}): RawBits {
  return encodeLayout(
    completionWaitLayout,
    {
      S: options.store === false ? 0 : 1,
      I: options.interrupt ? 1 : 0,
      F: options.flush ? 1 : 0,
      StoreAddress: storeAddress,
      StoreData: storeData,
      Opcode: CommandOpcode.COMPLETION_WAIT,
    },
  );
}

export function buildInvalidateDevtabEntry(deviceId: number): RawBits {
  return encodeLayout(invalidateDevtabEntryLayout, { DeviceID: deviceId, Opcode: CommandOpcode.INVALIDATE_DEVTAB_ENTRY });
}

export function buildInvalidateInterruptTable(deviceId: number): RawBits {
  return encodeLayout(invalidateInterruptTableLayout, { DeviceID: deviceId, Opcode: CommandOpcode.INVALIDATE_INTERRUPT_TABLE });
}

export function buildInvalidateIommuAll(): RawBits {
  return command(CommandOpcode.INVALIDATE_IOMMU_ALL);
}

const PAGE_MASK_BIG = ~0xfffn & 0xffff_ffff_ffff_ffffn;
/** Linux CMD_INV_IOMMU_ALL_PAGES_ADDRESS: used as the size to mean "everything". */
export const INVALIDATE_ALL_PAGES_ADDRESS = 0x7fff_ffff_ffff_ffffn;

/**
 * The address word (QW1 with S, without PDE/GN) Linux build_inv_address computes for [address,
 * address + size): one page → the page address with S = 0; more → the address with every bit below the
 * highest bit that differs between start and end set, S = 1; a range whose start and end differ above
 * bit 51 → 0x7FFF_FFFF_FFFF_F000 | S ("invalidate everything").
 */
export function linuxInvalidationAddress(address: bigint, size: bigint): bigint {
  // u64 arithmetic, as in Linux (a size of ~0 from address 0 must not overflow differently).
  const end = (address + size - 1n) & 0xffff_ffff_ffff_ffffn;
  if ((address & PAGE_MASK_BIG) === (end & PAGE_MASK_BIG)) return address & PAGE_MASK_BIG;
  const msbDiff = BigInt((end ^ address).toString(2).length - 1);
  const word = msbDiff > 51n ? INVALIDATE_ALL_PAGES_ADDRESS : address | ((1n << msbDiff) - 1n);
  return (word & PAGE_MASK_BIG) | 1n;
}

/** A guest request: PASID[19:0] at the bottom of dword `at` (0 or 1) and GN (bit 66). */
function setGuestPasid(raw: RawBits, at: 0 | 1, pasid: number): void {
  raw[at] = (raw[at]! | (pasid & 0xfffff)) >>> 0;
  raw[2] = (raw[2]! | 4) >>> 0;
}

function setQw1(raw: RawBits, word: bigint): void {
  raw[2] = (raw[2]! | Number(word & 0xffff_ffffn)) >>> 0;
  raw[3] = (raw[3]! | Number((word >> 32n) & 0xffff_ffffn)) >>> 0;
}

/**
 * INVALIDATE_IOMMU_PAGES as Linux build_inv_iommu_pages writes it: DomainID, the address word of
 * `linuxInvalidationAddress`, PDE always set, and PASID with GN for a v2 (guest) table.
 */
export function buildInvalidateIommuPages(options: { domainId: number; address: bigint; size: bigint; pasid?: number; pde?: boolean }): RawBits {
  const raw = command(CommandOpcode.INVALIDATE_IOMMU_PAGES);
  raw[1] = (raw[1]! | (options.domainId & 0xffff)) >>> 0;
  setQw1(raw, linuxInvalidationAddress(options.address, options.size));
  if (options.pde ?? true) raw[2] = (raw[2]! | 2) >>> 0;
  if (options.pasid !== undefined) setGuestPasid(raw, 0, options.pasid);
  return raw;
}

/**
 * INVALIDATE_IOTLB_PAGES as Linux build_inv_iotlb_pages writes it: DeviceID in d0 and again as QueueID
 * in d1, MaxPend = the device's ATS queue depth, the address word, and PASID split as PASID[15:8] in
 * d0[23:16], PASID[7:0] in d1[23:16] with GN.
 */
export function buildInvalidateIotlbPages(options: { deviceId: number; maxPend: number; address: bigint; size: bigint; pasid?: number }): RawBits {
  const raw = command(CommandOpcode.INVALIDATE_IOTLB_PAGES);
  raw[0] = ((options.deviceId & 0xffff) | ((options.maxPend & 0xff) << 24)) >>> 0;
  raw[1] = (raw[1]! | (options.deviceId & 0xffff)) >>> 0;
  setQw1(raw, linuxInvalidationAddress(options.address, options.size));
  if (options.pasid !== undefined) {
    raw[0] = (raw[0]! | (((options.pasid >>> 8) & 0xff) << 16)) >>> 0;
    raw[1] = (raw[1]! | ((options.pasid & 0xff) << 16) | (((options.pasid >>> 16) & 0xf) << 24)) >>> 0;
    raw[2] = (raw[2]! | 4) >>> 0;
  }
  return raw;
}

/** COMPLETE_PPR_REQUEST as Linux build_complete_ppr writes it (tag masked to 9 bits, status in d3[15:12]). */
export function buildCompletePprRequest(options: { deviceId: number; tag: number; status: number; pasid?: number }): RawBits {
  const raw = command(CommandOpcode.COMPLETE_PPR_REQUEST);
  raw[0] = options.deviceId & 0xffff;
  if (options.pasid !== undefined) setGuestPasid(raw, 1, options.pasid);
  raw[3] = ((options.tag & 0x1ff) | ((options.status & 0xf) << 12)) >>> 0;
  return raw;
}

export function buildPrefetchIommuPages(options: { deviceId: number; pfCount: number; address: bigint; size: bigint; pasid?: number; invalidate?: boolean }): RawBits {
  const raw = command(CommandOpcode.PREFETCH_IOMMU_PAGES);
  raw[0] = ((options.deviceId & 0xffff) | ((options.pfCount & 0xff) << 24)) >>> 0;
  setQw1(raw, linuxInvalidationAddress(options.address, options.size));
  if (options.pasid !== undefined) setGuestPasid(raw, 1, options.pasid);
  if (options.invalidate) raw[2] = (raw[2]! | 0x10) >>> 0;
  return raw;
}

/**
 * The IOVA range an INVALIDATE_IOMMU_PAGES / INVALIDATE_IOTLB_PAGES / PREFETCH_IOMMU_PAGES address word
 * covers (spec x86.md B6; QEMU amdvi_decode_invalidation_size; Linux build_inv_address).
 * S = 0: the one 4 KiB page at address[51:12]. S = 1: the naturally aligned block of 2^(p+1) bytes where p
 * is the first 0 bit at or above bit 12. When p ≥ 52 (beyond the 52-bit address, e.g. Linux's
 * 0x7FFF_FFFF_FFFF_F000) the command covers every address: `all` is true. Bits 63:52 are the sign extension
 * of bit 51 and are otherwise ignored.
 */
export interface InvalidationRange {
  all: boolean;
  /** First byte covered. */
  base: number;
  /** Bytes covered (2^64 when `all`). */
  size: number;
}

export function newInvalidationRange(): InvalidationRange {
  return { all: false, base: 0, size: 0 };
}

/** Fills `out` from QW1's two halves; allocates nothing (queue hot path). */
export function decodeInvalidationRange(lo: number, hi: number, out: InvalidationRange): InvalidationRange {
  const addrLo = (lo & 0xfffff000) >>> 0;
  const addrHi = hi & 0xfffff;
  if ((lo & 1) === 0) {
    out.all = false;
    out.base = addrLo + addrHi * 0x1_0000_0000;
    out.size = 4096;
    return out;
  }
  const p = firstZeroAtOrAbove12(lo, hi);
  if (p >= 52) {
    out.all = true;
    out.base = 0;
    out.size = 2 ** 64;
    return out;
  }
  const size = 2 ** (p + 1);
  const address = addrLo + addrHi * 0x1_0000_0000;
  out.all = false;
  out.size = size;
  out.base = address - (address % size);
  return out;
}

export function invalidationRange(lo: number, hi: number): InvalidationRange {
  return decodeInvalidationRange(lo, hi, newInvalidationRange());
}
