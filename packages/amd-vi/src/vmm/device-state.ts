import { decodeState, encodeState, StateReader, type Result, type StateValue } from "@viommu/core";
import { PCI_COMMAND_WRITABLE } from "../format/pci-config-header.js";
import { STATUS_W1C_MASK } from "../format/status-register.js";

/** The emulated IOMMU's register file, as the VMM keeps it. */
export interface DeviceRegisters {
  devTabBase: bigint;
  cmdBase: bigint;
  evtBase: bigint;
  pprBase: bigint;
  control: bigint;
  exclusionBase: bigint;
  exclusionLimit: bigint;
  gaLogBase: bigint;
  gaLogTail: bigint;
  msiAddressLow: number;
  msiAddressHigh: number;
  msiData: number;
  /** The MSI capability's MsiEn (PCI configuration space and its MMIO mirror). */
  msiEnabled: boolean;
  /** The IOMMU function's PCI Command register. */
  pciCommand: number;
  xtEvent: bigint;
  xtPpr: bigint;
  xtGa: bigint;
  /** The sticky (RW1C) Status bits; the run bits are derived from the enables. */
  status: number;
  cmdHead: number;
  cmdTail: number;
  /** The command buffer stopped on an error (CmdBufRun clear with CmdBufEn set). */
  cmdHalted: boolean;
}

/** Head and tail of a ring the IOMMU writes (event log, PPR log): byte offsets. */
export interface RingPointers {
  head: number;
  tail: number;
}

/** The hardware vIOMMU's VF-MMIO registers (the guest's ring pointers and Status live there). */
export interface HardwareRegisters {
  cmdHead: number;
  cmdTail: number;
  eventHead: number;
  eventTail: number;
  pprHead: number;
  pprTail: number;
  status: number;
  /** The command processor stopped on an error. */
  cmdHalted: boolean;
}

export interface DeviceState {
  readonly regs: DeviceRegisters;
  readonly eventLog: RingPointers;
  readonly pprLog: RingPointers;
  /** Present exactly when the hardware vIOMMU runs the guest's rings. */
  readonly hardware: HardwareRegisters | undefined;
}

const KIND = "amd-vi-iommu";
/** Version 2: named ring pointers, `hardware` present only with the hardware vIOMMU, every field range-checked. */
const VERSION = 2;

/**
 * Writable bits of each 64-bit register (spec x86.md B1), as the register write path keeps them; a saved value
 * with any other bit set was not produced by this device. Control and the XT interrupt control registers hold
 * whatever the guest wrote.
 */
export const RegisterMask = {
  devTabBase: 0x000f_ffff_ffff_f1ffn,
  ringBase: 0x0f0f_ffff_ffff_f000n,
  exclusionBase: 0x000f_ffff_ffff_f003n,
  exclusionLimit: 0x000f_ffff_ffff_f000n,
  gaLogTail: 0x000f_ffff_ffff_fff8n,
  any: 0xffff_ffff_ffff_ffffn,
} as const;

const REGISTERS = [
  ["devTabBase", RegisterMask.devTabBase],
  ["cmdBase", RegisterMask.ringBase],
  ["evtBase", RegisterMask.ringBase],
  ["pprBase", RegisterMask.ringBase],
  ["control", RegisterMask.any],
  ["exclusionBase", RegisterMask.exclusionBase],
  ["exclusionLimit", RegisterMask.exclusionLimit],
  ["gaLogBase", RegisterMask.ringBase],
  ["gaLogTail", RegisterMask.gaLogTail],
  ["xtEvent", RegisterMask.any],
  ["xtPpr", RegisterMask.any],
  ["xtGa", RegisterMask.any],
] as const;

/** Bytes in a ring of 16-byte entries whose base register holds `base` (length code [59:56], 2^len entries). */
export function ringBytes(base: bigint): number {
  return 2 ** (Number((base >> 56n) & 0xfn) + 4);
}

/** Versioned, checksummed state (core's encodeState); 64-bit registers as hex text. */
export function encodeDeviceState(state: DeviceState): Uint8Array {
  const r = state.regs;
  const regs: Record<string, StateValue> = {};
  for (const [name] of REGISTERS) regs[name] = `0x${r[name].toString(16)}`;
  Object.assign(regs, { msiAddressLow: r.msiAddressLow, msiAddressHigh: r.msiAddressHigh, msiData: r.msiData, msiEnabled: r.msiEnabled, pciCommand: r.pciCommand, status: r.status, cmdHead: r.cmdHead, cmdTail: r.cmdTail, cmdHalted: r.cmdHalted });
  const value: Record<string, StateValue> = { regs, eventLog: { ...state.eventLog }, pprLog: { ...state.pprLog } };
  if (state.hardware !== undefined) value["hardware"] = { ...state.hardware };
  return encodeState(KIND, VERSION, value);
}

/**
 * Decodes and validates a state blob for a device that does (`hardwareQueues`) or does not run the guest's
 * rings on the hardware vIOMMU. Everything is checked before anything is used: registers against their
 * writable bits, ring pointers against the ring size their base register encodes (16-byte aligned, inside the
 * ring), Status against its sticky bits. EINVAL names the first bad field.
 */
export function decodeDeviceState(blob: Uint8Array, hardwareQueues: boolean): Result<DeviceState> {
  const decoded = decodeState(blob, KIND, [VERSION]);
  if (!decoded.ok) return decoded;
  return StateReader.read(decoded.value.value, "AMD-Vi", (root) => {
    const r = root.object("regs");
    const big = {} as Record<(typeof REGISTERS)[number][0], bigint>;
    for (const [name, mask] of REGISTERS) {
      const v = r.u64(name);
      r.check((v & ~mask) === 0n, name, `is 0x${v.toString(16)}, with bits outside 0x${mask.toString(16)} set`);
      big[name] = v;
    }
    const cmdBytes = ringBytes(big.cmdBase);
    const evtBytes = ringBytes(big.evtBase);
    const pprBytes = ringBytes(big.pprBase);
    const pciCommand = r.int("pciCommand", 0, 0xffff);
    r.check((pciCommand & ~PCI_COMMAND_WRITABLE) === 0, "pciCommand", `is 0x${pciCommand.toString(16)}, with bits outside 0x${PCI_COMMAND_WRITABLE.toString(16)} set`);
    const msiAddressLow = r.u32("msiAddressLow");
    r.check((msiAddressLow & 3) === 0, "msiAddressLow", `is 0x${msiAddressLow.toString(16)}, not dword aligned`);
    const regs: DeviceRegisters = {
      ...big,
      msiAddressLow: r.u32("msiAddressLow"),
      msiAddressHigh: r.u32("msiAddressHigh"),
      msiData: r.int("msiData", 0, 0xffff),
      msiEnabled: r.bool("msiEnabled"),
      pciCommand: r.int("pciCommand", 0, 0xffff),
      status: status(r, "status"),
      cmdHead: pointer(r, "cmdHead", cmdBytes),
      cmdTail: pointer(r, "cmdTail", cmdBytes),
      cmdHalted: r.bool("cmdHalted"),
    };
    const ring = (name: string, bytes: number): RingPointers => {
      const o = root.object(name);
      return { head: pointer(o, "head", bytes), tail: pointer(o, "tail", bytes) };
    };
    const eventLog = ring("eventLog", evtBytes);
    const pprLog = ring("pprLog", pprBytes);
    root.check(root.has("hardware") === hardwareQueues, "hardware", hardwareQueues ? "is missing: this device runs the guest's rings on the hardware vIOMMU" : "is present, but this device runs the guest's rings in the VMM");
    let hardware: HardwareRegisters | undefined;
    if (hardwareQueues) {
      const h = root.object("hardware");
      hardware = {
        cmdHead: pointer(h, "cmdHead", cmdBytes),
        cmdTail: pointer(h, "cmdTail", cmdBytes),
        eventHead: pointer(h, "eventHead", evtBytes),
        eventTail: pointer(h, "eventTail", evtBytes),
        pprHead: pointer(h, "pprHead", pprBytes),
        pprTail: pointer(h, "pprTail", pprBytes),
        status: status(h, "status"),
        cmdHalted: h.bool("cmdHalted"),
      };
    }
    return { regs, eventLog, pprLog, hardware };
  });
}

/** A byte offset of a 16-byte entry inside a ring of `bytes` (the ring size its base register encodes). */
function pointer(r: StateReader, name: string, bytes: number): number {
  const v = r.int(name, 0, bytes - 16);
  r.check(v % 16 === 0, name, `is ${v}, not the byte offset of a 16-byte entry`);
  return v;
}

function status(r: StateReader, name: string): number {
  const v = r.u32(name);
  r.check((v & ~STATUS_W1C_MASK) === 0, name, `is 0x${v.toString(16)}, with bits other than the sticky 0x${STATUS_W1C_MASK.toString(16)} set`);
  return v;
}
