import { Option, type Command } from "commander";
import { vendorsOf, withJson, type CliContext } from "../cli/context.js";
import { parseCount } from "../cli/numbers.js";
import { devicePropertyProblem, type VendorPlugin } from "@viommu/core";
import { UsageError } from "../cli/errors.js";
import { runDemo, type DemoReport } from "../demo.js";
import type { Io } from "../io.js";

/** `viommu demo`: the main job on every selected vendor, a report each. Exit 1 when a step failed. */
export function demoCommand(io: Io, plugins: readonly VendorPlugin[], installed: readonly VendorPlugin[], seed: number, json: boolean, properties?: Readonly<Record<string, string>>): number {
  const reports: DemoReport[] = [];
  for (const plugin of plugins) {
    if (io.progress) io.err(`demo: ${plugin.id} …`);
    reports.push(runDemo(plugin, installed, { seed, properties }));
  }
  if (json) {
    io.out(JSON.stringify({ seed, vendors: reports }));
    return reports.every((r) => r.ok) ? 0 : 1;
  }
  for (const r of reports) {
    io.out(`== ${r.vendor}: ${r.name} — ${r.ok ? "ok" : "FAILED"}`);
    for (const s of r.steps) io.out(`  ${s.notApplicable ? "n/a " : s.ok ? "ok  " : "FAIL"} ${s.step.padEnd(18)} ${s.detail}`);
    io.out(`       VMM interventions: ${r.vmmInterventions}`);
  }
  return reports.every((r) => r.ok) ? 0 : 1;
}

export function registerDemo(program: Command, ctx: CliContext): void {
  withJson(program.command("demo").description("the main job on every selected vendor: a VM with a device passed through, DMA, a blocked DMA, an invalidation, a remapped interrupt"))
    .addOption(new Option("--vendor <id>", "one vendor, or all (default: every installed product vendor)"))
    .addOption(new Option("--seed <n>", "seed of every random choice").argParser((v) => parseCount(v, "--seed")).default(1))
    .option("--property <name=value,...>", "emulated-device properties by QEMU's names, as -device takes them (repeatable; viommu plugins lists each vendor's)", (v: string, all: string[] = []) => [...all, v])
    .action(async (opts: { json?: boolean; vendor?: string; seed: number; property?: string[] }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const { selected, all } = await vendorsOf(ctx, io, json, opts.vendor);
      const properties = parseProperties(opts.property ?? []);
      if (properties !== undefined && selected.length !== 1) throw new UsageError("--property: name one --vendor (properties are a device's)");
      if (properties !== undefined) {
        const problem = devicePropertyProblem(selected[0]!.properties, properties);
        if (problem !== undefined) throw new UsageError(`--property: ${selected[0]!.id}: ${problem}`);
      }
      ctx.exit(demoCommand(io, selected, all, opts.seed, json, properties));
    });
}

/** `a=1,b=on` (and repeated options) as QEMU's -device takes them; undefined when none were given. */
export function parseProperties(specs: readonly string[]): Record<string, string> | undefined {
  if (specs.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const item of specs.flatMap((s) => s.split(","))) {
    const at = item.indexOf("=");
    if (at <= 0) throw new UsageError(`--property ${item}: expected NAME=VALUE`);
    out[item.slice(0, at).trim()] = item.slice(at + 1).trim();
  }
  return out;
}
