import { readFileSync } from "node:fs";
import type { VendorPlugin } from "@viommu/core";
import {
  answerJson,
  answerText,
  EXIT_FINDING,
  EXIT_OK,
  EXIT_USAGE,
  ModelTarget,
  opText,
  parseTrace,
  replay,
  replayClean,
  type CommandIo,
  type ReplayReport,
  type ReplayTarget,
} from "@viommu/trace";
import { qemuDifferencesFor } from "../catalogue/qemu-differences.js";
import { qemuMachine } from "../machines/qemu-machine.js";
import { QemuTarget } from "../qemu-target.js";

/** `viommu trace replay FILE --target model|qemu`. */
export interface TraceReplayArgs {
  /** The trace file (JSON lines, TRACE-FORMAT.md). */
  readonly file: string;
  /** `--target model|qemu` (default model). */
  readonly target?: "model" | "qemu";
  /** The installed plugins (the model target needs the trace's vendor). */
  readonly plugins: readonly VendorPlugin[];
  /** `--qemu PATH`: the system emulator (default the vendor's on PATH). */
  readonly qemu?: string;
  /** `--first`: stop at the first divergence the catalogue does not explain. */
  readonly stopAtFirst?: boolean;
  /** `--max N`: divergences listed in text output (default 20; JSON lists all). */
  readonly max?: number;
  readonly json?: boolean;
}

/**
 * Replays a trace on the model or on QEMU (started and stopped here) and reports every divergence with its
 * operation, the expected and the actual answer, the first one highlighted, and on QEMU the catalogued difference
 * that explains it. Exit 0 when nothing unexplained diverged and nothing failed, 1 otherwise, 2 for a usage error
 * (unreadable or malformed trace, a vendor neither installed nor emulated, QEMU missing).
 */
export async function traceReplay(io: CommandIo, args: TraceReplayArgs): Promise<number> {
  let text: string;
  try {
    text = readFileSync(args.file, "utf8");
  } catch (e) {
    io.err(`viommu trace replay: cannot read ${args.file}: ${e instanceof Error ? e.message : String(e)}`);
    return EXIT_USAGE;
  }
  const parsed = parseTrace(text);
  if (!parsed.ok) {
    io.err(`viommu trace replay: ${args.file}:${parsed.error.line}: ${parsed.error.message}`);
    return EXIT_USAGE;
  }
  const trace = parsed.trace;
  const vendor = trace.header.machine.iommus[0]?.vendor ?? "";
  const targetKind = args.target ?? "model";
  let target: ReplayTarget;
  let disposeModel: (() => string[]) | undefined;
  if (targetKind === "model") {
    const plugin = args.plugins.find((p) => p.id === vendor);
    if (plugin === undefined) {
      io.err(`viommu trace replay: the trace programs a ${vendor || "(no)"} IOMMU, which is not installed (installed: ${args.plugins.map((p) => p.id).join(", ") || "none"})`);
      return EXIT_USAGE;
    }
    const t = ModelTarget.create(plugin, args.plugins, trace.header);
    if (!t.ok) {
      io.err(`viommu trace replay: the model cannot be the trace's machine: ${t.error.message}`);
      return EXIT_USAGE;
    }
    target = t.value;
    disposeModel = () => t.value.dispose();
  } else {
    const machine = qemuMachine(vendor);
    if (machine === undefined) {
      io.err(`viommu trace replay: QEMU has no ${vendor || "(no)"} IOMMU here (vtd, amd-vi, smmuv3)`);
      return EXIT_USAGE;
    }
    const t = await QemuTarget.start(machine, trace.header, args.qemu === undefined ? {} : { binary: args.qemu });
    if (!t.ok) {
      io.err(`viommu trace replay: ${t.error}`);
      return EXIT_USAGE;
    }
    target = t.target;
  }
  let report: ReplayReport;
  try {
    report = await replay(trace, target, {
      known: targetKind === "qemu" ? qemuDifferencesFor(vendor) : [],
      stopAtFirst: args.stopAtFirst,
      onProgress: (done, total) => {
        if (io.progress) io.err(`  ${done}/${total} operations`);
      },
    });
  } finally {
    await target.close();
  }
  const leftovers = disposeModel?.() ?? [];
  const clean = replayClean(report) && leftovers.length === 0;
  if (args.json) {
    io.out(
      JSON.stringify({
        file: args.file,
        target: report.target,
        clean,
        ops: report.ops,
        executed: report.executed,
        compared: report.compared,
        divergences: report.divergences.map((d) => ({ line: d.index + 2, op: JSON.parse(opText(d.op)) as unknown, expected: answerJson(d.expected), actual: answerJson(d.actual), ...(d.known === undefined ? {} : { known: d.known }) })),
        unobservable: report.unobservable,
        unsupported: report.unsupported.map((u) => ({ line: u.index + 2, reason: u.reason })),
        failures: report.failures.map((f) => ({ line: f.index + 2, reason: f.reason })),
        ...(report.stoppedAt === undefined ? {} : { stoppedAtLine: report.stoppedAt + 2 }),
        ...(leftovers.length > 0 ? { leftovers } : {}),
      }),
    );
    return clean ? EXIT_OK : EXIT_FINDING;
  }
  const unexplained = report.divergences.filter((d) => d.known === undefined);
  io.out(`${args.file} on ${report.target}: ${report.executed}/${report.ops} operations, ${report.compared} answers compared, ${report.divergences.length} divergences (${unexplained.length} unexplained)`);
  const first = unexplained[0] ?? report.divergences[0];
  if (first !== undefined) {
    io.out(`FIRST line ${first.index + 2}: ${opText(first.op)}`);
    io.out(`  expected ${answerText(first.expected)}`);
    io.out(`  actual   ${answerText(first.actual)}`);
    if (first.known !== undefined) io.out(`  known: ${first.known.id} (${first.known.classification}): ${first.known.summary}`);
  }
  const max = args.max ?? 20;
  for (const d of report.divergences.slice(0, max)) {
    if (d === first) continue;
    io.out(`line ${d.index + 2}: ${opText(d.op)} expected ${answerText(d.expected)} actual ${answerText(d.actual)}${d.known === undefined ? " UNEXPLAINED" : ` [${d.known.id}]`}`);
  }
  if (report.divergences.length > max) io.out(`… ${report.divergences.length - max} more`);
  for (const u of report.unobservable) io.out(`unobservable: ${u.count} operations (first line ${u.first + 2}): ${u.reason}`);
  for (const u of report.unsupported) io.out(`UNSUPPORTED line ${u.index + 2}: ${u.reason}`);
  for (const f of report.failures) io.out(`FAILED line ${f.index + 2}: ${f.reason}`);
  if (report.stoppedAt !== undefined) io.out(`stopped at line ${report.stoppedAt + 2}`);
  for (const l of leftovers) io.out(`LEAK after teardown: ${l}`);
  return clean ? EXIT_OK : EXIT_FINDING;
}
