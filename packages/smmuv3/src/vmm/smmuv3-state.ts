import { decodeState, fail, StateReader, type Result, type StateValue } from "@viommu/core";
import { CMDQ_CONS_ERR_SHIFT, CmdqError, QUEUE_OVERFLOW_FLAG } from "../format/queue-registers.js";
import type { SmmuFeatures } from "../translate/smmu-features.js";
import { writableMask } from "./register-file.js";

export const SMMUV3_STATE_KIND = "smmuv3";
export const SMMUV3_STATE_VERSION = 1;

/** A saved SMMUv3 state whose every field has been checked: applying it cannot fail. */
export interface Smmuv3SavedState {
  /** Register values by name; registers absent read as zero (never written before the save). */
  readonly regs: ReadonlyMap<string, bigint>;
  /** An ATC invalidation was left incomplete: the next CMD_SYNC fails with CERROR_ATC_INV_SYNC. */
  readonly atcFailure: boolean;
  readonly sevEvents: number;
}

/** CR0 and IRQ_CTRL are acknowledged at once: their ACK registers always equal them. */
const ACKNOWLEDGED: ReadonlyMap<string, string> = new Map([
  ["CR0ACK", "CR0"],
  ["IRQ_CTRLACK", "IRQ_CTRL"],
]);
/** GERROR's defined error bits (IHI0070 §6.3.19; Linux's GERROR_ERR_MASK). */
const GERROR_BITS = 0x1fdn;
/** The queue pointers: their base register, the flags above the pointer, whether the SMMU's ERR field is there. */
const POINTERS: ReadonlyMap<string, { readonly base: string; readonly flags: bigint; readonly queue: "cmdq" | "evtq" | "priq" }> = new Map([
  ["CMDQ_PROD", { base: "CMDQ_BASE", flags: 0n, queue: "cmdq" as const }],
  ["CMDQ_CONS", { base: "CMDQ_BASE", flags: 0x7fn << BigInt(CMDQ_CONS_ERR_SHIFT), queue: "cmdq" as const }],
  ["EVTQ_PROD", { base: "EVTQ_BASE", flags: BigInt(QUEUE_OVERFLOW_FLAG), queue: "evtq" as const }],
  ["EVTQ_CONS", { base: "EVTQ_BASE", flags: BigInt(QUEUE_OVERFLOW_FLAG), queue: "evtq" as const }],
  ["PRIQ_PROD", { base: "PRIQ_BASE", flags: BigInt(QUEUE_OVERFLOW_FLAG), queue: "priq" as const }],
  ["PRIQ_CONS", { base: "PRIQ_BASE", flags: BigInt(QUEUE_OVERFLOW_FLAG), queue: "priq" as const }],
]);

/**
 * Reads one register from the stream: a 64-bit value with no bit outside the register's architectural fields as
 * this SMMU implements them (the write masks of `SmmuRegisterFile`; for the registers only the SMMU writes, their
 * defined fields).
 */
function register(r: StateReader, name: string, pri: boolean): bigint {
  const control = ACKNOWLEDGED.get(name);
  const pointer = POINTERS.get(name);
  const mask = name === "GERROR" ? GERROR_BITS : pointer !== undefined && (pointer.queue !== "priq" || pri) ? 0xffff_ffffn : writableMask(control ?? name, pri);
  r.check(mask !== undefined, name, "is not a register software or the SMMU sets in this SMMU");
  const value = r.u64(name);
  r.check((value & ~mask!) === 0n, name, `is 0x${value.toString(16)}, setting bits outside its fields (0x${mask!.toString(16)})`);
  return value;
}

/**
 * Checks a decoded SMMUv3 state stream field by field (core's `StateReader`) into a plain value, refusing with
 * EINVAL and the field's name anything the emulated SMMU could not have held: an unknown register; a value with
 * bits outside the register's fields (RES0 bits, features this SMMU lacks: CR0.PRIQEN, an address above bit 51,
 * GBPA.UPDATE, which the SMMU clears); an acknowledgement that differs from its control register (CR0ACK, IRQ_CTRLACK
 * follow at once); a PROD or CONS with bits above the wrap bit of the queue's effective size (LOG2SIZE capped at
 * IDR1.CMDQS / EVENTQS; LOG2SIZE itself holds what software wrote, IHI0070 §6.3.26: "except for the purposes of
 * readback"); a CMDQ_CONS.ERR other than the CERROR codes this SMMU reports; STRTAB_BASE_CFG fields outside their
 * width; a non-boolean `atcFailure`, a `sevEvents` that is not a count.
 */
export function readSmmuv3State(value: StateValue, features: SmmuFeatures): Result<Smmuv3SavedState> {
  return StateReader.read(value, "smmuv3", (r) => {
    const regsReader = r.object("regs");
    const names = typeof value === "object" && value !== null && !Array.isArray(value) && typeof value.regs === "object" && value.regs !== null && !Array.isArray(value.regs) ? Object.keys(value.regs) : [];
    const regs = new Map<string, bigint>();
    for (const name of names) regs.set(name, register(regsReader, name, features.pri));
    for (const [ack, control] of ACKNOWLEDGED) {
      regsReader.check((regs.get(ack) ?? 0n) === (regs.get(control) ?? 0n), ack, `is 0x${(regs.get(ack) ?? 0n).toString(16)}, not ${control} (0x${(regs.get(control) ?? 0n).toString(16)}) as the SMMU acknowledges it`);
    }
    for (const [name, p] of POINTERS) {
      const v = regs.get(name) ?? 0n;
      const max = p.queue === "cmdq" ? features.cmdqLog2 : p.queue === "evtq" ? features.evtqLog2 : features.priqLog2;
      const log2 = Math.min(Number((regs.get(p.base) ?? 0n) & 0x1fn), max);
      const pointer = (1n << BigInt(log2 + 1)) - 1n;
      regsReader.check((v & ~(pointer | p.flags)) === 0n, name, `is 0x${v.toString(16)}, beyond the wrap bit of a ${2 ** log2}-entry queue`);
    }
    const err = Number(((regs.get("CMDQ_CONS") ?? 0n) >> BigInt(CMDQ_CONS_ERR_SHIFT)) & 0x7fn);
    regsReader.check(err <= CmdqError.CERROR_ATC_INV_SYNC, "CMDQ_CONS", `holds ERR ${err}, not a CERROR code this SMMU reports`);
    return {
      regs,
      atcFailure: r.has("atcFailure") ? r.bool("atcFailure") : false,
      sevEvents: r.has("sevEvents") ? r.int("sevEvents", 0, Number.MAX_SAFE_INTEGER) : 0,
    };
  });
}

/** Decodes an SMMUv3 state blob (kind, version, checksum) and checks it: see `readSmmuv3State`. */
export function parseSmmuv3State(blob: Uint8Array, features: SmmuFeatures): Result<Smmuv3SavedState> {
  const decoded = decodeState(blob, SMMUV3_STATE_KIND, [SMMUV3_STATE_VERSION]);
  if (!decoded.ok) return fail(decoded);
  return readSmmuv3State(decoded.value.value, features);
}
