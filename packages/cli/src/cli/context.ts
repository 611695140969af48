import type { Command } from "commander";
import type { VendorPlugin } from "@viommu/core";
import { installedPlugins, selectVendors, unknownVendor, type Installed } from "../installed.js";
import { processIo, type Io } from "../io.js";
import { UsageError } from "./errors.js";

/** What every command gets: its output, and the installed plugins (discovered once, when first asked for). */
export interface CliContext {
  io(json: boolean): Io;
  installed(): Promise<Installed>;
  /** Plugin packages the command line named with --plugin (set before the command runs). */
  pluginDirs: string[];
  /** Sets the process's exit code (the last command's verdict). */
  exit(code: number): void;
}

export function processContext(): CliContext {
  let installed: Promise<Installed> | undefined;
  const ctx: CliContext = {
    pluginDirs: [],
    io: processIo,
    // A method, so a context copied with other members (runCli's) reads its own --plugin list.
    installed(this: CliContext) {
      return (installed ??= installedPlugins(this.pluginDirs));
    },
    exit: (code) => {
      process.exitCode = code;
    },
  };
  return ctx;
}

/** Every installed plugin, with load failures shown as warnings on a terminal. */
export async function allPlugins(ctx: CliContext, io: Io, json: boolean): Promise<{ installed: Installed; all: VendorPlugin[] }> {
  const installed = await ctx.installed();
  for (const f of installed.failures) if (!json) io.err(`warning: plugin ${f.packageName} failed to load: ${f.reason}`);
  return { installed, all: installed.plugins.map((p) => p.plugin) };
}

/** The plugins `--vendor` selects (one id, `all`, or the default set). */
export async function vendorsOf(ctx: CliContext, io: Io, json: boolean, vendor: string | undefined): Promise<{ selected: VendorPlugin[]; all: VendorPlugin[] }> {
  const { installed, all } = await allPlugins(ctx, io, json);
  const selected = selectVendors(installed.plugins, vendor, installed.named);
  if ("error" in selected) throw new UsageError(`--vendor: ${selected.error}`);
  if (selected.plugins.length === 0) throw new UsageError("no viommu plugins installed");
  return { selected: selected.plugins, all };
}

/** The one plugin a required `--vendor` names. */
export async function oneVendor(ctx: CliContext, io: Io, json: boolean, vendor: string | undefined): Promise<VendorPlugin> {
  const { all } = await allPlugins(ctx, io, json);
  if (vendor === undefined) throw new UsageError(`--vendor is required (installed: ${all.map((p) => p.id).join(", ") || "none"})`);
  const found = all.find((p) => p.id === vendor);
  if (found === undefined) throw new UsageError(`--vendor: ${unknownVendor(vendor, all)}`);
  return found;
}

/** Adds the option every command has. */
export function withJson(command: Command): Command {
  return command.option("--json", "machine-readable output (one JSON document, or JSON lines)");
}
