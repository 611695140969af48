import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { registerAcpi } from "../commands/acpi.js";
import { registerBench } from "../commands/bench.js";
import { registerCampaign } from "../commands/campaign.js";
import { registerConformance } from "../commands/conformance.js";
import { registerDecode } from "../commands/decode.js";
import { registerDemo } from "../commands/demo.js";
import { registerNewBackend } from "../commands/new-backend.js";
import { registerMappings } from "../commands/mappings.js";
import { registerImport } from "../commands/import.js";
import { registerPlugins } from "../commands/plugins.js";
import { registerWalk } from "../commands/walk.js";
import { registerTrace } from "../commands/trace.js";
import { registerDifftest } from "../commands/difftest.js";
import type { CliContext } from "./context.js";
import { InputError, UsageError } from "./errors.js";

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

/** The `viommu` command: every subcommand with its options declared beside it, strict about unknown options. */
export function buildProgram(ctx: CliContext, write: { out(s: string): void; err(s: string): void }): Command {
  const program = new Command("viommu")
    .description("virtual IOMMUs for VT-d, AMD-Vi, SMMUv3, Tegra241 CMDQV and Hyper-V: run, check, decode and walk")
    .version(version(), "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showSuggestionAfterError(true)
    .configureOutput({ writeOut: write.out, writeErr: write.err, outputError: (str, w) => w(`viommu: ${str.replace(/^error: /, "error: ")}`) })
    .exitOverride();
  program.configureHelp({ sortSubcommands: false });
  for (const register of [registerPlugins, registerDemo, registerConformance, registerDecode, registerWalk, registerMappings, registerImport, registerAcpi, registerBench, registerCampaign, registerTrace, registerDifftest, registerNewBackend]) register(program, ctx);
  for (const c of program.commands) {
    for (const sub of c.commands) sub.exitOverride().configureOutput(program.configureOutput()).showSuggestionAfterError(true);
    c.exitOverride().configureOutput(program.configureOutput()).showSuggestionAfterError(true);
    if (c.commands.length === 0) c.option("--plugin <dir>", "a plugin package directory to load besides the installed ones (repeatable; selected by default)", (v: string, all: string[] = []) => [...all, v]);
  }
  program.hook("preAction", (_root, action) => {
    ctx.pluginDirs = (action.opts() as { plugin?: string[] }).plugin ?? [];
  });
  return program;
}

/**
 * Runs the command line: exit 0 or the command's code on success, 2 for usage errors (one line naming the
 * option), 1 for input errors (one line naming the file); `--help` and `--version` exit 0.
 */
export async function runCli(argv: readonly string[], ctx: CliContext, write: { out(s: string): void; err(s: string): void }): Promise<number> {
  let code = 0;
  const withCode = buildProgram({ ...ctx, exit: (c) => void (code = c) }, write);
  try {
    if (argv.length === 0) {
      write.err(withCode.helpInformation());
      return 2;
    }
    await withCode.parseAsync([...argv], { from: "user" });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") return 0;
      return 2;
    }
    if (e instanceof UsageError || e instanceof InputError) {
      if (e.message !== "") write.err(`viommu: error: ${e.message}\n`);
      return e.exitCode;
    }
    throw e;
  }
}
