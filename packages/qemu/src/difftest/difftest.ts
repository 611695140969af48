import type { VendorPlugin } from "@viommu/core";
import { DEFAULT_RIDS, recordWorkload, replay, workloads, type KnownDifference, type ReplayReport, type Trace, type TraceHeader, type TraceOp } from "@viommu/trace";
import { predictedFailure, qemuDifferencesFor, qemuFailures } from "../catalogue/qemu-differences.js";
import { summarize, type DivergenceSummary } from "../conformance/qemu-conformance.js";
import { qemuMachine, type QemuVendor } from "../machines/qemu-machine.js";
import { QemuTarget } from "../qemu-target.js";
import { qemuRecordProfile } from "../record-profile.js";
import { answeredByModel, caseSeed, mutate, Rng } from "./program.js";
import { shrink } from "./shrink.js";

/**
 * Guest RAM of difftest programs: the driver's 32 MiB pool at the top and the workloads' data from 16 MiB fit;
 * small, so zeroing it between cases costs little.
 */
const DIFFTEST_RAM = 64 * 2 ** 20;
/** Devices QEMU is started with: as many as the largest workload uses. */
const DEVICES = Math.max(...workloads.map((w) => w.devices));

export type DifftestStatus =
  /** Every answer agreed (up to what the specification leaves open). */
  | "agree"
  /** Divergences, all catalogued. */
  | "known"
  /** A divergence the catalogue does not explain: a finding. */
  | "diverged"
  /** QEMU failed (crashed, stopped answering): a finding. */
  | "qemu-failed"
  /** An exception escaped the model on the program: a finding. */
  | "model-exception"
  /** The catalogue predicted QEMU to fail at an operation and QEMU answered it: the catalogue is wrong for this QEMU. */
  | "misprediction"
  /** The program needs something edu cannot do; not compared. */
  | "inexpressible";

export interface DifftestCase {
  readonly index: number;
  readonly seed: number;
  readonly workload: string;
  readonly mutations: readonly string[];
  readonly status: DifftestStatus;
  /** Catalogued differences met, by id. */
  readonly known: readonly string[];
  /** For a finding: what it is (the first unexplained divergence, QEMU's failure, the model's exception). */
  readonly detail?: string;
  readonly first?: DivergenceSummary;
  /** For a finding: the (minimal) trace that reproduces it, and where it was written. */
  readonly trace?: Trace;
  readonly file?: string;
}

export interface DifftestOptions {
  readonly vendor: QemuVendor;
  readonly plugins: readonly VendorPlugin[];
  readonly seed: number;
  readonly cases: number;
  /**
   * Only the cases whose index i has i mod count = index - 1 (1 ≤ index ≤ count): one of count processes,
   * threads or machines sharing a campaign. Each case is a function of the seed and its index alone.
   */
  readonly shard?: DifftestShard;
  /** The system emulator (default the vendor's on PATH). */
  readonly binary?: string;
  /** Shrink findings to a minimal trace (default true). */
  readonly shrink?: boolean;
  /** Most QEMU runs spent shrinking one finding (default 80). */
  readonly shrinkBudget?: number;
  /** The differences to explain divergences with (default the catalogue for the vendor). */
  readonly known?: readonly KnownDifference[];
  /** Called with each case as it finishes. */
  readonly onCase?: (c: DifftestCase) => void;
  /** Called with each finding's minimal trace (to write it out). */
  readonly onFinding?: (c: DifftestCase) => string | undefined;
}

/** The i-th (from 1) of n interleaved slices of a campaign's case indexes. */
export interface DifftestShard {
  readonly index: number;
  readonly count: number;
}

export function inDifftestShard(caseIndex: number, shard: DifftestShard | undefined): boolean {
  return shard === undefined || caseIndex % shard.count === shard.index - 1;
}

/**
 * The j-th (from 1) of n slices of the given shard: slice j of n of shard i of m is shard (i + m (j - 1)) of m n,
 * so workers inside a shard of a larger campaign still run each of its cases exactly once.
 */
export function subShard(outer: DifftestShard | undefined, j: number, n: number): DifftestShard {
  const m = outer?.count ?? 1;
  return { index: (outer?.index ?? 1) + m * (j - 1), count: m * n };
}

export interface DifftestReport {
  readonly vendor: string;
  readonly seed: number;
  /** Cases run (those of the shard, with --shard). */
  readonly cases: number;
  /** The slice of the campaign run, as i/n. */
  readonly shard?: string;
  readonly qemu: string;
  readonly byStatus: Readonly<Record<DifftestStatus, number>>;
  /** How often each catalogued difference was met. */
  readonly byKnown: Readonly<Record<string, number>>;
  readonly findings: readonly DifftestCase[];
  readonly ms: number;
  /** QEMU processes started (the first, and one after each failure that killed QEMU). */
  readonly qemuStarts: number;
  /**
   * Cases whose program QEMU was predicted to hang on (a catalogued failure, confirmed on QEMU earlier in the run):
   * only the operations before the hang ran on QEMU.
   */
  readonly predictedFailures: number;
  /** Time spent matching divergences against the catalogue. */
  readonly catalogueMs: number;
}

export type DifftestResult = { readonly ok: true; readonly report: DifftestReport } | { readonly ok: false; readonly error: string };

/** The shape of a finding, which a smaller program must keep to count as the same finding. */
function signature(status: DifftestStatus, report: ReplayReport | undefined, detail: string | undefined): string {
  if (status === "qemu-failed" || status === "misprediction") return status;
  if (status === "model-exception") return `model:${(detail ?? "").split(":").slice(1, 3).join(":")}`;
  const d = report?.divergences.find((x) => x.known === undefined);
  if (d === undefined) return "";
  return d.op.op === "mmio-read" ? `mmio-read:${d.op.addr.toString(16)}` : d.op.op === "dma" ? "dma" : d.op.op;
}

function classify(report: ReplayReport): { status: DifftestStatus; known: string[]; detail?: string; first?: DivergenceSummary } {
  const known = [...new Set(report.divergences.flatMap((d) => (d.known === undefined ? [] : [d.known.id])))];
  const fatal = report.failures.find((f) => report.stoppedAt !== undefined && f.index === report.stoppedAt) ?? report.failures.find((f) => /QEMU/.test(f.reason));
  if (fatal !== undefined) return { status: "qemu-failed", known, detail: `line ${fatal.index + 2}: ${fatal.reason}` };
  if (report.unsupported.length > 0) return { status: "inexpressible", known, detail: report.unsupported[0]!.reason };
  const d = report.divergences.find((x) => x.known === undefined);
  if (d !== undefined) return { status: "diverged", known, detail: `line ${d.index + 2}`, first: summarize(d) };
  return { status: report.divergences.length > 0 && report.divergences.some((x) => x.known?.classification !== "open") ? "known" : "agree", known };
}

/**
 * Differential fuzzing of the model against QEMU: each case is a recorded workload with 1 to 3 structured
 * mutations, answered by the model, run on QEMU (one QEMU, reset between cases) and compared with the catalogue
 * applied. Deterministic per seed. A finding (an unexplained divergence, QEMU failing, the model throwing) is
 * shrunk to a minimal trace that `trace replay --target qemu` reproduces.
 */
export async function runDifftest(options: DifftestOptions): Promise<DifftestResult> {
  const t0 = Date.now();
  const plugin = options.plugins.find((p) => p.id === options.vendor);
  if (plugin === undefined) return { ok: false, error: `vendor ${options.vendor} is not installed` };
  const machine = qemuMachine(options.vendor)!;
  const profile = qemuRecordProfile(options.vendor)!;
  let catalogueMs = 0;
  // Timed, so a slow matcher shows in the report (every divergence of every case meets every entry).
  const known: KnownDifference[] = (options.known ?? qemuDifferencesFor(options.vendor)).map((k) => ({
    id: k.id,
    classification: k.classification,
    summary: k.summary,
    matches: (c) => {
      const t = performance.now();
      try {
        return k.matches(c);
      } finally {
        catalogueMs += performance.now() - t;
      }
    },
  }));
  const ram = { base: profile.ramBase!, size: DIFFTEST_RAM };
  const applicable = workloads.filter((w) => w.requires.every((cap) => plugin.capabilities[cap]) && w.id !== "bring-up");
  const bases = new Map<string, Trace>();
  for (const w of applicable) {
    const r = recordWorkload({ plugin, plugins: options.plugins, workload: w, mode: profile.mode, dma: profile.dma, seed: options.seed, guest: profile.variant === undefined ? {} : { variant: profile.variant }, ram });
    if (r.status === "recorded") bases.set(w.id, r.trace);
  }
  if (bases.size === 0) return { ok: false, error: `no workload records on ${options.vendor}` };
  const union: TraceHeader = { ...[...bases.values()][0]!.header, machine: { ...[...bases.values()][0]!.header.machine, devices: DEFAULT_RIDS.slice(0, DEVICES).map((rid) => ({ rid })) } };
  let target: QemuTarget | undefined;
  let qemuName = machine.binary;
  let qemuStarts = 0;
  let predictedFailures = 0;
  /** Catalogued failures seen happening on this QEMU in this run: later predictions of them are trusted. */
  const confirmed = new Set<string>();
  const startQemu = async (): Promise<string | undefined> => {
    qemuStarts++;
    const started = await QemuTarget.start(machine, union, { reusable: true, ...(options.binary === undefined ? {} : { binary: options.binary }) });
    if (!started.ok) return started.error;
    target = started.target;
    // QEMU answers in well under a millisecond: 5 s without an answer is a hang, and costs little when shrinking.
    target.deadlineMs = 5_000;
    qemuName = target.name;
    return undefined;
  };
  const onQemu = async (trace: Trace): Promise<ReplayReport | string> => {
    if (target === undefined || (await target.reset(trace.header)) !== undefined) {
      if (target !== undefined) await target.close();
      const why = await startQemu();
      if (why !== undefined) return why;
      const again = await target!.reset(trace.header);
      if (again !== undefined) return again;
    }
    const report = await replay(trace, target!, { known });
    if (report.stoppedAt !== undefined) {
      await target!.close();
      target = undefined;
    }
    return report;
  };

  const byStatus: Record<DifftestStatus, number> = { agree: 0, known: 0, diverged: 0, "qemu-failed": 0, "model-exception": 0, misprediction: 0, inexpressible: 0 };
  const byKnown: Record<string, number> = {};
  const findings: DifftestCase[] = [];
  let ran = 0;
  try {
    const why = await startQemu();
    if (why !== undefined) return { ok: false, error: why };
    for (let index = 0; index < options.cases; index++) {
      if (!inDifftestShard(index, options.shard)) continue;
      ran++;
      const seed = caseSeed(options.seed, index);
      const rng = new Rng(seed);
      const workload = rng.pick([...bases.keys()]);
      const base = bases.get(workload)!;
      const { ops, mutations } = mutate(base, options.vendor, rng, 1 + rng.below(3));
      type Evaluation = { status: DifftestStatus; known: string[]; detail?: string; first?: DivergenceSummary; trace?: Trace; report?: ReplayReport; predicted?: boolean };
      const evaluate = async (program: readonly TraceOp[]): Promise<Evaluation> => {
        const answered = answeredByModel(plugin, options.plugins, options.vendor, base.header, program);
        if (answered === undefined) return { status: "inexpressible", known: [], detail: "the model cannot be the trace's machine" };
        if (answered.modelExceptions.length > 0) return { status: "model-exception", known: [], detail: answered.modelExceptions[0], trace: answered.trace };
        const predicted = predictedFailure(options.vendor, answered.trace);
        if (predicted !== undefined && confirmed.has(predicted.failure.id)) {
          // QEMU would hang there (seen earlier in this run): compare what comes before, and spare the deadline.
          const prefix: Trace = { header: answered.trace.header, ops: answered.trace.ops.slice(0, predicted.index) };
          const report = await onQemu(prefix);
          if (typeof report === "string") return { status: "qemu-failed", known: [], detail: report, trace: prefix, predicted: true };
          const verdict = classify(report);
          if (verdict.status === "agree" || verdict.status === "known") return { status: "known", known: [...verdict.known, predicted.failure.id], trace: prefix, report, predicted: true };
          return { ...verdict, trace: prefix, report, predicted: true };
        }
        const report = await onQemu(answered.trace);
        if (typeof report === "string") return { status: "qemu-failed", known: [], detail: report, trace: answered.trace };
        const verdict = classify(report);
        if (verdict.status === "qemu-failed") {
          // A way of failing the catalogue knows is a known difference, not a new finding.
          const failure = qemuFailures.find((f) => f.vendor === options.vendor && f.matches(answered.trace, verdict.detail ?? "", report.stoppedAt));
          if (failure !== undefined) {
            confirmed.add(failure.id);
            return { status: "known", known: [...verdict.known, failure.id], trace: answered.trace, report };
          }
        }
        if (predicted !== undefined && (report.stoppedAt === undefined || report.stoppedAt > predicted.index)) {
          const line = predicted.index + 2;
          return { status: "misprediction", known: verdict.known, detail: `line ${line}: ${predicted.failure.id} predicts QEMU hangs here, and it answered`, trace: answered.trace, report };
        }
        return { ...verdict, trace: answered.trace, report };
      };
      const first = await evaluate(ops);
      if (first.predicted === true) predictedFailures++;
      let result: DifftestCase = { index, seed, workload, mutations, status: first.status, known: first.known, ...(first.detail === undefined ? {} : { detail: first.detail }), ...(first.first === undefined ? {} : { first: first.first }) };
      if (first.status === "diverged" || first.status === "qemu-failed" || first.status === "model-exception" || first.status === "misprediction") {
        let minimal = first.trace!;
        const sig = signature(first.status, first.report, first.detail);
        if (options.shrink !== false) {
          const smaller = await shrink(
            first.trace!.ops.slice(0, first.trace!.ops.findIndex((o) => o.op === "mark" && o.label === "probe")),
            async (candidate) => {
              const r = await evaluate(candidate);
              return r.status === first.status && signature(r.status, r.report, r.detail) === sig ? r.trace : undefined;
            },
            options.shrinkBudget ?? 80,
          );
          if (smaller !== undefined) minimal = smaller;
        }
        result = { ...result, trace: minimal };
        const file = options.onFinding?.(result);
        if (file !== undefined) result = { ...result, file };
        findings.push(result);
      }
      byStatus[result.status]++;
      for (const id of result.known) byKnown[id] = (byKnown[id] ?? 0) + 1;
      options.onCase?.(result);
    }
  } finally {
    await target?.close();
  }
  return { ok: true, report: { vendor: options.vendor, seed: options.seed, cases: ran, ...(options.shard === undefined ? {} : { shard: `${options.shard.index}/${options.shard.count}` }), qemu: qemuName, byStatus, byKnown, findings, ms: Date.now() - t0, qemuStarts, predictedFailures, catalogueMs: Math.round(catalogueMs) } };
}

/**
 * One report of the slices of a campaign (run by workers or on other machines): counts summed, findings in case
 * order, so the merged report does not depend on how the campaign was split. `ms` is the caller's wall time.
 */
export function mergeDifftestReports(parts: readonly DifftestReport[], ms: number, shard?: DifftestShard): DifftestReport {
  const byStatus: Record<DifftestStatus, number> = { agree: 0, known: 0, diverged: 0, "qemu-failed": 0, "model-exception": 0, misprediction: 0, inexpressible: 0 };
  const byKnown: Record<string, number> = {};
  for (const p of parts) {
    for (const [k, n] of Object.entries(p.byStatus)) byStatus[k as DifftestStatus] += n;
    for (const [k, n] of Object.entries(p.byKnown)) byKnown[k] = (byKnown[k] ?? 0) + n;
  }
  const sortedKnown = Object.fromEntries(Object.entries(byKnown).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const first = parts[0]!;
  return {
    vendor: first.vendor,
    seed: first.seed,
    cases: parts.reduce((n, p) => n + p.cases, 0),
    ...(shard === undefined ? {} : { shard: `${shard.index}/${shard.count}` }),
    qemu: first.qemu,
    byStatus,
    byKnown: sortedKnown,
    findings: parts.flatMap((p) => p.findings).sort((a, b) => a.index - b.index),
    ms,
    qemuStarts: parts.reduce((n, p) => n + p.qemuStarts, 0),
    predictedFailures: parts.reduce((n, p) => n + p.predictedFailures, 0),
    catalogueMs: parts.reduce((n, p) => n + p.catalogueMs, 0),
  };
}
