import type { Command } from "commander";
import { withJson, type CliContext } from "../cli/context.js";
import type { Capabilities, LoadedPlugin, PluginLoadFailure } from "@viommu/core";
import { table, type Io } from "../io.js";

const FLAGS: readonly (keyof Capabilities)[] = ["nested", "shadow", "pasid", "interruptRemapping", "irOnly", "vqueue", "confidentialShared", "migration", "commandQueue", "eventLog", "directEventInterrupts", "acpi"];

/** `viommu plugins`: what is installed and what each plugin supports. */
export function pluginsCommand(io: Io, plugins: readonly LoadedPlugin[], failures: readonly PluginLoadFailure[], json: boolean): number {
  const rows = plugins.map((p) => ({
    id: p.plugin.id,
    name: p.plugin.displayName,
    package: p.packageName,
    version: p.version,
    kind: p.manifest.kind ?? "vendor",
    extends: p.plugin.extends,
    capabilities: Object.fromEntries(FLAGS.map((f) => [f, p.plugin.capabilities[f]])),
    pageShifts: p.plugin.capabilities.pageShifts,
    structures: p.plugin.structures.map((s) => s.id),
    walk: p.plugin.walk !== undefined,
    acpi: p.plugin.acpi?.signature,
    types: p.plugin.types,
  }));
  if (json) {
    io.out(JSON.stringify({ plugins: rows, failures }));
    return 0;
  }
  if (rows.length === 0) io.out("no viommu plugins installed");
  for (const line of table(
    ["vendor", "package", "kind", "supports"],
    rows.map((r) => [r.id, `${r.package}@${r.version}`, r.kind, FLAGS.filter((f) => r.capabilities[f]).join(" ")]),
  ))
    io.out(line);
  for (const f of failures) io.err(`failed to load ${f.packageName}: ${f.reason}`);
  return 0;
}

export function registerPlugins(program: Command, ctx: CliContext): void {
  withJson(program.command("plugins").description("which vendor plugins are installed and what each supports")).action(async (opts: { json?: boolean }) => {
    const json = opts.json === true;
    const io = ctx.io(json);
    const installed = await ctx.installed();
    ctx.exit(pluginsCommand(io, installed.plugins, installed.failures, json));
  });
}
