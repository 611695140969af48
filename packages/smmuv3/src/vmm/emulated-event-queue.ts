import type { GuestMemory, RawBits } from "@viommu/core";
import { EVTQ_ENTRY_BYTES, QUEUE_OVERFLOW_FLAG, queueAdvance, queueBaseAddress, queueFull, queueIndex } from "../format/queue-registers.js";
import type { SmmuRegisterFile } from "./register-file.js";

/** What happened to a record offered to the event queue. */
export type EventWrite = "written" | "overflow" | "disabled" | "abort";

const CR0_EVTQEN = 1 << 2;

/**
 * The SMMU's producer side of the guest's event queue (IHI0070 §3.5.2, §7.4): records are written at PROD and
 * PROD advanced; a full queue loses the record and toggles EVTQ_PROD.OVFLG, once per overflow (while OVFLG
 * differs from EVTQ_CONS.OVACKFLG the queue is already in overflow and is left alone), so nothing is lost
 * without the indication; a disabled queue discards records; a write that cannot reach memory is the
 * caller's EVTQ_ABT_ERR.
 */
export class EmulatedEventQueue {
  /** Records written, lost to overflow, discarded while disabled. */
  written = 0;
  lost = 0;
  discarded = 0;

  constructor(
    private readonly regs: SmmuRegisterFile,
    private readonly memory: GuestMemory,
    private readonly maxLog2: number,
  ) {}

  private get log2(): number {
    return Math.min(Number(this.regs.get("EVTQ_BASE") & 0x1fn), this.maxLog2);
  }

  push(record: RawBits): EventWrite {
    if ((this.regs.num("CR0ACK") & CR0_EVTQEN) === 0) {
      this.discarded++;
      return "disabled";
    }
    const log2 = this.log2;
    const prod = this.regs.num("EVTQ_PROD");
    const cons = this.regs.num("EVTQ_CONS");
    if (queueFull(prod, cons, log2)) {
      this.markOverflow();
      return "overflow";
    }
    const addr = Number(this.regs.get("EVTQ_BASE") & 0x000f_ffff_ffff_ffe0n);
    const at = queueBaseAddress(addr, log2, EVTQ_ENTRY_BYTES) + queueIndex(prod, log2) * EVTQ_ENTRY_BYTES;
    if (!this.memory.hostReadable(at, EVTQ_ENTRY_BYTES)) return "abort";
    this.memory.writeWords(at, record);
    this.regs.set("EVTQ_PROD", queueAdvance(prod, log2));
    this.written++;
    return "written";
  }

  /** Records were lost (a full queue here, or a vEVENTQ overflow upstream): toggle OVFLG unless already overflowed. */
  markOverflow(): void {
    this.lost++;
    const prod = this.regs.num("EVTQ_PROD");
    const cons = this.regs.num("EVTQ_CONS");
    if (((prod ^ cons) & QUEUE_OVERFLOW_FLAG) === 0) this.regs.set("EVTQ_PROD", (prod ^ QUEUE_OVERFLOW_FLAG) >>> 0);
  }
}
