import { StateReader, type Result, type StateValue } from "@viommu/core";

/** One queue's page-0 state: CONS_INDX.RD, PROD_INDX.WR, CONFIG.CMDQ_EN. */
export interface VcmdqSavedState {
  readonly cons: number;
  readonly prod: number;
  readonly config: number;
}

/** A saved CMDQV state whose every field has been checked: applying it cannot fail. */
export interface CmdqvSavedState {
  readonly config: number;
  readonly viIntMask: readonly number[];
  readonly cmdqAlloc: readonly number[];
  readonly vintfConfig: number;
  readonly sidMatch: readonly number[];
  readonly sidReplace: readonly number[];
  readonly bases: readonly bigint[];
  readonly consBases: readonly bigint[];
  /** Per queue, its page-0 state, or undefined for a queue without a HW queue. */
  readonly hw: readonly (VcmdqSavedState | undefined)[];
}

/** The defined bits of each register the VMM keeps (spec arm-hyperv-virtio.md §4.2–§4.4). */
const CMDQV_CONFIG_FIELDS = 0x1f_ffff;
const CMDQ_ALLOC_FIELDS = 0x1f_80ff;
/** VINTF CONFIG: EN and VMID; HYP_OWN (bit 17) is never a guest's. */
const VINTF_CONFIG_FIELDS = 0x1_ffff;
const PAGE1_MAX = 0xffff_ffff_ffffn;
/** RD / WR are 20 bits; LOG2SIZE is capped at 19 for them. */
const MAX_LOG2SIZE = 19;
const SID_SLOTS = 16;
const CONFIG_EN = 1;

function within(r: StateReader, name: string, value: number, fields: number): void {
  r.check((value & ~fields) === 0, name, `is 0x${value.toString(16)}, setting bits outside its fields (0x${fields.toString(16)})`);
}

/**
 * Checks the CMDQV half of a Tegra241 state (core's `StateReader`) for a VMM with `queues` guest VCMDQs, refusing
 * with EINVAL and the field's name: a register with bits outside its fields, VINTF CONFIG with HYP_OWN (which the
 * VMM never gives a guest), an array of the wrong length, a BASE or CONS_INDX_BASE beyond 48 bits, a queue's CONS or
 * PROD beyond the wrap bit of the size its BASE gives, a CONFIG other than 0 or 1, page-0 state for a queue these
 * registers give no HW queue.
 */
export function readCmdqvState(value: StateValue, queues: number): Result<CmdqvSavedState> {
  return StateReader.read(value, "tegra241-cmdqv", (r) => {
    const config = r.u32("config");
    within(r, "config", config, CMDQV_CONFIG_FIELDS);
    const vintfConfig = r.u32("vintfConfig");
    within(r, "vintfConfig", vintfConfig, VINTF_CONFIG_FIELDS);
    const viIntMask = r.array("viIntMask", { exactly: 2 }).map((x) => x.asInt(0, 0xffff_ffff));
    const cmdqAlloc = r.array("cmdqAlloc", { exactly: queues }).map((x, q) => {
      const v = x.asInt(0, 0xffff_ffff);
      within(r, `cmdqAlloc[${q}]`, v, CMDQ_ALLOC_FIELDS);
      return v;
    });
    const sidMatch = r.ints("sidMatch", 0, 0xffff_ffff, { exactly: SID_SLOTS });
    const sidReplace = r.ints("sidReplace", 0, 0xffff_ffff, { exactly: SID_SLOTS });
    const bases = r.array("bases", { exactly: queues }).map((x) => x.asU64(PAGE1_MAX));
    const consBases = r.array("consBases", { exactly: queues }).map((x) => x.asU64(PAGE1_MAX));
    const hw = r.array("hw", { exactly: queues }).map((x, q): VcmdqSavedState | undefined => {
      const ready = bases[q]! !== 0n && (cmdqAlloc[q]! & 1) === 1 && (config & CONFIG_EN) !== 0 && (vintfConfig & CONFIG_EN) !== 0;
      const entry = (value as { hw: StateValue[] }).hw[q];
      // A queue the registers make ready may still have no HW queue: the host refused it (a base not aligned to
      // the queue's size, say), and the guest saw its page 0 read zero.
      if (entry === null) return undefined;
      r.check(ready, `hw[${q}]`, "describes a queue these registers give no HW queue");
      r.check(Array.isArray(entry) && entry.length === 3, `hw[${q}]`, "is not [CONS, PROD, CONFIG]");
      const cons = x.int(0, 0, 0xf_ffff);
      const prod = x.int(1, 0, 0xf_ffff);
      const cfg = x.int(2, 0, 1);
      const pointer = 2 ** (Math.min(Number(bases[q]! & 0x1fn), MAX_LOG2SIZE) + 1);
      r.check(cons < pointer && prod < pointer, `hw[${q}]`, `holds CONS 0x${cons.toString(16)} / PROD 0x${prod.toString(16)}, beyond the wrap bit of its ${pointer / 2}-entry queue`);
      return { cons, prod, config: cfg };
    });
    return { config, viIntMask, cmdqAlloc, vintfConfig, sidMatch, sidReplace, bases, consBases, hw };
  });
}
