import { err, ok, type GuestMemory, type PageSource, type Result, type VirtualMachine } from "@viommu/core";
import { readStruct, type ByteFields, type ByteLayout } from "../format/byte-layout.js";
import { hvResultToErrno, HvStatus, hvStatusName } from "../format/hv-status.js";
import { decodeHypercallInput, encodeHypercallInput } from "../format/hypercall-input.js";
import { decodeHypercallResult } from "../format/hypercall-result.js";
import { encodeHypercall, type HypercallEncodeOptions, type HypercallSpec } from "../format/hypercalls.js";

/** A hypercall's result value and what it means. */
export interface HypercallAnswer {
  readonly value: bigint;
  readonly status: number;
  /** Reps done (rep calls), absolute from rep 0. */
  readonly repsCompleted: number;
}

/**
 * How the guest issues hypercalls, as Linux's hv_do_hypercall() and hv_do_rep_hypercall() do: the input built in
 * its per-CPU input page, the output read from its output page (or right after the input, for the small outputs
 * Linux places there), a rep call re-issued from the reps completed until all are done.
 */
export class HypercallClient {
  private constructor(
    private readonly vm: VirtualMachine,
    private readonly memory: GuestMemory,
    readonly inputPage: number,
    readonly outputPage: number,
  ) {}

  static create(vm: VirtualMachine, memory: GuestMemory, pages: PageSource): Result<HypercallClient> {
    const input = pages.allocate(1);
    const output = pages.allocate(1);
    if (input === undefined || output === undefined) return err("ENOMEM", "no pages for the hypercall input and output");
    return ok(new HypercallClient(vm, memory, input, output));
  }

  /** A simple (or single-pass rep) call. `outputAt` defaults to the output page. */
  call<S extends HypercallSpec>(spec: S, options: HypercallEncodeOptions<S>, outputAt = this.outputPage): HypercallAnswer {
    const { control, bytes } = encodeHypercall(spec, options);
    this.memory.writeBytes(this.inputPage, bytes);
    return answer(this.vm.hypercall(control, this.inputPage, outputAt));
  }

  /**
   * A rep call, re-issued from the reps completed while the hypervisor returns success early (its time slice).
   * Linux loops until done; the guest here also stops, with a failure, if a call makes no progress.
   */
  repCall<S extends HypercallSpec>(spec: S, options: HypercallEncodeOptions<S>): HypercallAnswer {
    const encoded = encodeHypercall(spec, options);
    this.memory.writeBytes(this.inputPage, encoded.bytes);
    const c = decodeHypercallInput(encoded.control);
    let start = c.rep_start_index;
    for (;;) {
      const control = encodeHypercallInput({ ...c, rep_start_index: start });
      const a = answer(this.vm.hypercall(control, this.inputPage, this.outputPage));
      if (a.status !== HvStatus.HV_STATUS_SUCCESS || a.repsCompleted >= c.rep_count) return a;
      if (a.repsCompleted <= start) return { ...a, status: HvStatus.HV_STATUS_OPERATION_FAILED };
      start = a.repsCompleted;
    }
  }

  /** Reads a call's output. */
  read<B extends ByteLayout>(layout: B, at = this.outputPage): ByteFields<B> {
    return readStruct(layout, this.memory.readBytes(at, layout.size));
  }

  /** The raw output bytes. */
  readBytes(length: number, at = this.outputPage): Uint8Array {
    return this.memory.readBytes(at, length);
  }
}

function answer(value: bigint): HypercallAnswer {
  const r = decodeHypercallResult(value);
  return { value, status: r.status, repsCompleted: r.reps_completed };
}

/** A failed answer as the errno Linux's hv_result_to_errno() gives (the one conversion), with the status named. */
export function hypercallError<T = never>(what: string, a: HypercallAnswer): Result<T> {
  return err(hvResultToErrno(a.value) ?? "EIO", `${what}: ${hvStatusName(a.status)} (0x${a.status.toString(16)})`);
}
