import { err, ok, toHex64, type GuestEvent, type GuestMemory, type Result } from "@viommu/core";
import { encodeInvWaitInto } from "../format/inv-desc-encode.js";
import { FaultStatus, Reg, type RegisterWindow } from "./mmio.js";

/** Queue size the driver programs: QS = 0 (one page, 256 descriptors) or, with 256-bit descriptors, QS = 1 as Linux does. */
export const QUEUE_ENTRIES = 256;
const QI_DONE = 1;
/** The wait Linux's qi_submit_sync appends: status write, fence. */
const WAIT_FLAGS = { SW: 1, FN: 1 } as const;

/**
 * The guest driver's invalidation queue (Linux `qi_submit_sync`): descriptors are written at the tail followed
 * by a wait descriptor that writes a status word and fences, IQT is written, and the status word is polled. A
 * queue error is handled as Linux's `qi_check_fault` does: an IQE at one of ours is repaired by copying the
 * wait descriptor over the bad one and clearing IQE (the hardware then resumes); an ITE is cleared and the
 * batch reported aborted. Each error is kept as an event for `readEvents`.
 */
export class GuestInvalidationQueue {
  private tail = 0;
  private sequence = 0;
  readonly errors: GuestEvent[] = [];
  /** The wait descriptor, rewritten for every batch (at the queue's width, so it is written as is). */
  private readonly wait: Uint32Array;

  constructor(
    private readonly regs: RegisterWindow,
    private readonly memory: GuestMemory,
    readonly base: number,
    readonly wide: boolean,
    /** A dword in guest memory the wait descriptors write. */
    private readonly statusAddress: number,
  ) {
    this.wait = new Uint32Array(wide ? 8 : 4);
  }

  get descriptorBytes(): number {
    return this.wide ? 32 : 16;
  }

  /** IQA value: base, DW, QS (scalable mode: 256-bit descriptors in two pages). */
  get iqa(): bigint {
    return BigInt(this.base) | (this.wide ? (1n << 11n) | 1n : 0n);
  }

  /** Widens a 128-bit descriptor to the queue's width. */
  private fit(desc: Uint32Array): Uint32Array {
    if (!this.wide || desc.length === 8) return desc;
    const wide = new Uint32Array(8);
    wide.set(desc);
    return wide;
  }

  private put(desc: Uint32Array): number {
    const index = this.tail;
    this.memory.writeWords(this.base + index * this.descriptorBytes, this.fit(desc));
    this.tail = (this.tail + 1) % QUEUE_ENTRIES;
    return index;
  }

  /** Submits `descs` then a wait, and waits for it. */
  submit(descs: readonly Uint32Array[]): Result<void> {
    // Leave room for the wait descriptor and the one free slot of the ring.
    const chunk = QUEUE_ENTRIES - 2;
    if (descs.length <= chunk) return this.submitBatch(descs);
    for (let from = 0; from < descs.length; from += chunk) {
      const r = this.submitBatch(descs.slice(from, from + chunk));
      if (!r.ok) return r;
    }
    return ok();
  }

  private submitBatch(descs: readonly Uint32Array[]): Result<void> {
    const indexes = descs.map((d) => this.put(d));
    this.sequence = (this.sequence + 1) >>> 0 || 1;
    this.memory.write32(this.statusAddress, 0);
    const waitIndex = this.put(encodeInvWaitInto(this.wait, WAIT_FLAGS, QI_DONE + this.sequence, this.statusAddress));
    this.regs.write32(Reg.IQT, this.tail * this.descriptorBytes);
    if (this.memory.read32(this.statusAddress) === QI_DONE + this.sequence) return ok();
    return this.checkFault(indexes, waitIndex);
  }

  private checkFault(indexes: readonly number[], waitIndex: number): Result<void> {
    let fsts = this.regs.read32(Reg.FSTS);
    let iqercd = this.regs.read64(Reg.IQERCD);
    const raw = (): string[] => toHex64(Uint32Array.of(fsts, 0, Number(iqercd & 0xffff_ffffn), Number(iqercd >> 32n)));
    if (fsts & FaultStatus.IQE) {
      let head = Number(this.regs.read64(Reg.IQH)) / this.descriptorBytes;
      if (!indexes.includes(head) && head !== waitIndex) {
        this.errors.push({ kind: "command-error", code: Number(iqercd & 0xfn), name: "IQE", address: head, raw: raw() });
        this.regs.write32(Reg.FSTS, FaultStatus.IQE);
        return err("EIO", "invalidation queue error");
      }
      // Each of ours the unit refused is replaced by the wait descriptor and IQE cleared (the unit resumes there);
      // the unit may stop again at a later one of the batch, at most once per descriptor.
      const refused: number[] = [];
      for (let round = 0; round <= indexes.length && fsts & FaultStatus.IQE && (indexes.includes(head) || head === waitIndex); round++) {
        this.errors.push({ kind: "command-error", code: Number(iqercd & 0xfn), name: "IQE", address: head, raw: raw() });
        refused.push(head);
        const wait = this.memory.readBytes(this.base + waitIndex * this.descriptorBytes, this.descriptorBytes);
        this.memory.writeBytes(this.base + head * this.descriptorBytes, wait);
        this.regs.write32(Reg.FSTS, FaultStatus.IQE);
        fsts = this.regs.read32(Reg.FSTS);
        iqercd = this.regs.read64(Reg.IQERCD);
        head = Number(this.regs.read64(Reg.IQH)) / this.descriptorBytes;
      }
      return err("EIO", `invalid descriptor at queue index ${refused.join(", ")}`);
    }
    if (fsts & FaultStatus.ITE) {
      this.errors.push({ kind: "command-error", code: Number((iqercd >> 32n) & 0xffffn), name: "ITE", raw: raw() });
      this.regs.write32(Reg.FSTS, FaultStatus.ITE);
      return err("EAGAIN", "device-TLB invalidation timed out; the batch was aborted");
    }
    if (fsts & FaultStatus.ICE) {
      this.errors.push({ kind: "command-error", code: Number((iqercd >> 48n) & 0xffffn), name: "ICE", raw: raw() });
      this.regs.write32(Reg.FSTS, FaultStatus.ICE);
    }
    return this.memory.read32(this.statusAddress) === QI_DONE + this.sequence ? ok() : err("ETIMEDOUT", "invalidation wait did not complete");
  }
}
