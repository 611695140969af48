import type { DmaAnswer, InterruptSeen, TraceOp } from "../format/trace-op.js";

/** The answer a target gave to an operation that asks for one, in the shape of that operation's `expect`. */
export type Answer = Uint8Array | bigint | DmaAnswer | readonly InterruptSeen[];

/** What a target did with one operation. */
export type TargetResult =
  /** Performed; the operation asks for no answer (a write, a mark). */
  | { readonly status: "done" }
  /** Performed, with the target's answer. */
  | { readonly status: "answered"; readonly answer: Answer }
  /** Performed, but the target cannot see the answer (a DMA engine whose reads are not visible, a vCPU's APIC). */
  | { readonly status: "unobservable"; readonly reason: string }
  /** Not performed: the target cannot express the operation (a 2-byte MMIO access, an arbitrary DMA payload). */
  | { readonly status: "unsupported"; readonly reason: string }
  /** Not performed: the operation is invalid for this machine (outside RAM, no such device) or the target broke. */
  | { readonly status: "failed"; readonly message: string; readonly fatal: boolean };

/**
 * Something a trace can run on: the model, QEMU, another emulator. Operations arrive in program order and must
 * take effect in that order; a target may answer later (the promise), so a replay can keep several in flight.
 * The replay relocates register accesses into the target's IOMMU blocks before they arrive here.
 */
export interface ReplayTarget {
  /** For reports: "model vtd shadow", "qemu-system-x86_64 7.2.22 intel-iommu". */
  readonly name: string;
  /** Where the target put each IOMMU block of the trace's header, in the header's order. */
  readonly iommuBases: readonly number[];
  execute(op: TraceOp): Promise<TargetResult>;
  /** Releases everything the target holds (a process, a model). Safe to call twice. */
  close(): Promise<void>;
}
