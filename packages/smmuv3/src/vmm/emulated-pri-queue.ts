import type { GuestMemory, RawBits } from "@viommu/core";
import { PRIQ_ENTRY_BYTES, QUEUE_OVERFLOW_FLAG, queueAdvance, queueBaseAddress, queueEmpty, queueFree, queueIndex } from "../format/queue-registers.js";
import type { SmmuRegisterFile } from "./register-file.js";

/**
 * What became of a page request group offered to the PRI queue: written whole; lost to an overflow (the queue was
 * full, or already in overflow); refused because the queue is disabled or in PRIQ_ABT_ERR; or a write the memory
 * refused (the caller raises PRIQ_ABT_ERR).
 */
export type PriWrite = "written" | "overflow" | "disabled" | "abort";

const CR0_PRIQEN = 1 << 1;

/**
 * The SMMU's producer side of the guest's PRI queue (IHI0070 Chapter 8): 16-byte entries written at PRIQ_PROD and
 * PROD advanced. Unlike the event queue, an active overflow (PRIQ_PROD.OVFLG ≠ PRIQ_CONS.OVACKFLG) inhibits every
 * new entry until software acknowledges it (§8.1). A group is written whole or not at all: the host delivers a
 * page request group at once, and a group the queue cannot hold overflows it (OVFLG toggled, if not already), its
 * Last request then answered automatically by the caller — the outcome of the PPRs arriving one by one into a full
 * queue, without a truncated group left behind.
 */
export class EmulatedPriQueue {
  written = 0;
  lost = 0;

  constructor(
    private readonly regs: SmmuRegisterFile,
    private readonly memory: GuestMemory,
    private readonly maxLog2: number,
  ) {}

  private get log2(): number {
    return Math.min(Number(this.regs.get("PRIQ_BASE") & 0x1fn), this.maxLog2);
  }

  /** Whether the queue held no entry (for PRIQ_IRQ_CFG2.LO = 0: the interrupt on the empty → non-empty edge). */
  get empty(): boolean {
    return queueEmpty(this.regs.num("PRIQ_PROD"), this.regs.num("PRIQ_CONS"), this.log2);
  }

  /** Offers a group's entries (4 halves each); `blocked`: PRIQ_ABT_ERR is active. */
  pushGroup(entries: readonly RawBits[], blocked: boolean): PriWrite {
    if ((this.regs.num("CR0ACK") & CR0_PRIQEN) === 0 || blocked) return "disabled";
    const log2 = this.log2;
    const prod = this.regs.num("PRIQ_PROD");
    const cons = this.regs.num("PRIQ_CONS");
    if (((prod ^ cons) & QUEUE_OVERFLOW_FLAG) !== 0) {
      this.lost += entries.length;
      return "overflow";
    }
    if (queueFree(prod, cons, log2) < entries.length) {
      this.regs.set("PRIQ_PROD", (prod ^ QUEUE_OVERFLOW_FLAG) >>> 0);
      this.lost += entries.length;
      return "overflow";
    }
    const addr = Number(this.regs.get("PRIQ_BASE") & 0x000f_ffff_ffff_ffe0n);
    const base = queueBaseAddress(addr, log2, PRIQ_ENTRY_BYTES);
    let at = prod;
    for (const entry of entries) {
      const where = base + queueIndex(at, log2) * PRIQ_ENTRY_BYTES;
      if (!this.memory.hostReadable(where, PRIQ_ENTRY_BYTES)) return "abort";
      this.memory.writeWords(where, entry);
      at = queueAdvance(at, log2);
    }
    this.regs.set("PRIQ_PROD", at);
    this.written += entries.length;
    return "written";
  }
}
