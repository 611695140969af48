import { decodeState, encodeState, err, ok, type Result, type StateValue } from "@viommu/core";

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
  xtEvent: bigint;
  xtPpr: bigint;
  xtGa: bigint;
  status: number;
  cmdHead: number;
  cmdTail: number;
  /** The command buffer stopped on an error (CmdBufRun clear with CmdBufEn set). */
  cmdHalted: boolean;
}

const KIND = "amd-vi-iommu";
const VERSION = 1;
const BIG_KEYS = ["devTabBase", "cmdBase", "evtBase", "pprBase", "control", "exclusionBase", "exclusionLimit", "gaLogBase", "gaLogTail", "xtEvent", "xtPpr", "xtGa"] as const;
const NUMBER_KEYS = ["msiAddressLow", "msiAddressHigh", "msiData", "status", "cmdHead", "cmdTail"] as const;

export interface DeviceState {
  readonly regs: DeviceRegisters;
  /** Event log head/tail and PPR log head/tail of the emulated logs. */
  readonly logs: readonly number[];
  /** The hardware vIOMMU's VF-MMIO registers (command head/tail, event head/tail, PPR head/tail, Status). */
  readonly hwPointers: readonly number[] | undefined;
}

/** Versioned, checksummed state (core's encodeState); 64-bit registers as hex text. */
export function encodeDeviceState(regs: DeviceRegisters, logs: readonly number[], hwPointers: readonly number[] | undefined): Uint8Array {
  const r: Record<string, StateValue> = { cmdHalted: regs.cmdHalted };
  for (const k of BIG_KEYS) r[k] = `0x${regs[k].toString(16)}`;
  for (const k of NUMBER_KEYS) r[k] = regs[k];
  return encodeState(KIND, VERSION, { regs: r, logs: [...logs], hwPointers: hwPointers === undefined ? null : [...hwPointers] });
}

function hexToBig(v: StateValue | undefined): bigint | undefined {
  return typeof v === "string" && /^0x[0-9a-f]{1,16}$/.test(v) ? BigInt(v) : undefined;
}

function numbers(v: StateValue | undefined, length: number): number[] | undefined {
  if (!Array.isArray(v) || v.length !== length || !v.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0)) return undefined;
  return v as number[];
}

/** Decodes and validates a state blob: EINVAL with the reason for anything malformed, never a partial state. */
export function decodeDeviceState(blob: Uint8Array): Result<DeviceState> {
  const decoded = decodeState(blob, KIND, [VERSION]);
  if (!decoded.ok) return decoded;
  const root = decoded.value.value;
  if (root === null || typeof root !== "object" || Array.isArray(root)) return err("EINVAL", "AMD-Vi state is not an object");
  const s = root as Record<string, StateValue>;
  const r = s["regs"];
  if (r === null || typeof r !== "object" || Array.isArray(r)) return err("EINVAL", "AMD-Vi state lacks registers");
  const rec = r as Record<string, StateValue>;
  const regs = { cmdHalted: rec["cmdHalted"] === true } as DeviceRegisters;
  for (const k of BIG_KEYS) {
    const v = hexToBig(rec[k]);
    if (v === undefined) return err("EINVAL", `AMD-Vi state register ${k} malformed`);
    regs[k] = v;
  }
  for (const k of NUMBER_KEYS) {
    const v = rec[k];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v > 0xffff_ffff) return err("EINVAL", `AMD-Vi state register ${k} malformed`);
    regs[k] = v;
  }
  const logs = numbers(s["logs"], 4);
  if (logs === undefined) return err("EINVAL", "AMD-Vi state log pointers malformed");
  const hw = s["hwPointers"];
  const hwPointers = hw === null ? undefined : numbers(hw, 7);
  if (hw !== null && hwPointers === undefined) return err("EINVAL", "AMD-Vi state hardware pointers malformed");
  return ok({ regs, logs, hwPointers });
}
