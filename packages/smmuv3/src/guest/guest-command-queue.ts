import { err, ok, toHex64, type GuestEvent, type GuestMemory, type RawBits, type Result } from "@viommu/core";
import { GerrorBit } from "../format/control-registers.js";
import { CMDQ_CONS_ERR_SHIFT, CMDQ_ENTRY_BYTES, CmdqError, cmdqErrorName, queueAdvance, queueFree, queueIndex, queueUsed } from "../format/queue-registers.js";
import { POLL_LIMIT, type SmmuMmio } from "./smmu-mmio.js";
import { linuxSyncCommand } from "./sync-command.js";

/**
 * The guest driver's command queue (Linux `arm_smmu_cmdq_issue_cmdlist`): commands written at PROD, a CMD_SYNC
 * after every batch, PROD written to the register, then a wait for the SYNC. With MSIs on a coherent SMMU
 * (Linux's MSIPOLL) the SYNC signals by an MSI of 0 into its own slot; otherwise it is a SEV sync and the
 * driver polls CONS past it. A command error (GERROR.CMDQ_ERR) is handled as Linux's `arm_smmu_cmdq_skip_err`:
 * an illegal command is overwritten with a CMD_SYNC, an abort or ATC timeout is simply retried, then GERRORN
 * acknowledges and the SMMU resumes.
 */
export class GuestCommandQueue {
  private prod = 0;
  /** Command errors seen, as guest events (read out with the event log). */
  readonly errors: GuestEvent[] = [];

  constructor(
    private readonly mmio: SmmuMmio,
    private readonly memory: GuestMemory,
    readonly base: number,
    readonly log2: number,
    private readonly msiPoll: boolean,
  ) {}

  /** Programs CMDQ_BASE, PROD and CONS (the queue must be disabled). */
  program(): void {
    this.prod = 0;
    this.mmio.write64("CMDQ_BASE", BigInt(this.base) | BigInt(this.log2) | (1n << 62n));
    this.mmio.write32("CMDQ_PROD", 0);
    this.mmio.write32("CMDQ_CONS", 0);
  }

  private slotAddress(position: number): number {
    return this.base + queueIndex(position, this.log2) * CMDQ_ENTRY_BYTES;
  }

  /** Issues `commands` followed by a CMD_SYNC and waits for the SYNC to complete. */
  submit(commands: readonly RawBits[]): Result<void> {
    let next = 0;
    let syncPending = true;
    const capacity = 2 ** this.log2;
    // Batches of at most a queue's worth, each followed by its own CMD_SYNC; an empty list still syncs.
    while (syncPending || next < commands.length) {
      const free = queueFree(this.prod, this.mmio.read32("CMDQ_CONS"), this.log2);
      if (free < 2) {
        const drained = this.waitForRoom(2);
        if (!drained.ok) return drained;
        continue;
      }
      const batch = Math.min(commands.length - next, free - 1, capacity - 1);
      for (let i = 0; i < batch; i++) {
        this.memory.writeWords(this.slotAddress(this.prod), commands[next + i]!);
        this.prod = queueAdvance(this.prod, this.log2);
      }
      next += batch;
      const syncSlot = this.slotAddress(this.prod);
      this.memory.writeWords(syncSlot, linuxSyncCommand(this.msiPoll ? syncSlot : undefined));
      const syncPosition = this.prod;
      this.prod = queueAdvance(this.prod, this.log2);
      this.mmio.write32("CMDQ_PROD", this.prod);
      syncPending = false;
      const done = this.waitForSync(syncSlot, syncPosition);
      if (!done.ok) return done;
    }
    return ok();
  }

  private waitForRoom(slots: number): Result<void> {
    for (let i = 0; i < POLL_LIMIT; i++) {
      if (queueFree(this.prod, this.mmio.read32("CMDQ_CONS"), this.log2) >= slots) return ok();
      this.handleErrors();
    }
    return err("ETIMEDOUT", "command queue did not drain");
  }

  private waitForSync(slot: number, syncPosition: number): Result<void> {
    for (let i = 0; i < POLL_LIMIT; i++) {
      if (this.msiPoll) {
        if (this.memory.read32(slot) === 0) return ok();
      } else {
        const cons = this.mmio.read32("CMDQ_CONS");
        // Complete once CONS has moved past the SYNC: fewer entries pending than there were from the SYNC on.
        if (queueUsed(this.prod, cons, this.log2) < queueUsed(this.prod, syncPosition, this.log2)) return ok();
      }
      this.handleErrors();
    }
    return err("ETIMEDOUT", "CMD_SYNC did not complete");
  }

  /** The GERROR handler's command-queue part; returns whether an error was handled. */
  handleErrors(): boolean {
    const gerror = this.mmio.read32("GERROR");
    const gerrorn = this.mmio.read32("GERRORN");
    if (((gerror ^ gerrorn) & GerrorBit.CMDQ_ERR) === 0) return false;
    const cons = this.mmio.read32("CMDQ_CONS");
    const code = (cons >>> CMDQ_CONS_ERR_SHIFT) & 0x7f;
    const slot = this.slotAddress(cons);
    const failed = this.memory.readWords(slot, new Uint32Array(4));
    this.errors.push({ kind: "command-error", code, name: cmdqErrorName(code), raw: toHex64(failed) });
    if (code !== CmdqError.CERROR_ABT && code !== CmdqError.CERROR_ATC_INV_SYNC) {
      this.memory.writeWords(slot, linuxSyncCommand(undefined));
    }
    this.mmio.write32("GERRORN", (gerrorn ^ GerrorBit.CMDQ_ERR) >>> 0);
    return true;
  }
}
