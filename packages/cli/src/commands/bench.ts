import type { Command } from "commander";
import { vendorsOf, withJson, type CliContext } from "../cli/context.js";
import type { VendorPlugin } from "@viommu/core";
import { coreFigures } from "../bench/core-figures.js";
import { round, type Figure } from "../bench/measure.js";
import { table, type Io } from "../io.js";

/** `viommu bench`: core figures, then each vendor's. Measurements only: nothing here is a test. */
export function benchCommand(io: Io, plugins: readonly VendorPlugin[], json: boolean, only: readonly string[] | undefined): number {
  const figures: Figure[] = [];
  const wanted = (name: string): boolean => only === undefined || only.some((o) => name.startsWith(o));
  for (const figure of coreFigures) {
    if (!wanted(figure.name)) continue;
    if (io.progress) io.err(`bench: ${figure.name} …`);
    figures.push(figure.run());
  }
  for (const plugin of plugins) {
    for (const f of plugin.bench ?? []) {
      if (!wanted(f.name)) continue;
      if (io.progress) io.err(`bench: ${f.name} …`);
      const r = f.run();
      figures.push({ name: f.name, value: round(r.value), unit: f.unit, ...(r.baseline !== undefined ? { baseline: round(r.baseline) } : {}), ...(r.ratio !== undefined ? { ratio: round(r.ratio) } : {}), ...(r.note ? { note: r.note } : {}) });
    }
  }
  if (json) {
    io.out(JSON.stringify({ figures }));
    return 0;
  }
  for (const line of table(
    ["figure", "value", "unit", "baseline", "ratio"],
    figures.map((f) => [f.name, String(f.value), f.unit, f.baseline === undefined ? "" : String(f.baseline), f.ratio === undefined ? "" : String(f.ratio)]),
  ))
    io.out(line);
  return 0;
}

export function registerBench(program: Command, ctx: CliContext): void {
  withJson(program.command("bench").description("the benchmarks: each figure a ratio against plain code measured in the same run"))
    .option("--vendor <id>", "one vendor, or all (default: all)")
    .option("--only <names>", "comma-separated figure name prefixes")
    .action(async (opts: { json?: boolean; vendor?: string; only?: string }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const { selected } = await vendorsOf(ctx, io, json, opts.vendor ?? "all");
      ctx.exit(benchCommand(io, selected, json, opts.only?.split(",")));
    });
}
