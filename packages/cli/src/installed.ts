import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { discoverPlugins, loadPlugins, pluginAt, type LoadedPlugin, type PluginLoadFailure, type VendorPlugin } from "@viommu/core";
import { InputError, UsageError } from "./cli/errors.js";

export interface Installed {
  readonly plugins: readonly LoadedPlugin[];
  readonly failures: readonly PluginLoadFailure[];
  /** The plugins `--plugin DIR` named (also in `plugins`): the default selection when given. */
  readonly named: readonly LoadedPlugin[];
}

/**
 * The plugins installed where the command runs (the package there included) and where the CLI itself is
 * installed, plus those `--plugin DIR` names. A named plugin that does not load is an error, not a warning.
 */
export async function installedPlugins(pluginDirs: readonly string[] = []): Promise<Installed> {
  const roots = [process.cwd(), dirname(fileURLToPath(import.meta.url))];
  const named = pluginDirs.map((dir) => {
    const found = pluginAt(dir);
    if (found === undefined) throw new UsageError(`--plugin ${dir}: no package.json declaring "viommu": { "plugin": … } there`);
    return found;
  });
  const namedNames = new Set(named.map((n) => n.packageName));
  const namedLoad = await loadPlugins(named);
  if (namedLoad.failures.length > 0) throw new InputError(`--plugin ${pluginDirs[named.findIndex((n) => n.packageName === namedLoad.failures[0]!.packageName)]}: ${namedLoad.failures[0]!.reason}`);
  const { loaded, failures } = await loadPlugins(discoverPlugins(roots).filter((f) => !namedNames.has(f.packageName)));
  return { plugins: [...namedLoad.loaded, ...loaded], failures, named: namedLoad.loaded };
}

/** Product vendors, or the examples when no vendor is installed (so the demo always has something to run). */
export function defaultVendors(installed: readonly LoadedPlugin[]): VendorPlugin[] {
  const vendors = installed.filter((p) => p.manifest.kind !== "example").map((p) => p.plugin);
  return vendors.length > 0 ? vendors : installed.map((p) => p.plugin);
}

/**
 * The plugins a `--vendor` value selects: one id, "all" (every installed plugin, examples included), or the
 * default set. An unknown id is an error naming the installed ones.
 */
export function selectVendors(installed: readonly LoadedPlugin[], vendor: string | undefined, named: readonly LoadedPlugin[] = []): { plugins: VendorPlugin[] } | { error: string } {
  if (vendor === undefined) return { plugins: named.length > 0 ? named.map((p) => p.plugin) : defaultVendors(installed) };
  if (vendor === "all") return { plugins: installed.map((p) => p.plugin) };
  const match = installed.find((p) => p.plugin.id === vendor);
  if (match === undefined) return { error: unknownVendor(vendor, installed.map((p) => p.plugin)) };
  return { plugins: [match.plugin] };
}

export function unknownVendor(vendor: string, plugins: readonly VendorPlugin[]): string {
  const ids = plugins.map((p) => p.id);
  return `vendor "${vendor}" is not installed (installed: ${ids.length > 0 ? ids.join(", ") : "none"})`;
}
