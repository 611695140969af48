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
