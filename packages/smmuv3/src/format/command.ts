import { decodeLayout, defineLayout, encodeLayout, hasReservedBits, type FieldSpec, type Fields, type Layout, type RawBits } from "@viommu/core";

/**
 * Command queue entries: 16 bytes, opcode in dw0[7:0] (IHI0070 §4; spec arm-hyperv-virtio.md §1.8). Each
 * opcode has its own layout; bit positions are absolute within the 128-bit command (dw1 starts at bit 64).
 * Field names follow the spec file (SID, SSID, Addr, …) except where the architecture names the field
 * differently and the spec file gives no name.
 *
 * Choices where sources differ (see the package report):
 * - CMD_CFGI_ALL is opcode 0x04 (CMD_CFGI_STE_RANGE) with Range = 31, as the architecture and Linux define
 *   it; QEMU's label "CFGI_ALL" for 0x07 is wrong (0x07 is CMD_CFGI_VMS_PIDM, not modelled: UNKNOWN here).
 * - SCALE is dw0[24:20]; bit 25 extends it only with IDR5.DS (52-bit LPA2), which this model does not have.
 * - PRI_RESP.Resp is dw1[13:12] (architecture, Linux), not QEMU's dw1[12:11].
 * - CMD_RESUME's two action bits (Ac bit 12, AB bit 13) are one 2-bit field `Action`: 0 terminate, 1 retry,
 *   2 abort, as Linux encodes it.
 * - CMD_PREFETCH_ADDR's Stride and NS fields are not declared (positions not confirmed in the sources).
 */

const OP = { name: "Opcode", bit: 0, width: 8 } as const;
const SSEC = { name: "SSec", bit: 10, width: 1 } as const;
const SSV = { name: "SSV", bit: 11, width: 1 } as const;
const SSID = { name: "SSID", bit: 12, width: 20 } as const;
const SID = { name: "SID", bit: 32, width: 32 } as const;
const NUM = { name: "NUM", bit: 12, width: 5 } as const;
const SCALE = { name: "SCALE", bit: 20, width: 5 } as const;
const VMID = { name: "VMID", bit: 32, width: 16 } as const;
const ASID = { name: "ASID", bit: 48, width: 16 } as const;
const LEAF = { name: "Leaf", bit: 64, width: 1 } as const;
const TTL = { name: "TTL", bit: 72, width: 2 } as const;
const TG = { name: "TG", bit: 74, width: 2 } as const;
/** VA[63:12]: 64-bit, so a bigint. */
const ADDR = { name: "Addr", bit: 76, width: 52, shift: 12, big: true } as const;
/** IPA[51:12]. */
const IPA = { name: "IPA", bit: 76, width: 40, shift: 12 } as const;

function cmd<const Fs extends readonly FieldSpec[]>(name: string, fields: Fs): Layout<Fs> {
  return defineLayout(name, 128, fields);
}

/** Every command the architecture defines (that this model knows), by its mnemonic. */
export const commandLayouts = {
  CMD_PREFETCH_CONFIG: cmd("CMD_PREFETCH_CONFIG", [OP, SSEC, SSV, SSID, SID] as const),
  CMD_PREFETCH_ADDR: cmd("CMD_PREFETCH_ADDR", [OP, SSEC, SSV, SSID, SID, { name: "Size", bit: 64, width: 5 }, ADDR] as const),
  CMD_CFGI_STE: cmd("CMD_CFGI_STE", [OP, SSEC, SID, LEAF] as const),
  CMD_CFGI_STE_RANGE: cmd("CMD_CFGI_STE_RANGE", [OP, SSEC, SID, { name: "Range", bit: 64, width: 5 }] as const),
  CMD_CFGI_CD: cmd("CMD_CFGI_CD", [OP, SSEC, SSID, SID, LEAF] as const),
  CMD_CFGI_CD_ALL: cmd("CMD_CFGI_CD_ALL", [OP, SSEC, SID] as const),
  CMD_TLBI_NH_ALL: cmd("CMD_TLBI_NH_ALL", [OP, VMID] as const),
  CMD_TLBI_NH_ASID: cmd("CMD_TLBI_NH_ASID", [OP, VMID, ASID] as const),
  CMD_TLBI_NH_VA: cmd("CMD_TLBI_NH_VA", [OP, NUM, SCALE, VMID, ASID, LEAF, TTL, TG, ADDR] as const),
  CMD_TLBI_NH_VAA: cmd("CMD_TLBI_NH_VAA", [OP, NUM, SCALE, VMID, LEAF, TTL, TG, ADDR] as const),
  CMD_TLBI_EL3_ALL: cmd("CMD_TLBI_EL3_ALL", [OP] as const),
  CMD_TLBI_EL3_VA: cmd("CMD_TLBI_EL3_VA", [OP, NUM, SCALE, LEAF, TTL, TG, ADDR] as const),
  CMD_TLBI_EL2_ALL: cmd("CMD_TLBI_EL2_ALL", [OP] as const),
  CMD_TLBI_EL2_ASID: cmd("CMD_TLBI_EL2_ASID", [OP, ASID] as const),
  CMD_TLBI_EL2_VA: cmd("CMD_TLBI_EL2_VA", [OP, NUM, SCALE, ASID, LEAF, TTL, TG, ADDR] as const),
  CMD_TLBI_EL2_VAA: cmd("CMD_TLBI_EL2_VAA", [OP, NUM, SCALE, LEAF, TTL, TG, ADDR] as const),
  CMD_TLBI_S12_VMALL: cmd("CMD_TLBI_S12_VMALL", [OP, VMID] as const),
  CMD_TLBI_S2_IPA: cmd("CMD_TLBI_S2_IPA", [OP, NUM, SCALE, VMID, LEAF, TTL, TG, IPA] as const),
  CMD_TLBI_NSNH_ALL: cmd("CMD_TLBI_NSNH_ALL", [OP] as const),
  CMD_ATC_INV: cmd("CMD_ATC_INV", [OP, { name: "Global", bit: 9, width: 1 }, SSV, SSID, SID, { name: "Size", bit: 64, width: 6 }, ADDR] as const),
  CMD_PRI_RESP: cmd("CMD_PRI_RESP", [OP, SSV, SSID, SID, { name: "PRGIndex", bit: 64, width: 9 }, { name: "Resp", bit: 76, width: 2 }] as const),
  CMD_RESUME: cmd("CMD_RESUME", [OP, SSEC, { name: "Action", bit: 12, width: 2 }, SID, { name: "STAG", bit: 64, width: 16 }] as const),
  CMD_STALL_TERM: cmd("CMD_STALL_TERM", [OP, SSEC, SID] as const),
  CMD_SYNC: cmd("CMD_SYNC", [
    OP,
    { name: "CS", bit: 12, width: 2 },
    { name: "MSH", bit: 22, width: 2 },
    { name: "MSIAttr", bit: 24, width: 4 },
    { name: "MSIData", bit: 32, width: 32 },
    { name: "MSIAddress", bit: 66, width: 50, shift: 2 },
  ] as const),
} as const;

export type CommandName = keyof typeof commandLayouts;
export type CommandFields<N extends CommandName> = Fields<(typeof commandLayouts)[N]>;

/** Opcode of every command. */
export const CommandOpcode = {
  CMD_PREFETCH_CONFIG: 0x01,
  CMD_PREFETCH_ADDR: 0x02,
  CMD_CFGI_STE: 0x03,
  CMD_CFGI_STE_RANGE: 0x04,
  CMD_CFGI_CD: 0x05,
  CMD_CFGI_CD_ALL: 0x06,
  CMD_TLBI_NH_ALL: 0x10,
  CMD_TLBI_NH_ASID: 0x11,
  CMD_TLBI_NH_VA: 0x12,
  CMD_TLBI_NH_VAA: 0x13,
  CMD_TLBI_EL3_ALL: 0x18,
  CMD_TLBI_EL3_VA: 0x1a,
  CMD_TLBI_EL2_ALL: 0x20,
  CMD_TLBI_EL2_ASID: 0x21,
  CMD_TLBI_EL2_VA: 0x22,
  CMD_TLBI_EL2_VAA: 0x23,
  CMD_TLBI_S12_VMALL: 0x28,
  CMD_TLBI_S2_IPA: 0x2a,
  CMD_TLBI_NSNH_ALL: 0x30,
  CMD_ATC_INV: 0x40,
  CMD_PRI_RESP: 0x41,
  CMD_RESUME: 0x44,
  CMD_STALL_TERM: 0x45,
  CMD_SYNC: 0x46,
} as const satisfies Record<CommandName, number>;

/** CMD_CFGI_ALL is CMD_CFGI_STE_RANGE with this Range. */
export const CFGI_ALL_RANGE = 31;

const nameByOpcode = new Map<number, CommandName>(Object.entries(CommandOpcode).map(([name, op]) => [op, name as CommandName]));

/** The command mnemonic for an opcode, or undefined when the opcode names no command (→ CERROR_ILL). */
export function commandName(opcode: number): CommandName | undefined {
  return nameByOpcode.get(opcode);
}

/**
 * How Linux treats each guest command in an IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 array (iommufd.md §5.3):
 * `nh-all-for-vmid` turns CMD_TLBI_NSNH_ALL into CMD_TLBI_NH_ALL for the vIOMMU's VMID (dw1 cleared),
 * `force-vmid` overwrites the VMID field with the vIOMMU's, `translate-sid` maps the vSID to the physical SID
 * through the vDEVICE table (unknown vSID: EIO). Every other opcode is rejected with EIO; the VMM handles
 * CMD_SYNC, CFGI_STE(_RANGE) and PREFETCH itself.
 */
export const VIOMMU_INVALIDATE_COMMANDS: Readonly<Partial<Record<CommandName, "nh-all-for-vmid" | "force-vmid" | "translate-sid">>> = {
  CMD_TLBI_NSNH_ALL: "nh-all-for-vmid",
  CMD_TLBI_NH_ALL: "force-vmid",
  CMD_TLBI_NH_ASID: "force-vmid",
  CMD_TLBI_NH_VA: "force-vmid",
  CMD_TLBI_NH_VAA: "force-vmid",
  CMD_ATC_INV: "translate-sid",
  CMD_CFGI_CD: "translate-sid",
  CMD_CFGI_CD_ALL: "translate-sid",
};

/** CMD_SYNC.CS values. */
export const SyncCs = { None: 0, SigIrq: 1, SigSev: 2 } as const;
/**
 * CMD_PRI_RESP.Resp values, by the architecture's names (IHI0070 §4.5.2): 0b00 ResponseFailure (a permanent
 * non-paging error), 0b01 InvalidRequest (a page could not be paged in), 0b10 Success; 0b11 is ILLEGAL. Linux
 * names 0 PRI_RESP_DENY and 1 PRI_RESP_FAIL, the other way round to what the values mean.
 */
export const PriResp = { ResponseFailure: 0, InvalidRequest: 1, Success: 2 } as const;
/** CMD_RESUME.Action values. */
export const ResumeAction = { Terminate: 0, Retry: 1, Abort: 2 } as const;

export type DecodedCommand =
  | { readonly [N in CommandName]: { readonly name: N; readonly code: number; readonly fields: CommandFields<N> } }[CommandName]
  | { readonly name: "UNKNOWN"; readonly code: number; readonly fields: { readonly Opcode: number } };

/** Decodes a 128-bit command (4 × 32-bit halves). Never throws for 128 bits; unknown opcodes decode as UNKNOWN. */
export function decodeCommand(raw: RawBits): DecodedCommand {
  const opcode = raw[0]! & 0xff;
  const name = commandName(opcode);
  if (name === undefined) return { name: "UNKNOWN", code: opcode, fields: { Opcode: opcode } };
  return { name, code: opcode, fields: decodeLayout(commandLayouts[name], raw) } as DecodedCommand;
}

/** Encodes a command: `fields` other than Opcode (which comes from `name`); unspecified fields are zero. */
export function encodeCommand<N extends CommandName>(name: N, fields: Partial<Omit<CommandFields<N>, "Opcode">>): RawBits {
  const layout = commandLayouts[name] as Layout;
  const raw = encodeLayout(layout, fields as Partial<Fields<Layout>>);
  raw[0] = ((raw[0]! & ~0xff) | CommandOpcode[name]) >>> 0;
  return raw;
}

/**
 * Whether a command sets bits its opcode does not define (RES0 bits, or any bit of an unknown opcode): the
 * input for a CERROR_ILL decision. Bits that are defined but unsupported (SSec from the Non-secure queue,
 * SSV without substreams…) are the caller's to judge.
 */
export function commandSetsUndefinedBits(raw: RawBits): boolean {
  const name = commandName(raw[0]! & 0xff);
  if (name === undefined) return (raw[0]! & ~0xff) !== 0 || raw[1] !== 0 || raw[2] !== 0 || raw[3] !== 0;
  return hasReservedBits(commandLayouts[name], raw);
}

/** CFGI_STE_RANGE / CFGI_ALL: the StreamIDs covered, [first, last] inclusive (2^(Range+1) aligned IDs). */
export function cfgiSteRangeStreams(sid: number, range: number): { readonly first: number; readonly last: number } {
  const size = 2 ** (range + 1);
  const first = sid - (sid % size);
  return { first, last: Math.min(first + size - 1, 0xffffffff) };
}

/** The address range a TLBI or ATC_INV command covers, inclusive, as bigint (addresses are 64-bit). */
export interface CommandAddressRange {
  readonly first: bigint;
  readonly last: bigint;
}

export interface TlbiAddressRange extends CommandAddressRange {
  /** TG ≠ 0: a range invalidation (IDR3.RIL); otherwise a single address. */
  readonly ranged: boolean;
  /** log2 of the translation granule TG names, undefined for TG = 0. */
  readonly granuleShift: number | undefined;
  /** TTL level hint (0 = any level). */
  readonly ttl: number;
  readonly leafOnly: boolean;
}

const U64_LAST = (1n << 64n) - 1n;

/**
 * The addresses a TLBI by VA/IPA invalidates (IHI0070 §4.4.1.1):
 * - TG = 0: the entries that translate Addr, whatever their size; as a range, the 4 KiB the address field can
 *   name ([Addr, Addr + 4095]), since every entry holding Addr holds that whole page.
 * - TG ≠ 0: Range = (NUM + 1) × 2^SCALE × granule (granule 2^(2·TG + 10)), starting at Addr itself
 *   (Addr ≤ A < Addr + Range); the range does not wrap, so it ends at 2^64 − 1 at most.
 * `address` is the command's Addr (bigint) or IPA (number).
 */
export function tlbiAddressRange(fields: {
  readonly NUM: number;
  readonly SCALE: number;
  readonly TG: number;
  readonly TTL: number;
  readonly Leaf: number;
  readonly Addr?: bigint;
  readonly IPA?: number;
}): TlbiAddressRange {
  const first = fields.Addr ?? BigInt(fields.IPA ?? 0);
  const leafOnly = fields.Leaf === 1;
  if (fields.TG === 0) {
    return { first, last: first + 0xfffn > U64_LAST ? U64_LAST : first + 0xfffn, ranged: false, granuleShift: undefined, ttl: 0, leafOnly };
  }
  const granuleShift = 2 * fields.TG + 10;
  const bytes = BigInt(fields.NUM + 1) << BigInt(fields.SCALE + granuleShift);
  const end = first + bytes - 1n;
  return { first, last: end > U64_LAST ? U64_LAST : end, ranged: true, granuleShift, ttl: fields.TTL, leafOnly };
}

/**
 * The addresses a CMD_ATC_INV covers: 2^Size × 4 KiB, naturally aligned around Addr; Size ≥ 52 covers the
 * whole address space (Linux ATC_INV_SIZE_ALL).
 */
export function atcInvAddressRange(addr: bigint, size: number): CommandAddressRange {
  if (size >= 52) return { first: 0n, last: U64_LAST };
  const span = 1n << BigInt(size + 12);
  const first = addr - (addr % span);
  return { first, last: first + span - 1n };
}
