import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { vendorsOf, withJson, type CliContext } from "../cli/context.js";
import { UsageError } from "../cli/errors.js";
import type { VendorPlugin } from "@viommu/core";
import { compareRows, readSavedRun } from "../bench/compare.js";
import { coreFigures } from "../bench/figures/index.js";
import { BenchRefused, isOneShot, measure, round3, type AnyFigureSpec, type FigureResult } from "../bench/harness.js";
import { table, type Io } from "../io.js";

export interface BenchArgs {
  readonly only?: readonly string[];
  readonly quick: boolean;
  /** A saved `--json` run to compare against. */
  readonly compare?: string;
  /** The core figures to run (tests pass their own). */
  readonly figures?: readonly AnyFigureSpec[];
}

function names(spec: AnyFigureSpec): readonly string[] {
  return isOneShot(spec) ? spec.yields : [spec.name];
}

/**
 * `viommu bench`: core figures, then each vendor's. Each core figure verifies its own work every round and is
 * refused (not printed; exit 1) when that work is wrong. Measurements only: nothing here is a test.
 */
export async function benchCommand(io: Io, plugins: readonly VendorPlugin[], json: boolean, args: BenchArgs): Promise<number> {
  const saved = args.compare === undefined ? undefined : readSavedRun(readFileSync(args.compare, "utf8"), args.compare);
  const figures: FigureResult[] = [];
  const refused: string[] = [];
  const wanted = (name: string): boolean => args.only === undefined || args.only.some((o) => name.startsWith(o));
  for (const spec of args.figures ?? coreFigures) {
    if (!names(spec).some(wanted)) continue;
    if (io.progress) io.err(`bench: ${spec.name} …`);
    try {
      if (isOneShot(spec)) figures.push(...(await spec.oneShot({ quick: args.quick })).filter((f) => wanted(f.name)));
      else figures.push(await measure(spec, { quick: args.quick }));
    } catch (e) {
      const message = e instanceof BenchRefused ? e.message : `${spec.name}: refused: ${e instanceof Error ? e.message : String(e)}`;
      refused.push(message);
      io.err(`bench: ${message}`);
    }
  }
  for (const plugin of plugins) {
    for (const f of plugin.bench ?? []) {
      if (!wanted(f.name)) continue;
      if (io.progress) io.err(`bench: ${f.name} …`);
      try {
        if ("prepare" in f) {
          // A harness figure: measured interleaved and verified every round, like the core's.
          const result = await measure(f, { quick: args.quick });
          figures.push({ ...result, note: `${plugin.id}${result.note ? `: ${result.note}` : ""}` });
          continue;
        }
        const r = f.run();
        // A vendor figure checks its own work inside run() (it throws when the work is wrong).
        figures.push({
          name: f.name,
          value: round3(r.value),
          unit: f.unit,
          ...(r.baseline !== undefined ? { baseline: round3(r.baseline) } : {}),
          ...(r.ratio !== undefined ? { ratio: round3(r.ratio) } : {}),
          verified: true,
          note: `${plugin.id}${r.note ? `: ${r.note}` : ""}`,
        });
      } catch (e) {
        const message = `${f.name}: refused: ${e instanceof Error ? e.message : String(e)}`;
        refused.push(message);
        io.err(`bench: ${message}`);
      }
    }
  }
  if (json) {
    io.out(JSON.stringify({ quick: args.quick, figures, refused }));
    return refused.length > 0 ? 1 : 0;
  }
  const spread = (f: FigureResult): string => (f.spread === undefined ? "" : `${f.spread[0]}–${f.spread[1]}`);
  for (const line of table(
    ["figure", "value", "unit", "baseline", "ratio", "spread", "best", "goal"],
    figures.map((f) => [f.name, String(f.value), f.unit, f.baseline === undefined ? "" : String(f.baseline), f.ratio === undefined ? "" : String(f.ratio), spread(f), f.best === undefined ? "" : String(f.best), f.goal ?? ""]),
  ))
    io.out(line);
  const notes = figures.filter((f) => f.note !== undefined);
  if (notes.length > 0) io.out("");
  for (const f of notes) io.out(`${f.name}: ${f.note}`);
  io.out("");
  io.out(`ratio: median over rounds of the model's rate over the baseline's, measured alternately (A B A B) in this process; spread: lowest–highest round; best: the model's best round over the baseline's best (other processes only slow rounds down)${args.quick ? "; --quick: a smoke run, not a measurement" : ""}`);
  if (saved !== undefined) {
    io.out("");
    io.out(`against ${args.compare}:`);
    for (const line of table(["figure", "saved", "now", "change", "saved ratio", "ratio", "change"], compareRows(figures, saved))) io.out(line);
  }
  if (refused.length > 0) {
    io.out("");
    io.out(`${refused.length} figure(s) refused: their work did not check out`);
  }
  return refused.length > 0 ? 1 : 0;
}

export function registerBench(program: Command, ctx: CliContext): void {
  withJson(program.command("bench").description("the benchmarks: each figure verified, against plain code measured alternately in the same run"))
    .option("--vendor <id>", "one vendor, or all (default: all)")
    .option("--only <names>", "comma-separated figure name prefixes")
    .option("--quick", "a smoke run for CI: few iterations, every figure still verified")
    .option("--compare <file>", "print the change against a saved --json run")
    .action(async (opts: { json?: boolean; vendor?: string; only?: string; quick?: boolean; compare?: string }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      if (opts.compare !== undefined) {
        try {
          readSavedRun(readFileSync(opts.compare, "utf8"), opts.compare);
        } catch (e) {
          throw new UsageError(`--compare: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
      const { selected } = await vendorsOf(ctx, io, json, opts.vendor ?? "all");
      ctx.exit(await benchCommand(io, selected, json, { only: opts.only?.split(","), quick: opts.quick === true, compare: opts.compare }));
    });
}
