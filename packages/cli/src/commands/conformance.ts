import { Option, type Command } from "commander";
import { vendorsOf, withJson, type CliContext } from "../cli/context.js";
import { parseCount } from "../cli/numbers.js";
import { conformanceCases, runConformance, type ConformanceReport } from "@viommu/conformance";
import type { VendorPlugin } from "@viommu/core";
import { table, type Io } from "../io.js";

/** `viommu conformance`: every case on every selected vendor, as a matrix. Exit 1 when any case fails. */
export function conformanceCommand(io: Io, plugins: readonly VendorPlugin[], installed: readonly VendorPlugin[], seed: number, json: boolean): number {
  const reports: ConformanceReport[] = [];
  for (const plugin of plugins) {
    if (io.progress) io.err(`conformance: ${plugin.id} …`);
    reports.push(
      runConformance(plugin, {
        seed,
        plugins: installed,
        onResult: (r) => {
          if (io.progress) io.err(`  ${r.status.padEnd(4)} ${r.id}`);
        },
      }),
    );
  }
  const failed = reports.some((r) => r.failed > 0);
  if (json) {
    io.out(JSON.stringify({ seed, vendors: reports }));
    return failed ? 1 : 0;
  }
  const cell = (report: ConformanceReport, id: string): string => {
    const r = report.results.find((x) => x.id === id);
    return r === undefined ? "-" : r.status === "fail" ? "FAIL" : r.status;
  };
  for (const line of table(["case", ...reports.map((r) => r.vendor)], conformanceCases.map((c) => [c.id, ...reports.map((r) => cell(r, c.id))]))) io.out(line);
  io.out("");
  for (const report of reports) {
    io.out(`${report.vendor}: ${report.passed} passed, ${report.failed} failed, ${report.notApplicable} n/a`);
    for (const r of report.results) if (r.status !== "pass") io.out(`  ${r.status === "fail" ? "FAIL" : "n/a "} ${r.id}: ${r.detail}`);
  }
  return failed ? 1 : 0;
}

export function registerConformance(program: Command, ctx: CliContext): void {
  withJson(program.command("conformance").description("the cross-vendor suite, as a matrix (a case a vendor lacks the capability for is n/a with the reason)"))
    .addOption(new Option("--vendor <id>", "one vendor, or all (default: every installed product vendor)"))
    .addOption(new Option("--seed <n>", "seed of the randomised cases").argParser((v) => parseCount(v, "--seed")).default(1))
    .action(async (opts: { json?: boolean; vendor?: string; seed: number }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const { selected, all } = await vendorsOf(ctx, io, json, opts.vendor);
      ctx.exit(conformanceCommand(io, selected, all, opts.seed, json));
    });
}
