import type { Command } from "commander";
import { withJson, type CliContext } from "../cli/context.js";
import { CAPABILITY_NAMES, type LoadedPlugin, type PluginLoadFailure, type VendorPlugin } from "@viommu/core";
import { table, type Io } from "../io.js";

const FLAGS = CAPABILITY_NAMES;

/**
 * uAPI type numbers two plugins both use for the same kind of object (a vIOMMU type, a HWPT data type …), where
 * neither extends the other: iommufd could not tell their objects apart.
 */
export function typeCollisions(plugins: readonly VendorPlugin[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < plugins.length; i++) {
    for (let j = i + 1; j < plugins.length; j++) {
      const [a, b] = [plugins[i]!, plugins[j]!];
      if (a.extends === b.id || b.extends === a.id) continue;
      for (const [kind, value] of Object.entries(a.types)) {
        if (b.types[kind] === value) out.push(`${a.id} and ${b.id} both use ${value} as their ${kind} type`);
      }
    }
  }
  return out;
}

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
    properties: (p.plugin.properties ?? []).map((q) => ({ name: q.name, description: q.description, ...(q.values !== undefined ? { values: q.values } : {}), default: q.defaultValue })),
    tools: { walk: p.plugin.walk !== undefined, wideAddresses: p.plugin.walk?.wideAddresses === true, mappings: p.plugin.walk?.inspect !== undefined, acpiDecode: p.plugin.acpi?.decode !== undefined, debugfs: p.plugin.debugfs?.files ?? [] },
  }));
  const collisions = typeCollisions(plugins.map((p) => p.plugin));
  if (json) {
    io.out(JSON.stringify({ plugins: rows, failures, collisions }));
    return 0;
  }
  if (rows.length === 0) io.out("no viommu plugins installed");
  for (const line of table(
    ["vendor", "package", "kind", "supports"],
    rows.map((r) => [r.id, `${r.package}@${r.version}`, r.kind, FLAGS.filter((f) => r.capabilities[f]).join(" ")]),
  ))
    io.out(line);
  for (const r of rows) {
    if (r.properties.length === 0) continue;
    io.out("");
    io.out(`${r.id} device properties (QEMU's names): ${r.properties.map((q) => `${q.name}=${q.values?.join("|") ?? "N"} (default ${q.default})`).join(", ")}`);
  }
  for (const f of failures) io.err(`failed to load ${f.packageName}: ${f.reason}`);
  for (const c of collisions) io.err(`warning: ${c}`);
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
