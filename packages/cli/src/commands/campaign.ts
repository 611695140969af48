import { Option, type Command } from "commander";
import { vendorsOf, withJson, type CliContext } from "../cli/context.js";
import { UsageError } from "../cli/errors.js";
import { parseCount } from "../cli/numbers.js";
import { inShard, type CampaignReport } from "@viommu/conformance";
import type { TranslationMode, VendorPlugin } from "@viommu/core";
import type { Io } from "../io.js";
import { parseShard, parseWorkers, runUnits, type Shard } from "./parallel.js";
import type { CampaignUnit } from "./shard-work.js";

export interface CampaignArgs {
  readonly steps: number;
  /** The first seed; `seeds` consecutive seeds run (default 1). */
  readonly seed: number;
  readonly seeds?: number;
  readonly modes: readonly TranslationMode[];
  readonly workers?: number;
  readonly shard?: Shard;
  readonly pluginDirs?: readonly string[];
}

/** Every (vendor, mode, seed) run in a fixed order, numbered: the shard and the merge follow it. */
function campaignUnits(plugins: readonly VendorPlugin[], args: CampaignArgs): CampaignUnit[] {
  const units: CampaignUnit[] = [];
  for (const plugin of plugins) {
    for (const mode of args.modes) {
      if (mode === "shadow" && !plugin.capabilities.shadow) continue;
      if (mode === "ir-only" && !plugin.capabilities.irOnly) continue;
      for (let s = 0; s < (args.seeds ?? 1); s++) units.push({ kind: "campaign", vendor: plugin.id, mode, seed: args.seed + s, steps: args.steps });
    }
  }
  return units.filter((_, i) => inShard(i, args.shard));
}

/**
 * `viommu campaign`: the two-VM hostile campaign on each selected vendor, mode and seed, as long as asked,
 * over `workers` threads; runs are reported in their fixed order whatever the number of workers (only `ms`,
 * the wall time, differs between runs). Exit 1 when any run found a failure (the report names the seed and
 * step to replay).
 */
export async function campaignCommand(io: Io, plugins: readonly VendorPlugin[], installed: readonly VendorPlugin[], args: CampaignArgs, json: boolean): Promise<number> {
  const units = campaignUnits(plugins, args);
  const reports = (await runUnits(units, {
    workers: args.workers ?? 1,
    pluginDirs: args.pluginDirs ?? [],
    installed,
    onDone: (i) => {
      if (io.progress) io.err(`campaign: ${units[i]!.vendor} ${units[i]!.mode} seed ${units[i]!.seed} done`);
    },
  })) as CampaignReport[];
  const failed = reports.some((r) => r.failure !== undefined);
  if (json) {
    io.out(JSON.stringify({ seed: args.seed, seeds: args.seeds ?? 1, ...(args.shard !== undefined ? { shard: `${args.shard.index}/${args.shard.count}` } : {}), runs: reports }));
    return failed ? 1 : 0;
  }
  if (args.shard !== undefined) io.out(`shard ${args.shard.index}/${args.shard.count}: ${units.length} run(s)`);
  for (const r of reports) {
    const kinds = Object.entries(r.byKind)
      .map(([k, n]) => `${k} ${n}`)
      .join(", ");
    io.out(`${r.vendor} ${r.mode} seed ${r.seed}: ${r.steps} steps in ${(r.ms / 1000).toFixed(1)} s over ${r.epochs} testbeds; restores ${r.restoresRefused} refused, ${r.restoresAccepted} accepted; ${kinds}`);
    if (r.failure !== undefined) io.out(`  FAIL at step ${r.failure.step} (${r.failure.kind}), seed ${r.seed}: ${r.failure.detail.split("\n")[0]}`);
  }
  return failed ? 1 : 0;
}

const MODES = ["nested", "shadow", "ir-only"] as const;

export function registerCampaign(program: Command, ctx: CliContext): void {
  withJson(program.command("campaign").description("the two-VM hostile campaign: VM A's guest does anything, VM B must not notice"))
    .option("--vendor <id>", "one vendor, or all (default: all)")
    .addOption(new Option("--steps <n>", "hostile steps per vendor, mode and seed").argParser((v) => parseCount(v, "--steps")).default(100_000))
    .addOption(new Option("--seed <n>", "seed of the campaign (the first, with --seeds)").argParser((v) => parseCount(v, "--seed")).default(1))
    .addOption(new Option("--seeds <n>", "consecutive seeds to run from --seed (each a run of --steps)").argParser((v) => parseCount(v, "--seeds")).default(1))
    .addOption(new Option("--mode <modes>", "comma-separated translation modes").default("nested,shadow"))
    .addOption(new Option("--workers <n>", "worker threads to spread the runs over (the report is the same for any n)").argParser(parseWorkers).default(1))
    .addOption(new Option("--shard <i/n>", "run only the i-th of n slices of the (vendor, mode, seed) runs, for a CI matrix or an indexed job").argParser(parseShard))
    .action(async (opts: { json?: boolean; vendor?: string; steps: number; seed: number; seeds: number; mode: string; workers: number; shard?: Shard }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const modes = opts.mode.split(",");
      const bad = modes.find((m) => !(MODES as readonly string[]).includes(m));
      if (bad !== undefined) throw new UsageError(`--mode: "${bad}" is not one of ${MODES.join(", ")}`);
      if (opts.steps === 0) throw new UsageError("--steps: must be at least 1");
      if (opts.seeds === 0) throw new UsageError("--seeds: must be at least 1");
      const { selected, all } = await vendorsOf(ctx, io, json, opts.vendor ?? "all");
      ctx.exit(await campaignCommand(io, selected, all, { steps: opts.steps, seed: opts.seed, seeds: opts.seeds, modes: modes as (typeof MODES)[number][], workers: opts.workers, shard: opts.shard, pluginDirs: ctx.pluginDirs }, json));
    });
}
