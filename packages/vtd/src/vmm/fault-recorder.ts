import { encodeFaultRecord, type FaultRecordFields } from "../format/fault-record.js";

/** FSTS bits (registers.ts fstsLayout). */
export const Fsts = { PFO: 1 << 0, PPF: 1 << 1, IQE: 1 << 4, ICE: 1 << 5, ITE: 1 << 6, PRO: 1 << 7 } as const;
/** FSTS bits software clears by writing 1. */
export const FSTS_RW1C = Fsts.PFO | Fsts.IQE | Fsts.ICE | Fsts.ITE | Fsts.PRO;
/** The status bits whose being set already signalled a fault event (no second event until all are clear). */
const EVENT_STATUS = Fsts.PFO | Fsts.PPF | Fsts.IQE | Fsts.ICE | Fsts.ITE;

/** Event control registers (FECTL, IECTL, PECTL): IM masks the MSI (resets to 1), IP records a masked event. */
export const EventControl = { IP: 1 << 30, IM: 1 << 31 } as const;

/**
 * An event-interrupt block (FECTL/FEDATA/FEADDR/FEUADDR and its IE and PE siblings): the interrupt-pending and
 * mask protocol, and the MSI it sends.
 */
export class EventInterrupt {
  control: number = EventControl.IM;
  data = 0;
  address = 0;
  upperAddress = 0;

  constructor(private readonly send: (address: number, upper: number, data: number) => void) {}

  /** An interrupt condition: sent now, or held pending while masked. */
  raise(): void {
    if (this.control & EventControl.IM) this.control = (this.control | EventControl.IP) >>> 0;
    else this.send(this.address, this.upperAddress, this.data);
  }

  /** A write of the control register: only IM is writable; unmasking sends a pending interrupt. */
  writeControl(value: number): void {
    const im = value & EventControl.IM;
    this.control = ((this.control & ~EventControl.IM) | im) >>> 0;
    if (!im && this.control & EventControl.IP) {
      this.control = (this.control & ~EventControl.IP) >>> 0;
      this.send(this.address, this.upperAddress, this.data);
    }
  }

  /** Software serviced every status the interrupt stood for: nothing stays pending. */
  clearPending(): void {
    this.control = (this.control & ~EventControl.IP) >>> 0;
  }
}

/**
 * Primary fault logging into the fault-recording registers (VT-d §7.2.1; ../shared/spec/x86.md A7.1), with
 * the queue-error status bits that share FSTS. Rules: nothing is recorded while PFO is set; a record slot
 * still holding a fault (F = 1) sets PFO and the fault is dropped; otherwise the record is written with F = 1,
 * PPF is set (and FRI names the slot, if PPF was clear), and the index advances, wrapping after the last
 * register. A fault event is raised only when no status (PFO, PPF, IQE, ICE, ITE) was already set. The spec
 * lets hardware coalesce faults of one source id; this model records each one, so none is lost unannounced.
 */
export class FaultRecorder {
  /** FRCD words, 4 × 32 bits per register. */
  readonly records: Uint32Array;
  /** FSTS status bits (PPF and FRI are derived on read). */
  private status = 0;
  private fri = 0;
  private next = 0;

  constructor(
    readonly count: number,
    readonly event: EventInterrupt,
  ) {
    this.records = new Uint32Array(count * 4);
  }

  private pending(): boolean {
    for (let i = 0; i < this.count; i++) if (this.records[i * 4 + 3]! >>> 31) return true;
    return false;
  }

  /** The FSTS value: status bits, PPF from the records, FRI. */
  get fsts(): number {
    return (this.status | (this.pending() ? Fsts.PPF : 0) | (this.fri << 8)) >>> 0;
  }

  /** Records one fault (fields of FRCD_REG without F). Returns whether it was recorded. */
  record(fields: Partial<FaultRecordFields>): boolean {
    if (this.status & Fsts.PFO) return false;
    const at = this.next * 4;
    if (this.records[at + 3]! >>> 31) {
      this.status |= Fsts.PFO;
      return false;
    }
    const before = this.fsts;
    this.records.set(encodeFaultRecord({ ...fields, F: 1 }), at);
    if ((before & Fsts.PPF) === 0) this.fri = this.next;
    this.next = (this.next + 1) % this.count;
    if ((before & EVENT_STATUS) === 0) this.event.raise();
    return true;
  }

  /** Sets a queue-error status (IQE, ICE, ITE) or PRO, raising the fault event if no status was set. */
  setStatus(bit: number): void {
    const before = this.fsts;
    this.status |= bit;
    if ((before & EVENT_STATUS) === 0 && bit !== Fsts.PRO) this.event.raise();
  }

  hasStatus(bit: number): boolean {
    return (this.status & bit) !== 0;
  }

  /** A write of FSTS: RW1C bits cleared; returns the bits that were set and are now clear. */
  writeFsts(value: number): number {
    const cleared = this.status & value & FSTS_RW1C;
    this.status &= ~cleared;
    this.settle();
    return cleared;
  }

  /** 32-bit read of FRCD register `n`, dword `dword` (0..3). */
  readRecord(n: number, dword: number): number {
    return this.records[n * 4 + dword]!;
  }

  /** A write to FRCD register `n`, dword `dword`: only F (bit 31 of dword 3) is writable, and write-1-to-clear. */
  writeRecord(n: number, dword: number, value: number): void {
    if (dword !== 3 || (value >>> 31) === 0) return;
    this.records.fill(0, n * 4, n * 4 + 4);
    this.settle();
  }

  /** Disabling translation restarts recording at register 0 (QEMU; the spec leaves the index to hardware). */
  resetIndex(): void {
    this.next = 0;
  }

  /** Once software has serviced every status, the pending fault interrupt is withdrawn. */
  private settle(): void {
    if ((this.fsts & (EVENT_STATUS | Fsts.PRO)) === 0) this.event.clearPending();
  }

  /** State for save/restore. */
  snapshot(): { records: number[]; status: number; fri: number; next: number } {
    return { records: [...this.records], status: this.status, fri: this.fri, next: this.next };
  }

  restore(s: { records: number[]; status: number; fri: number; next: number }): void {
    this.records.set(s.records.slice(0, this.records.length));
    this.status = s.status & FSTS_RW1C;
    this.fri = s.fri % this.count;
    this.next = s.next % this.count;
  }
}
