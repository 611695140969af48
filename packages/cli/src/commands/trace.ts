import { Option, type Command } from "commander";
import { allPlugins, withJson, type CliContext } from "../cli/context.js";
import { parseCount } from "../cli/numbers.js";
import { UsageError } from "../cli/errors.js";

const MODES = ["nested", "shadow", "ir-only"] as const;

/**
 * `viommu trace record` and `viommu trace replay`: the JSON-lines trace of guest-visible operations
 * (packages/trace/TRACE-FORMAT.md), recorded on the model with a reference driver, replayed on the model or on
 * QEMU. The trace and QEMU packages are loaded when the command runs, so the rest of the tool starts without them.
 */
export function registerTrace(program: Command, ctx: CliContext): void {
  const trace = program.command("trace").description("record a reference driver's guest-visible operations as a trace; replay a trace on the model or on QEMU");
  withJson(trace.command("record").description("run a workload with a vendor's reference driver on the model and write the trace, the model's answers as expectations"))
    .requiredOption("--vendor <id>", "the plugin whose reference driver and model are recorded")
    .addOption(new Option("--workload <id>", "what the driver does (bring-up, mapped-dma-lands, unmapped-dma-blocked, …)").default("bring-up"))
    .option("--out <file>", "where the trace goes (default stdout; the summary then goes to stderr)")
    .addOption(new Option("--mode <mode>", "translation mode").choices(MODES))
    .option("--variant <name>", "the driver's table variant (legacy, scalable, 2level, v2 …)")
    .addOption(new Option("--seed <n>", "the model's seed and the workload's data").argParser((v) => parseCount(v, "--seed")).default(1))
    .option("--ram-base <addr>", "guest RAM base", (v) => parseCount(v, "--ram-base"))
    .option("--ram-size <bytes>", "guest RAM size", (v) => parseCount(v, "--ram-size"))
    .addOption(new Option("--dma <kind>", "whose DMA the devices are: a passed-through device's or the emulated IOMMU's own").choices(["passthrough", "emulated"]))
    .addOption(new Option("--for <target>", "record with the defaults the target replays (QEMU's modes, table formats and RAM layout)").choices(["model", "qemu"]))
    .action(async (opts: { json?: boolean; vendor: string; workload: string; out?: string; mode?: (typeof MODES)[number]; variant?: string; seed: number; ramBase?: number; ramSize?: number; dma?: "passthrough" | "emulated"; for?: "model" | "qemu" }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const { all } = await allPlugins(ctx, io, json);
      const { traceRecord } = await import("@viommu/trace");
      const profile = opts.for === "qemu" ? (await import("@viommu/qemu")).qemuRecordProfile(opts.vendor) : undefined;
      if (opts.for === "qemu" && profile === undefined) throw new UsageError(`--for qemu: QEMU has no ${opts.vendor} IOMMU here`);
      ctx.exit(
        traceRecord(io, {
          vendor: opts.vendor,
          plugins: all,
          workload: opts.workload,
          seed: opts.seed,
          json,
          ...(opts.out === undefined ? {} : { out: opts.out }),
          ...(opts.mode === undefined ? {} : { mode: opts.mode }),
          ...(opts.variant === undefined ? {} : { variant: opts.variant }),
          ...(opts.ramBase === undefined ? {} : { ramBase: opts.ramBase }),
          ...(opts.ramSize === undefined ? {} : { ramBytes: opts.ramSize }),
          ...(opts.dma === undefined ? {} : { dma: opts.dma }),
          ...(profile === undefined ? {} : { profile }),
        }),
      );
    });
  withJson(trace.command("replay").description("replay a trace on the model or on QEMU (started and stopped here) and report every divergence, the first highlighted").argument("<file>", "the trace (JSON lines)"))
    .addOption(new Option("--target <target>", "what runs the trace").choices(["model", "qemu"]).default("model"))
    .option("--qemu <path>", "the QEMU system emulator (default the vendor's on PATH)")
    .option("--first", "stop at the first divergence the catalogue of QEMU differences does not explain")
    .addOption(new Option("--max <n>", "divergences listed in text output").argParser((v) => parseCount(v, "--max")).default(20))
    .action(async (file: string, opts: { json?: boolean; target: "model" | "qemu"; qemu?: string; first?: boolean; max: number }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const { all } = await allPlugins(ctx, io, json);
      const { traceReplay } = await import("@viommu/qemu");
      ctx.exit(await traceReplay(io, { file: file === "-" ? "/dev/stdin" : file, target: opts.target, plugins: all, stopAtFirst: opts.first === true, max: opts.max, json, ...(opts.qemu === undefined ? {} : { qemu: opts.qemu }) }));
    });
  for (const c of trace.commands) c.option("--plugin <dir>", "a plugin package directory to load besides the installed ones (repeatable; selected by default)", (v: string, all: string[] = []) => [...all, v]);
}
