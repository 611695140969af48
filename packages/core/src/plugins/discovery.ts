import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { VendorPlugin } from "../contract/plugin.js";
import { capabilityProblems } from "../contract/capabilities.js";

/**
 * How a package declares itself a viommu plugin, in its package.json:
 *   "viommu": { "plugin": "./plugin", "kind": "vendor" | "example" }
 * `plugin` names an export subpath whose module default-exports the VendorPlugin.
 */
export interface PluginManifest {
  readonly plugin: string;
  readonly kind?: "vendor" | "example";
}

export interface FoundPlugin {
  readonly packageName: string;
  readonly version: string;
  readonly directory: string;
  readonly manifest: PluginManifest;
}

export interface LoadedPlugin extends FoundPlugin {
  readonly plugin: VendorPlugin;
}

export interface PluginLoadFailure {
  readonly packageName: string;
  readonly reason: string;
}

function readJson(path: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function manifestOf(pkg: Record<string, unknown>): PluginManifest | undefined {
  const v = pkg.viommu as Record<string, unknown> | undefined;
  if (v === undefined || typeof v !== "object" || typeof v.plugin !== "string") return undefined;
  return { plugin: v.plugin, kind: v.kind === "example" ? "example" : "vendor" };
}

/** Every node_modules directory from `start` up to the filesystem root. */
function nodeModulesChain(start: string): string[] {
  const out: string[] = [];
  let dir = resolve(start);
  for (;;) {
    const nm = join(dir, "node_modules");
    if (existsSync(nm)) out.push(nm);
    const parent = dirname(dir);
    if (parent === dir) return out;
    dir = parent;
  }
}

/**
 * Finds installed plugins: packages in any node_modules visible from `roots` whose package.json declares
 * a `viommu.plugin`. Nothing in core lists vendors; installing a package is what makes it found. The first
 * package of a name found wins (nearest node_modules first).
 */
export function discoverPlugins(roots: readonly string[]): FoundPlugin[] {
  const found = new Map<string, FoundPlugin>();
  const consider = (dir: string): void => {
    const pkg = readJson(join(dir, "package.json"));
    if (pkg === undefined || typeof pkg.name !== "string" || found.has(pkg.name)) return;
    const manifest = manifestOf(pkg);
    if (manifest === undefined) return;
    found.set(pkg.name, { packageName: pkg.name, version: typeof pkg.version === "string" ? pkg.version : "0.0.0", directory: realpathSync(dir), manifest });
  };
  // The package being developed, where the command runs, is found too (a backend author need not install it).
  for (const root of roots) if (existsSync(join(root, "package.json"))) consider(root);
  for (const root of roots) {
    for (const nm of nodeModulesChain(root)) {
      let entries: string[];
      try {
        entries = readdirSync(nm);
      } catch {
        continue;
      }
      for (const entry of entries) {
        if (entry.startsWith(".")) continue;
        if (entry.startsWith("@")) {
          let scoped: string[] = [];
          try {
            scoped = readdirSync(join(nm, entry));
          } catch {
            continue;
          }
          for (const name of scoped) consider(join(nm, entry, name));
        } else consider(join(nm, entry));
      }
    }
  }
  return [...found.values()].sort((a, b) => a.packageName.localeCompare(b.packageName));
}

/** The file an export subpath of a package resolves to (its `default` condition). */
function exportTarget(found: FoundPlugin): string | undefined {
  const pkg = readJson(join(found.directory, "package.json"));
  const exportsField = pkg?.exports as Record<string, unknown> | undefined;
  const entry = exportsField?.[found.manifest.plugin];
  const target = typeof entry === "string" ? entry : (entry as Record<string, unknown> | undefined)?.default;
  return typeof target === "string" ? join(found.directory, target) : undefined;
}

function looksLikePlugin(value: unknown): value is VendorPlugin {
  const p = value as Partial<VendorPlugin> | undefined;
  return (
    p !== undefined &&
    typeof p.id === "string" &&
    typeof p.register === "function" &&
    typeof p.createUnit === "function" &&
    typeof p.createDevice === "function" &&
    typeof p.createDriver === "function" &&
    typeof p.capabilities === "object"
  );
}

/**
 * Loads found plugins. A plugin that fails to load (missing build, a throw at import, a malformed export) is
 * reported, not fatal: core plus any subset of vendors must work.
 */
export async function loadPlugins(found: readonly FoundPlugin[]): Promise<{ loaded: LoadedPlugin[]; failures: PluginLoadFailure[] }> {
  const loaded: LoadedPlugin[] = [];
  const failures: PluginLoadFailure[] = [];
  for (const f of found) {
    const target = exportTarget(f);
    if (target === undefined || !existsSync(target)) {
      failures.push({ packageName: f.packageName, reason: `export ${f.manifest.plugin} not found (is the package built?)` });
      continue;
    }
    try {
      const module = (await import(pathToFileURL(target).href)) as Record<string, unknown>;
      const plugin = module.default ?? Object.values(module).find(looksLikePlugin);
      if (!looksLikePlugin(plugin)) {
        failures.push({ packageName: f.packageName, reason: `${f.manifest.plugin} does not default-export a VendorPlugin` });
        continue;
      }
      const problems = capabilityProblems(plugin.capabilities);
      if (problems.length > 0) {
        failures.push({ packageName: f.packageName, reason: `plugin ${plugin.id}: ${problems.join("; ")}` });
        continue;
      }
      loaded.push({ ...f, plugin });
    } catch (e) {
      failures.push({ packageName: f.packageName, reason: e instanceof Error ? e.message : String(e) });
    }
  }
  return { loaded, failures };
}

/**
 * The plugin package at `path` (a directory whose package.json declares `viommu.plugin`), for a command told
 * where the plugin is instead of finding it installed. Undefined when the directory declares none.
 */
export function pluginAt(path: string): FoundPlugin | undefined {
  const dir = resolve(path);
  const pkg = readJson(join(dir, "package.json"));
  if (pkg === undefined || typeof pkg.name !== "string") return undefined;
  const manifest = manifestOf(pkg);
  if (manifest === undefined) return undefined;
  return { packageName: pkg.name, version: typeof pkg.version === "string" ? pkg.version : "0.0.0", directory: realpathSync(dir), manifest };
}
