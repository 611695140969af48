import { Option, type Command } from "commander";
import { vendorsOf, withJson, type CliContext } from "../cli/context.js";
import { parseCount } from "../cli/numbers.js";
import type { VendorPlugin } from "@viommu/core";
import { runDemo, type DemoReport } from "../demo.js";
import type { Io } from "../io.js";

/** `viommu demo`: the main job on every selected vendor, a report each. Exit 1 when a step failed. */
export function demoCommand(io: Io, plugins: readonly VendorPlugin[], installed: readonly VendorPlugin[], seed: number, json: boolean): number {
  const reports: DemoReport[] = [];
  for (const plugin of plugins) {
    if (io.progress) io.err(`demo: ${plugin.id} …`);
    reports.push(runDemo(plugin, installed, seed));
  }
  if (json) {
    io.out(JSON.stringify({ seed, vendors: reports }));
    return reports.every((r) => r.ok) ? 0 : 1;
  }
  for (const r of reports) {
    io.out(`== ${r.vendor}: ${r.name} — ${r.ok ? "ok" : "FAILED"}`);
    for (const s of r.steps) io.out(`  ${s.ok ? "ok  " : "FAIL"} ${s.step.padEnd(18)} ${s.detail}`);
    io.out(`       VMM interventions: ${r.vmmInterventions}`);
  }
  return reports.every((r) => r.ok) ? 0 : 1;
}

export function registerDemo(program: Command, ctx: CliContext): void {
  withJson(program.command("demo").description("the main job on every selected vendor: a VM with a device passed through, DMA, a blocked DMA, an invalidation, a remapped interrupt"))
    .addOption(new Option("--vendor <id>", "one vendor, or all (default: every installed product vendor)"))
    .addOption(new Option("--seed <n>", "seed of every random choice").argParser((v) => parseCount(v, "--seed")).default(1))
    .action(async (opts: { json?: boolean; vendor?: string; seed: number }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const { selected, all } = await vendorsOf(ctx, io, json, opts.vendor);
      ctx.exit(demoCommand(io, selected, all, opts.seed, json));
    });
}
