import type { VendorPlugin } from "@viommu/core";
import { answerText, opText, recordWorkload, replay, workloads, type Divergence, type ReplayReport, type Trace, type Workload } from "@viommu/trace";
import { qemuDifferencesFor } from "../catalogue/qemu-differences.js";
import { qemuMachine, type QemuVendor } from "../machines/qemu-machine.js";
import { QemuTarget, type QemuTargetOptions } from "../qemu-target.js";
import { qemuRecordProfile } from "../record-profile.js";

export type QemuCaseStatus = "pass" | "fail" | "n/a";

/** One divergence in a report: where, what, and what the catalogue says of it. */
export interface DivergenceSummary {
  readonly index: number;
  readonly op: string;
  readonly expected: string;
  readonly actual: string;
  readonly known?: { readonly id: string; readonly classification: string };
}

export interface QemuCaseResult {
  readonly id: string;
  readonly rule: string;
  readonly status: QemuCaseStatus;
  /** Why it failed or does not apply; for a pass, the specification-open differences seen. */
  readonly detail?: string;
  /** Catalogued differences the replay met, by id. */
  readonly known: readonly string[];
  /** Divergences no catalogued difference explains (each one a finding). */
  readonly unexplained: number;
  readonly divergences: readonly DivergenceSummary[];
  /** The trace, for a caller that writes failing cases out. */
  readonly trace?: Trace;
}

export interface QemuConformanceReport {
  readonly vendor: string;
  readonly qemu: string;
  readonly results: readonly QemuCaseResult[];
  readonly passed: number;
  readonly failed: number;
  readonly notApplicable: number;
  /** Failures not explained by the catalogue (unexplained divergences, QEMU failing): the exit status follows them. */
  readonly unexplained: number;
}

export interface QemuConformanceOptions extends QemuTargetOptions {
  readonly vendor: QemuVendor;
  /** The installed plugins: the vendor's and any it needs. */
  readonly plugins: readonly VendorPlugin[];
  readonly seed?: number;
  /** Run only these workload ids. */
  readonly only?: readonly string[];
  readonly onResult?: (result: QemuCaseResult) => void;
}

export function summarize(d: Divergence): DivergenceSummary {
  return {
    index: d.index,
    op: opText(d.op),
    expected: answerText(d.expected),
    actual: answerText(d.actual),
    ...(d.known === undefined ? {} : { known: { id: d.known.id, classification: d.known.classification } }),
  };
}

/** Whether the replay could not see an interrupt the trace expected to be delivered (qtest cannot see a vCPU's APIC). */
function deliveryUnobservable(trace: Trace, report: ReplayReport): boolean {
  return trace.ops.some((op) => op.op === "interrupts" && (op.expect?.length ?? 0) > 0) && report.unobservable.some((u) => trace.ops[u.first]?.op === "interrupts");
}

/** The verdict of one case from its replay on QEMU. */
export function judge(workload: Workload, trace: Trace, report: ReplayReport): QemuCaseResult {
  const divergences = report.divergences.map(summarize);
  const known = [...new Set(report.divergences.flatMap((d) => (d.known === undefined ? [] : [d.known.id])))];
  const unexplained = report.divergences.filter((d) => d.known === undefined);
  const base = { id: workload.id, rule: workload.rule, known, unexplained: unexplained.length + report.failures.length, divergences, trace };
  if (report.failures.length > 0) {
    const f = report.failures[0]!;
    return { ...base, status: "fail", detail: `operation ${f.index} (line ${f.index + 2}) failed on QEMU: ${f.reason}` };
  }
  if (report.unsupported.length > 0) {
    const u = report.unsupported[0]!;
    return { ...base, status: "n/a", detail: `operation ${u.index} cannot run on QEMU's edu: ${u.reason}` };
  }
  const against = report.divergences.filter((d) => d.known === undefined || d.known.classification !== "open");
  if (against.length > 0) {
    const d = against[0]!;
    const why = d.known === undefined ? "not in the catalogue" : `${d.known.classification === "target-deviates" ? "QEMU deviates" : "the model deviates"} (${d.known.id})`;
    return { ...base, status: "fail", detail: `first at operation ${d.index} (line ${d.index + 2}), ${why}: ${opText(d.op)} expected ${answerText(d.expected)}, QEMU answered ${answerText(d.actual)}${against.length > 1 ? `; ${against.length - 1} more` : ""}` };
  }
  if (deliveryUnobservable(trace, report)) return { ...base, status: "n/a", detail: "QEMU's qtest cannot see which interrupts a vCPU received" };
  return { ...base, status: "pass", ...(known.length > 0 ? { detail: `implementation-defined differences: ${known.join(", ")}` } : {}) };
}

/**
 * The trace-expressible conformance cases on QEMU: each workload recorded on the model (where the model must keep
 * the rule), then replayed on QEMU's own IOMMU with edu doing the DMA. A case passes when QEMU answers as the model
 * did up to differences the specification leaves open, fails at the first other divergence (named with the
 * catalogue's classification), and is n/a when the vendor lacks the capability or QEMU cannot show the answer.
 */
export async function runQemuConformance(options: QemuConformanceOptions): Promise<QemuConformanceReport> {
  const plugin = options.plugins.find((p) => p.id === options.vendor);
  const machine = qemuMachine(options.vendor)!;
  const profile = qemuRecordProfile(options.vendor)!;
  const results: QemuCaseResult[] = [];
  let qemu = machine.binary;
  for (const workload of workloads.filter((w) => options.only === undefined || options.only.includes(w.id))) {
    const result = await runCase(workload);
    results.push(result);
    options.onResult?.(result);
  }
  return {
    vendor: options.vendor,
    qemu,
    results,
    passed: results.filter((r) => r.status === "pass").length,
    failed: results.filter((r) => r.status === "fail").length,
    notApplicable: results.filter((r) => r.status === "n/a").length,
    unexplained: results.reduce((n, r) => n + r.unexplained, 0),
  };

  async function runCase(workload: Workload): Promise<QemuCaseResult> {
    const none = { known: [], unexplained: 0, divergences: [] };
    if (plugin === undefined) return { id: workload.id, rule: workload.rule, status: "n/a", detail: `vendor ${options.vendor} is not installed`, ...none };
    const recording = recordWorkload({
      plugin,
      plugins: options.plugins,
      workload,
      mode: profile.mode,
      dma: profile.dma,
      seed: options.seed ?? 1,
      guest: profile.variant === undefined ? {} : { variant: profile.variant },
      ram: { base: profile.ramBase!, size: profile.ramBytes! },
    });
    if (recording.status === "n/a") return { id: workload.id, rule: workload.rule, status: "n/a", detail: recording.reason, ...none };
    if (recording.status === "failed") return { id: workload.id, rule: workload.rule, status: "fail", detail: `no reference trace: ${recording.reason}`, ...none, unexplained: 1 };
    const started = await QemuTarget.start(machine, recording.trace.header, options);
    if (!started.ok) return { id: workload.id, rule: workload.rule, status: "fail", detail: started.error, ...none, unexplained: 1 };
    qemu = started.target.name;
    try {
      const report = await replay(recording.trace, started.target, { known: qemuDifferencesFor(options.vendor) });
      return judge(workload, recording.trace, report);
    } finally {
      await started.target.close();
    }
  }
}
