import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { discoverPlugins, loadPlugins, type LoadedPlugin, type PluginLoadFailure, type VendorPlugin } from "@viommu/core";

export interface Installed {
  readonly plugins: readonly LoadedPlugin[];
  readonly failures: readonly PluginLoadFailure[];
}

/** The plugins installed where the command runs and where the CLI itself is installed. */
export async function installedPlugins(): Promise<Installed> {
  const roots = [process.cwd(), dirname(fileURLToPath(import.meta.url))];
  const { loaded, failures } = await loadPlugins(discoverPlugins(roots));
  return { plugins: loaded, failures };
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
export function selectVendors(installed: readonly LoadedPlugin[], vendor: string | undefined): { plugins: VendorPlugin[] } | { error: string } {
  if (vendor === undefined) return { plugins: defaultVendors(installed) };
  if (vendor === "all") return { plugins: installed.map((p) => p.plugin) };
  const match = installed.find((p) => p.plugin.id === vendor);
  if (match === undefined) return { error: unknownVendor(vendor, installed.map((p) => p.plugin)) };
  return { plugins: [match.plugin] };
}

export function unknownVendor(vendor: string, plugins: readonly VendorPlugin[]): string {
  const ids = plugins.map((p) => p.id);
  return `vendor "${vendor}" is not installed (installed: ${ids.length > 0 ? ids.join(", ") : "none"})`;
}
