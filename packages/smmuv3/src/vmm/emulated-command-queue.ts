import type { GuestMemory, RawBits } from "@viommu/core";
import { GerrorBit, gerrorActive } from "../format/control-registers.js";
import { CMDQ_CONS_ERR_SHIFT, CMDQ_ENTRY_BYTES, CmdqError, queueAdvance, queueBaseAddress, queueEmpty, queueIndex } from "../format/queue-registers.js";
import type { SmmuRegisterFile } from "./register-file.js";

/**
 * What the queue runs each command through: the device's command semantics. An executor may defer a command's
 * effect (batching invalidations for the host); deferred work is never dropped: `finish` completes it before
 * the queue stops on any error and whenever it runs dry, so every command CONS has passed has taken effect.
 */
export interface CommandExecutor {
  /** Executes one command found at queue `position`; returns its CMDQ error (CERROR_NONE to go on). */
  execute(cmd: RawBits, position: number): number;
  /** After an error: the position it belongs to when that is an earlier, deferred command; −1 for the current one. */
  errorPosition(): number;
  /**
   * Completes the deferred work of every command consumed so far, in order; the position of the first one that
   * failed (the queue then stops there with CERROR_ILL: the ones before it took effect, the ones after did not).
   */
  finish(): number | undefined;
}

const CR0_CMDQEN = 1 << 3;

/**
 * The SMMU's consumer side of the guest's command queue (IHI0070 §3.5.1, §4.1, §7.1): commands are read from CONS
 * up to PROD and each one executed advances CONS; a failing one leaves CONS on it with CMDQ_CONS.ERR set (kept
 * while CONS later moves on) and GERROR.CMDQ_ERR raised, and nothing more is consumed until GERRORN acknowledges
 * it. A command that cannot be fetched is CERROR_ABT. Before the queue stops, every command before the failing one
 * completes (the executor's deferred work is finished, not dropped): software that skips the failing command
 * (Linux's arm_smmu_cmdq_skip_err) must not lose the invalidations it issued ahead of it. Runs while
 * CR0ACK.CMDQEN is set, at most one queue's worth per doorbell, never re-entered.
 */
export class EmulatedCommandQueue {
  /** Commands consumed. */
  trapped = 0;
  private running = false;
  private readonly cmd = new Uint32Array(4);
  /** CMDQ_BASE as last decoded (raw −1n: not yet). */
  private readonly ring = { raw: -1n, log2: 0, base: 0 };

  constructor(
    private readonly regs: SmmuRegisterFile,
    private readonly memory: GuestMemory,
    private readonly maxLog2: number,
    private readonly executor: CommandExecutor,
    private readonly raiseGerror: (bits: number) => void,
  ) {}

  /** Whether a command error is waiting for the acknowledgement. */
  get stopped(): boolean {
    return (gerrorActive(this.regs.num("GERROR"), this.regs.num("GERRORN")) & GerrorBit.CMDQ_ERR) !== 0;
  }

  process(): void {
    if (this.running || (this.regs.num("CR0ACK") & CR0_CMDQEN) === 0 || this.stopped) return;
    this.running = true;
    try {
      const baseReg = this.regs.get("CMDQ_BASE");
      // Decoded once per value written, not per doorbell (BigInt arithmetic costs more than the commands).
      if (baseReg !== this.ring.raw) {
        this.ring.raw = baseReg;
        this.ring.log2 = Math.min(Number(baseReg & 0x1fn), this.maxLog2);
        this.ring.base = queueBaseAddress(Number(baseReg & 0x000f_ffff_ffff_ffe0n), this.ring.log2, CMDQ_ENTRY_BYTES);
      }
      const { log2, base } = this.ring;
      const prod = this.regs.num("CMDQ_PROD");
      let cons = this.regs.num("CMDQ_CONS");
      const pointerMask = 2 ** (log2 + 1) - 1;
      for (let budget = 2 ** log2; budget > 0 && !queueEmpty(prod, cons, log2); budget--) {
        const position = cons & pointerMask;
        const at = base + queueIndex(cons, log2) * CMDQ_ENTRY_BYTES;
        if (!this.memory.hostReadable(at, CMDQ_ENTRY_BYTES)) return this.fail(position, CmdqError.CERROR_ABT);
        this.memory.readWords(at, this.cmd);
        this.trapped++;
        const error = this.executor.execute(this.cmd, position);
        if (error !== CmdqError.CERROR_NONE) {
          const earlier = this.executor.errorPosition();
          return earlier >= 0 ? this.stop(earlier, error) : this.fail(position, error);
        }
        cons = queueAdvance(cons, log2);
        this.regs.set("CMDQ_CONS", cons >>> 0);
      }
      const failed = this.executor.finish();
      if (failed !== undefined) this.stop(failed, CmdqError.CERROR_ILL);
    } finally {
      this.running = false;
    }
  }

  /** The command at `position` failed: what came before it completes first, unless that fails earlier. */
  private fail(position: number, error: number): void {
    const earlier = this.executor.finish();
    if (earlier !== undefined) this.stop(earlier, CmdqError.CERROR_ILL);
    else this.stop(position, error);
  }

  private stop(position: number, error: number): void {
    this.regs.set("CMDQ_CONS", ((position >>> 0) | (error << CMDQ_CONS_ERR_SHIFT)) >>> 0);
    this.raiseGerror(GerrorBit.CMDQ_ERR);
  }
}
