import { Option, type Command } from "commander";
import { allPlugins, withJson, type CliContext } from "../cli/context.js";
import { parseCount } from "../cli/numbers.js";

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
    .action(async (opts: { json?: boolean; vendor: string; target: "qemu"; seed: number; cases: number; qemu?: string; out: string; shrink: boolean }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const { all } = await allPlugins(ctx, io, json);
      const { difftest } = await import("@viommu/qemu");
      ctx.exit(await difftest(io, { vendor: opts.vendor, target: opts.target, plugins: all, seed: opts.seed, cases: opts.cases, outDir: opts.out, shrink: opts.shrink, json, ...(opts.qemu === undefined ? {} : { qemu: opts.qemu }) }));
    });
}
