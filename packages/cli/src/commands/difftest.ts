import { Option, type Command } from "commander";
import { allPlugins, withJson, type CliContext } from "../cli/context.js";
import { parseCount } from "../cli/numbers.js";
import { parseShard, parseWorkers, runUnits, type Shard } from "./parallel.js";
import type { DifftestUnit } from "./shard-work.js";
import type { DifftestSliceResult } from "@viommu/qemu";

/**
 * `viommu difftest`: programs built from recorded driver traces and structured mutations, run on the model and
 * on QEMU, outputs compared; a divergence outside the catalogue of known QEMU differences is shrunk and written as
 * a trace `viommu trace replay` reproduces.
 */
export function registerDifftest(program: Command, ctx: CliContext): void {
  withJson(program.command("difftest").description("differential fuzzing of the model against QEMU's own emulated IOMMU (deterministic per seed)"))
    .requiredOption("--vendor <id>", "vtd, amd-vi or smmuv3")
    .addOption(new Option("--target <target>", "what the model is compared with").choices(["qemu"]).default("qemu"))
    .addOption(new Option("--seed <n>", "the run is a function of it").argParser((v) => parseCount(v, "--seed")).default(1))
    .addOption(new Option("--cases <n>", "programs to run").argParser((v) => parseCount(v, "--cases")).default(100))
    .option("--qemu <path>", "the QEMU system emulator (default the vendor's on PATH)")
    .option("--out <dir>", "where each finding's minimal trace is written", ".")
    .option("--no-shrink", "write findings whole")
    .addOption(new Option("--workers <n>", "worker threads, each with its own QEMU, to spread the cases over (the report is the same for any n)").argParser(parseWorkers).default(1))
    .addOption(new Option("--shard <i/n>", "run only the cases whose index is i - 1 modulo n, for a CI matrix or an indexed job (merge the --json reports: counts add up, findings by index)").argParser(parseShard))
    .action(async (opts: { json?: boolean; vendor: string; target: "qemu"; seed: number; cases: number; qemu?: string; out: string; shrink: boolean; workers: number; shard?: Shard }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const { all } = await allPlugins(ctx, io, json);
      const { difftest } = await import("@viommu/qemu");
      const args = { vendor: opts.vendor, target: opts.target, plugins: all, seed: opts.seed, cases: opts.cases, outDir: opts.out, shrink: opts.shrink, json, ...(opts.qemu === undefined ? {} : { qemu: opts.qemu }), ...(opts.shard === undefined ? {} : { shard: opts.shard }) };
      ctx.exit(
        await difftest(io, args, {
          workers: opts.workers,
          run: async (shards) => {
            const units: DifftestUnit[] = shards.map((shard) => ({ kind: "difftest", vendor: opts.vendor, seed: opts.seed, cases: opts.cases, shard, outDir: opts.out, shrink: opts.shrink, ...(opts.qemu === undefined ? {} : { qemu: opts.qemu }) }));
            const results = await runUnits(units, {
              workers: opts.workers,
              pluginDirs: ctx.pluginDirs,
              installed: all,
              onDone: (i) => {
                if (io.progress) io.err(`  slice ${shards[i]!.index}/${shards[i]!.count} done`);
              },
            });
            return results as DifftestSliceResult[];
          },
        }),
      );
    });
}
