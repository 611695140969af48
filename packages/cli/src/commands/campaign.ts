import { Option, type Command } from "commander";
import { vendorsOf, withJson, type CliContext } from "../cli/context.js";
import { UsageError } from "../cli/errors.js";
import { parseCount } from "../cli/numbers.js";
import { runHostileCampaign, type CampaignReport } from "@viommu/conformance";
import type { TranslationMode, VendorPlugin } from "@viommu/core";
import type { Io } from "../io.js";

export interface CampaignArgs {
  readonly steps: number;
  readonly seed: number;
  readonly modes: readonly TranslationMode[];
}

/**
 * `viommu campaign`: the two-VM hostile campaign on each selected vendor and mode, as long as asked. Exit 1
 * when any run found a failure (the report names the seed and step to replay).
 */
export function campaignCommand(io: Io, plugins: readonly VendorPlugin[], installed: readonly VendorPlugin[], args: CampaignArgs, json: boolean): number {
  const reports: CampaignReport[] = [];
  for (const plugin of plugins) {
    for (const mode of args.modes) {
      if (mode === "shadow" && !plugin.capabilities.shadow) continue;
      if (mode === "ir-only" && !plugin.capabilities.irOnly) continue;
      if (io.progress) io.err(`campaign: ${plugin.id} ${mode} …`);
      const report = runHostileCampaign({
        plugin,
        plugins: installed.filter((p) => p !== plugin),
        seed: args.seed,
        steps: args.steps,
        mode,
        onProgress: (done) => {
          if (io.progress) io.err(`  ${done} steps`);
        },
      });
      reports.push(report);
    }
  }
  const failed = reports.some((r) => r.failure !== undefined);
  if (json) {
    io.out(JSON.stringify({ seed: args.seed, runs: reports }));
    return failed ? 1 : 0;
  }
  for (const r of reports) {
    const kinds = Object.entries(r.byKind)
      .map(([k, n]) => `${k} ${n}`)
      .join(", ");
    io.out(`${r.vendor} ${r.mode}: ${r.steps} steps in ${(r.ms / 1000).toFixed(1)} s over ${r.epochs} testbeds; restores ${r.restoresRefused} refused, ${r.restoresAccepted} accepted; ${kinds}`);
    if (r.failure !== undefined) io.out(`  FAIL at step ${r.failure.step} (${r.failure.kind}), seed ${r.seed}: ${r.failure.detail.split("\n")[0]}`);
  }
  return failed ? 1 : 0;
}

const MODES = ["nested", "shadow", "ir-only"] as const;

export function registerCampaign(program: Command, ctx: CliContext): void {
  withJson(program.command("campaign").description("the two-VM hostile campaign: VM A's guest does anything, VM B must not notice"))
    .option("--vendor <id>", "one vendor, or all (default: all)")
    .addOption(new Option("--steps <n>", "hostile steps per vendor and mode").argParser((v) => parseCount(v, "--steps")).default(100_000))
    .addOption(new Option("--seed <n>", "seed of the campaign").argParser((v) => parseCount(v, "--seed")).default(1))
    .addOption(new Option("--mode <modes>", "comma-separated translation modes").default("nested,shadow"))
    .action(async (opts: { json?: boolean; vendor?: string; steps: number; seed: number; mode: string }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const modes = opts.mode.split(",");
      const bad = modes.find((m) => !(MODES as readonly string[]).includes(m));
      if (bad !== undefined) throw new UsageError(`--mode: "${bad}" is not one of ${MODES.join(", ")}`);
      if (opts.steps === 0) throw new UsageError("--steps: must be at least 1");
      const { selected, all } = await vendorsOf(ctx, io, json, opts.vendor ?? "all");
      ctx.exit(campaignCommand(io, selected, all, { steps: opts.steps, seed: opts.seed, modes: modes as (typeof MODES)[number][] }, json));
    });
}
