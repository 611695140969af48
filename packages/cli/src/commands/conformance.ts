import { Option, type Command } from "commander";
import { allPlugins, vendorsOf, withJson, type CliContext } from "../cli/context.js";
import { UsageError } from "../cli/errors.js";
import { parseCount } from "../cli/numbers.js";
import { conformanceCases, conformanceReport, inShard, type CaseResult, type ConformanceReport } from "@viommu/conformance";
import type { VendorPlugin } from "@viommu/core";
import { table, type Io } from "../io.js";
import { parseShard, parseWorkers, runUnits, type Shard } from "./parallel.js";
import { runUnit, type CaseUnit } from "./shard-work.js";

export interface ConformanceRun {
  /** Worker threads (default 1: this thread). */
  readonly workers?: number;
  /** Only this slice of the (vendor, case) pairs. */
  readonly shard?: Shard;
  /** The command's --plugin directories, for the workers to load the same plugins. */
  readonly pluginDirs?: readonly string[];
}

/** Every (vendor, case) pair in the suite's order, numbered: the shard and the merge both follow this order. */
function caseUnits(plugins: readonly VendorPlugin[], seed: number, shard: Shard | undefined): CaseUnit[] {
  const all = plugins.flatMap((p) => conformanceCases.map((c) => ({ kind: "case" as const, vendor: p.id, caseId: c.id, seed })));
  return all.filter((_, i) => inShard(i, shard));
}

function reportsOf(plugins: readonly VendorPlugin[], seed: number, units: readonly CaseUnit[], results: readonly CaseResult[]): ConformanceReport[] {
  return plugins.map((p) =>
    conformanceReport(
      p.id,
      seed,
      results.filter((_, i) => units[i]!.vendor === p.id),
    ),
  );
}

function print(io: Io, reports: readonly ConformanceReport[], seed: number, json: boolean, shard: Shard | undefined): number {
  const failed = reports.some((r) => r.failed > 0);
  if (json) {
    io.out(JSON.stringify({ seed, ...(shard !== undefined ? { shard: `${shard.index}/${shard.count}` } : {}), vendors: reports }));
    return failed ? 1 : 0;
  }
  const cell = (report: ConformanceReport, id: string): string => {
    const r = report.results.find((x) => x.id === id);
    return r === undefined ? "-" : r.status === "fail" ? "FAIL" : r.status;
  };
  for (const line of table(["case", ...reports.map((r) => r.vendor)], conformanceCases.map((c) => [c.id, ...reports.map((r) => cell(r, c.id))]))) io.out(line);
  io.out("");
  if (shard !== undefined) io.out(`shard ${shard.index}/${shard.count}: the cases marked - ran in other shards`);
  for (const report of reports) {
    io.out(`${report.vendor}: ${report.passed} passed, ${report.failed} failed, ${report.notApplicable} n/a`);
    for (const r of report.results) if (r.status !== "pass") io.out(`  ${r.status === "fail" ? "FAIL" : "n/a "} ${r.id}: ${r.detail}`);
  }
  return failed ? 1 : 0;
}

/** `viommu conformance` in this thread: every case on every selected vendor, as a matrix. Exit 1 when any case fails. */
export function conformanceCommand(io: Io, plugins: readonly VendorPlugin[], installed: readonly VendorPlugin[], seed: number, json: boolean, shard?: Shard): number {
  const units = caseUnits(plugins, seed, shard);
  const results = units.map((unit) => {
    const r = runUnit(unit, installed) as CaseResult;
    if (io.progress) io.err(`  ${r.status.padEnd(4)} ${unit.vendor} ${r.id}`);
    return r;
  });
  return print(io, reportsOf(plugins, seed, units, results), seed, json, shard);
}

/**
 * `viommu conformance --workers N`: the same pairs spread over worker threads; results are merged in the
 * suite's order, so the report is the same whatever N is.
 */
export async function conformanceParallel(io: Io, plugins: readonly VendorPlugin[], installed: readonly VendorPlugin[], seed: number, json: boolean, run: ConformanceRun): Promise<number> {
  if ((run.workers ?? 1) <= 1) return conformanceCommand(io, plugins, installed, seed, json, run.shard);
  const units = caseUnits(plugins, seed, run.shard);
  const results = (await runUnits(units, {
    workers: run.workers ?? 1,
    pluginDirs: run.pluginDirs ?? [],
    installed,
    onDone: (i, r) => {
      if (io.progress) io.err(`  ${(r as CaseResult).status.padEnd(4)} ${units[i]!.vendor} ${units[i]!.caseId}`);
    },
  })) as CaseResult[];
  return print(io, reportsOf(plugins, seed, units, results), seed, json, run.shard);
}

export function registerConformance(program: Command, ctx: CliContext): void {
  withJson(program.command("conformance").description("the cross-vendor suite, as a matrix (a case a vendor lacks the capability for is n/a with the reason)"))
    .addOption(new Option("--vendor <id>", "one vendor, or all (default: every installed product vendor)"))
    .addOption(new Option("--seed <n>", "seed of the randomised cases").argParser((v) => parseCount(v, "--seed")).default(1))
    .addOption(new Option("--workers <n>", "worker threads to spread the cases over (the report is the same for any n)").argParser(parseWorkers).default(1))
    .addOption(new Option("--shard <i/n>", "run only the i-th of n slices of the (vendor, case) pairs, for a CI matrix or an indexed job").argParser(parseShard))
    .addOption(new Option("--target <target>", "the model, or QEMU's own emulated IOMMU (the cases a trace can express, edu as the DMA engine)").choices(["model", "qemu"]).default("model"))
    .option("--qemu <path>", "with --target qemu: the QEMU system emulator (default the vendor's on PATH)")
    .option("--case <id>", "with --target qemu: only this case (repeatable)", (v: string, all: string[] = []) => [...all, v])
    .option("--traces <dir>", "with --target qemu: write each failing case's trace there, for `viommu trace replay`")
    .action(async (opts: { json?: boolean; vendor?: string; seed: number; workers: number; shard?: Shard; target: "model" | "qemu"; qemu?: string; case?: string[]; traces?: string }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      if (opts.target === "qemu") {
        if (opts.workers !== 1 || opts.shard !== undefined) throw new UsageError("--workers and --shard run the model's suite; QEMU's runs one vendor after another");
        const { all } = await allPlugins(ctx, io, json);
        const { qemuConformance } = await import("@viommu/qemu");
        ctx.exit(
          await qemuConformance(io, {
            plugins: all,
            seed: opts.seed,
            json,
            ...(opts.vendor === undefined || opts.vendor === "all" ? {} : { vendors: [opts.vendor] }),
            ...(opts.qemu === undefined ? {} : { qemu: opts.qemu }),
            ...(opts.case === undefined ? {} : { only: opts.case }),
            ...(opts.traces === undefined ? {} : { tracesDir: opts.traces }),
          }),
        );
        return;
      }
      for (const [given, name] of [[opts.qemu, "--qemu"], [opts.case, "--case"], [opts.traces, "--traces"]] as const) if (given !== undefined) throw new UsageError(`${name} applies to --target qemu only`);
      const { selected, all } = await vendorsOf(ctx, io, json, opts.vendor);
      ctx.exit(await conformanceParallel(io, selected, all, opts.seed, json, { workers: opts.workers, shard: opts.shard, pluginDirs: ctx.pluginDirs }));
    });
}
