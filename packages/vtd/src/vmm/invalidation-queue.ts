import type { GuestMemory } from "@viommu/core";
import { invDescName, invDescProblem, invDescType, InvDescType } from "../format/inv-desc.js";
import { DescriptorWidth, InvalidationQueueErrorInfo, invalidationQueueEntries } from "../format/registers.js";

/** What executing one accepted descriptor produced. */
export type DescriptorOutcome =
  | { readonly kind: "done" }
  /** The descriptor is invalid after all (a reserved value only the device model knows): IQE. */
  | { readonly kind: "invalid"; readonly info: number }
  /** A device-TLB invalidation nobody answered (no device at that source id): ITE. */
  | { readonly kind: "timeout"; readonly sid: number }
  /** A device-TLB invalidation answered with an error completion (ATS not enabled there): ICE. */
  | { readonly kind: "completion-error"; readonly sid: number };

export const DONE: DescriptorOutcome = { kind: "done" };

/** The device side of the queue: executes descriptors and records errors. */
export interface InvalidationQueueHost {
  /** Executes one descriptor that passed the format checks; `raw` is 4 or 8 words. */
  execute(type: number, raw: Uint32Array): DescriptorOutcome;
  /** Sets FSTS.IQE / ITE / ICE (raising the fault event as FSTS rules say). */
  queueError(kind: "IQE" | "ITE" | "ICE"): void;
  /** Whether an error status still stops the queue. */
  stopped(): boolean;
}

/** The queue's saved state: IQA as a decimal string, IQH/IQT byte offsets, IQERCD's three fields. */
export interface InvalidationQueueSnapshot {
  readonly iqa: string;
  readonly latchedIqa: string;
  readonly head: number;
  readonly tail: number;
  readonly enabled: boolean;
  readonly lastWasWait: boolean;
  readonly errors: [number, number, number];
}

/** A checked queue state to apply. */
export interface InvalidationQueueState {
  readonly iqa: bigint;
  /** What QIE latched: the ring head indexes. */
  readonly latchedIqa: bigint;
  readonly head: number;
  readonly tail: number;
  readonly enabled: boolean;
  readonly lastWasWait: boolean;
  /** IQEI, ITESID, ICESID. */
  readonly errors: readonly [number, number, number];
}

/** Descriptor types that exist only as 256-bit-era PASID descriptors (QEMU rejects them in 128-bit mode). */
const PASID_TYPES = new Set<number>([InvDescType.P_IOTLB_INV, InvDescType.PC_INV, InvDescType.P_DEV_TLB_INV, InvDescType.PG_RESP]);

/**
 * The invalidation queue (VT-d §6.5.2): a ring of 128- or 256-bit descriptors at IQA, consumed from IQH to
 * IQT. IQA is latched when queued invalidation is enabled. A descriptor the hardware cannot accept sets
 * FSTS.IQE (with IQERCD.IQEI) and stops the queue with IQH at that descriptor; a device-TLB time-out sets ITE
 * and stops with IQH past it; a bad completion sets ICE and processing goes on. Software clearing the error
 * restarts the queue from IQH. One doorbell consumes at most one ring's worth of descriptors.
 */
export class InvalidationQueue {
  /** IQA as software wrote it (read back as written). */
  iqa = 0n;
  /** IQA as GCMD.QIE latched it: the ring the unit consumes, whatever software wrote to IQA since. */
  latchedIqa = 0n;
  /** IQH and IQT as byte offsets. */
  head = 0;
  tail = 0;
  /** Latched at enable. */
  private base = 0;
  private entries = 256;
  private wide = false;
  enabled = false;
  /** Queued invalidation can be disabled only when the last descriptor processed was a wait (QEMU). */
  private lastWasWait = true;
  /** IQERCD. */
  iqeInfo = 0;
  iteSid = 0;
  iceSid = 0;
  /** Descriptors executed, for the VMM's statistics. */
  processed = 0;
  private readonly raw = new Uint32Array(8);
  /** Views for 128- and 256-bit descriptors, made once: the consume loop allocates nothing per descriptor. */
  private readonly raw128 = this.raw.subarray(0, 4);

  constructor(
    private readonly memory: GuestMemory,
    private readonly host: InvalidationQueueHost,
    private readonly allowWide: boolean,
  ) {}

  get descriptorBytes(): number {
    return this.wide ? 32 : 16;
  }

  /** Guest physical address of descriptor 0 as latched at enable; undefined while queued invalidation is off. */
  get ringBase(): number | undefined {
    return this.enabled ? this.base : undefined;
  }

  /** Descriptors in the ring as latched at enable (0 while queued invalidation is off). */
  get ringEntries(): number {
    return this.enabled ? this.entries : 0;
  }

  get sizeBytes(): number {
    return this.entries * this.descriptorBytes;
  }

  /** GCMD.QIE set: latch IQA; IQH starts at 0. */
  enable(): void {
    this.latchedIqa = this.iqa;
    this.base = Number((this.iqa & 0x000f_ffff_ffff_f000n) % (1n << 52n));
    this.wide = this.allowWide && ((this.iqa >> 11n) & 1n) === 1n;
    this.entries = invalidationQueueEntries(Number(this.iqa & 7n), this.wide ? DescriptorWidth.DW_256 : DescriptorWidth.DW_128);
    this.head = 0;
    this.enabled = true;
  }

  /** GCMD.QIE clear: refused (false) while descriptors are pending or the last one was not a wait. */
  disable(): boolean {
    if (this.head !== this.tail || !this.lastWasWait) return false;
    this.enabled = false;
    this.head = 0;
    return true;
  }

  /** A write of IQT; malformed tails are queue errors. Returns whether processing may run. */
  writeTail(value: bigint): boolean {
    this.tail = Number(value & 0x7fff0n);
    if (!this.enabled) return false;
    if (this.wide && this.tail & 0x10) return this.error(InvalidationQueueErrorInfo.QUEUE_TAIL_MISALIGNED);
    if (this.tail >= this.sizeBytes) return this.error(InvalidationQueueErrorInfo.INVALID_TAIL_PTR);
    return true;
  }

  private error(info: number): false {
    this.iqeInfo = info;
    this.host.queueError("IQE");
    return false;
  }

  /** Consumes descriptors from IQH to IQT until the queue is empty or stops on an error. */
  process(): void {
    if (!this.enabled || this.host.stopped()) return;
    if (this.tail >= this.sizeBytes || (this.wide && this.tail & 0x10)) return;
    const size = this.descriptorBytes;
    for (let budget = this.entries; budget > 0 && this.head !== this.tail; budget--) {
      const at = this.base + this.head;
      if (!this.memory.hostReadable(at, size)) {
        this.error(InvalidationQueueErrorInfo.FETCH_DESCRIPTOR_ERR);
        return;
      }
      const raw = size === 16 ? this.raw128 : this.raw;
      this.memory.readWords(at, raw);
      const problem = invDescProblem(raw);
      const type = invDescType(raw[0]!);
      if (problem !== undefined) {
        this.error(problem);
        return;
      }
      if (!this.wide && PASID_TYPES.has(type)) {
        this.error(InvalidationQueueErrorInfo.INVALID_DESCRIPTOR_WIDTH);
        return;
      }
      const outcome = this.host.execute(type, raw);
      if (outcome.kind === "invalid") {
        this.error(outcome.info);
        return;
      }
      this.processed++;
      this.lastWasWait = invDescName(type) === "INV_WAIT";
      this.head = (this.head + size) % this.sizeBytes;
      if (outcome.kind === "timeout") {
        this.iteSid = outcome.sid;
        this.host.queueError("ITE");
        return;
      }
      if (outcome.kind === "completion-error") {
        this.iceSid = outcome.sid;
        this.host.queueError("ICE");
      }
    }
  }

  /** IQERCD: IQEI [3:0], ITESID [47:32], ICESID [63:48]. */
  get iqercd(): bigint {
    return BigInt(this.iqeInfo & 0xf) | (BigInt(this.iteSid & 0xffff) << 32n) | (BigInt(this.iceSid & 0xffff) << 48n);
  }

  snapshot(): InvalidationQueueSnapshot {
    return {
      iqa: this.iqa.toString(),
      latchedIqa: this.latchedIqa.toString(),
      head: this.head,
      tail: this.tail,
      enabled: this.enabled,
      lastWasWait: this.lastWasWait,
      errors: [this.iqeInfo, this.iteSid, this.iceSid],
    };
  }

  /** Applies a checked state (vtd-state.ts validates every field against IQA first). */
  restore(s: InvalidationQueueState): void {
    this.iqa = s.latchedIqa;
    if (s.enabled) this.enable();
    else {
      this.enabled = false;
      this.latchedIqa = s.latchedIqa;
      this.base = 0;
      this.entries = 256;
      this.wide = false;
    }
    this.iqa = s.iqa;
    this.head = s.head;
    this.tail = s.tail;
    this.lastWasWait = s.lastWasWait;
    [this.iqeInfo, this.iteSid, this.iceSid] = s.errors;
  }
}
