import { iommuBlockAt, type Trace } from "../format/trace-header.js";
import type { TraceOp } from "../format/trace-op.js";
import { expectationOf, sameAnswer, type Divergence, type DivergenceContext, type KnownDifference } from "./divergence.js";
import type { ReplayTarget, TargetResult } from "./replay-target.js";

export interface ReplayOptions {
  /** Differences the caller knows of: a divergence one of them explains is marked with it. */
  readonly known?: readonly KnownDifference[];
  /** Operations a target may have in flight at once (default 256; 1 runs them one by one). */
  readonly window?: number;
  /** Stop at the first divergence no known difference explains. */
  readonly stopAtFirst?: boolean;
  /** Called every 1000 operations. */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface OpNote {
  readonly index: number;
  readonly op: TraceOp;
  readonly reason: string;
}

export interface ReplayReport {
  readonly target: string;
  /** Operations in the trace. */
  readonly ops: number;
  /** Operations the target performed (or refused) before the replay ended. */
  readonly executed: number;
  /** Expectations compared with an answer. */
  readonly compared: number;
  /** Every divergence, in trace order; `known` set where the catalogue explains it. */
  readonly divergences: readonly Divergence[];
  /** Operations whose answer the target could not see, by reason, with how many. */
  readonly unobservable: readonly { readonly reason: string; readonly count: number; readonly first: number }[];
  /** Operations the target cannot express: the trace means something else there afterwards. */
  readonly unsupported: readonly OpNote[];
  /** Operations that failed (invalid for the machine, or the target broke). */
  readonly failures: readonly OpNote[];
  /** The index the replay stopped at (a fatal failure, or the first unexplained divergence when asked). */
  readonly stoppedAt?: number;
}

/** Divergences no catalogued difference explains. */
export function unexplained(report: ReplayReport): Divergence[] {
  return report.divergences.filter((d) => d.known === undefined);
}

/** Whether the replay found nothing unexplained: no unexplained divergence, no failure, no unsupported operation. */
export function replayClean(report: ReplayReport): boolean {
  return unexplained(report).length === 0 && report.failures.length === 0 && report.unsupported.length === 0 && report.stoppedAt === undefined;
}

/** The operation with register accesses moved from the header's IOMMU blocks to where the target put them. */
export function relocate(trace: Trace, bases: readonly number[], op: TraceOp): TraceOp {
  if (op.op !== "mmio-read" && op.op !== "mmio-write") return op;
  const i = trace.header.machine.iommus.findIndex((b) => op.addr >= b.base && op.addr + op.size <= b.base + b.size);
  if (i < 0) return op;
  const to = bases[i];
  const from = trace.header.machine.iommus[i]!.base;
  return to === undefined || to === from ? op : { ...op, addr: op.addr - from + to };
}

function registerOf(trace: Trace, op: TraceOp): DivergenceContext["register"] {
  if (op.op !== "mmio-read" && op.op !== "mmio-write") return undefined;
  const block = iommuBlockAt(trace.header.machine, op.addr, op.size);
  return block === undefined ? undefined : { vendor: block.vendor, offset: op.addr - block.base };
}

/**
 * Runs a trace on a target and compares every answer with the trace's expectation. Operations are issued in
 * order and may be in flight together (a target keeps their order); every divergence is reported with the
 * operation, the expected and the actual answer, and the first known difference that explains it. The target
 * is not closed here.
 */
export async function replay(trace: Trace, target: ReplayTarget, options: ReplayOptions = {}): Promise<ReplayReport> {
  const window = Math.max(1, options.window ?? 256);
  const divergences: Divergence[] = [];
  const unobservable = new Map<string, { count: number; first: number }>();
  const unsupported: OpNote[] = [];
  const failures: OpNote[] = [];
  let compared = 0;
  let executed = 0;
  let stoppedAt: number | undefined;
  const inFlight: Promise<void>[] = [];

  const handle = (index: number, result: TargetResult): void => {
    executed++;
    const op = trace.ops[index]!;
    switch (result.status) {
      case "done":
        return;
      case "unobservable": {
        const u = unobservable.get(result.reason);
        if (u === undefined) unobservable.set(result.reason, { count: 1, first: index });
        else u.count++;
        return;
      }
      case "unsupported":
        unsupported.push({ index, op, reason: result.reason });
        return;
      case "failed":
        failures.push({ index, op, reason: result.message });
        if (result.fatal && (stoppedAt === undefined || index < stoppedAt)) stoppedAt = index;
        return;
      case "answered": {
        const expected = expectationOf(op);
        if (expected === undefined) return;
        compared++;
        if (sameAnswer(op, expected, result.answer)) return;
        const context: DivergenceContext = { trace, index, op, expected, actual: result.answer, register: registerOf(trace, op) };
        const known = options.known?.find((k) => k.matches(context));
        divergences.push({
          index,
          op,
          expected,
          actual: result.answer,
          ...(known === undefined ? {} : { known: { id: known.id, classification: known.classification, summary: known.summary } }),
        });
        if (known === undefined && options.stopAtFirst && (stoppedAt === undefined || index < stoppedAt)) stoppedAt = index;
        return;
      }
    }
  };

  for (let index = 0; index < trace.ops.length && stoppedAt === undefined; index++) {
    const op = relocate(trace, target.iommuBases, trace.ops[index]!);
    inFlight.push(
      target.execute(op).then(
        (r) => handle(index, r),
        (e: unknown) => handle(index, { status: "failed", message: `target error: ${e instanceof Error ? e.message : String(e)}`, fatal: true }),
      ),
    );
    if (inFlight.length >= window) await inFlight.shift();
    if (options.onProgress !== undefined && (index + 1) % 1000 === 0) options.onProgress(index + 1, trace.ops.length);
  }
  await Promise.all(inFlight);
  divergences.sort((a, b) => a.index - b.index);
  unsupported.sort((a, b) => a.index - b.index);
  failures.sort((a, b) => a.index - b.index);
  return {
    target: target.name,
    ops: trace.ops.length,
    executed,
    compared,
    divergences,
    unobservable: [...unobservable.entries()].map(([reason, u]) => ({ reason, count: u.count, first: u.first })),
    unsupported,
    failures,
    ...(stoppedAt === undefined ? {} : { stoppedAt }),
  };
}
