import { basename } from "node:path";
import type { Command } from "commander";
import type { DebugfsEntry, VendorPlugin } from "@viommu/core";
import { oneVendor, withJson, type CliContext } from "../cli/context.js";
import { UsageError } from "../cli/errors.js";
import { readInputText } from "../cli/files.js";
import type { Io } from "../io.js";

function fieldText(value: number | bigint | boolean | string): string {
  if (typeof value === "number") return value > 9 ? `0x${value.toString(16)}` : String(value);
  if (typeof value === "bigint") return `0x${value.toString(16)}`;
  return String(value);
}

function entryJson(file: string, e: DebugfsEntry): Record<string, unknown> {
  return {
    file,
    line: e.line,
    structure: e.structure,
    ...(e.index !== undefined ? { index: e.index } : {}),
    ...(e.address !== undefined ? { address: `0x${e.address.toString(16)}` } : {}),
    raw: e.raw,
    fields: Object.fromEntries(Object.entries(e.fields).map(([k, v]) => [k, typeof v === "bigint" ? `0x${v.toString(16)}` : v])),
  };
}

/**
 * `viommu import`: Linux's own debugfs dumps of the IOMMU (/sys/kernel/debug/iommu/intel/*, .../amd/*) read
 * back and every entry decoded. The file's name says what it holds (`--as` when it was renamed); lines the
 * vendor cannot read are reported with their number and make the exit status 1.
 */
export function importCommand(io: Io, plugin: VendorPlugin, files: readonly string[], as: string | undefined, json: boolean): number {
  const importer = plugin.debugfs;
  if (importer === undefined) throw new UsageError(`--vendor: ${plugin.id} reads no debugfs dumps`);
  let status = 0;
  for (const file of files) {
    const kind = as ?? basename(file).replace(/\.(txt|gz)$/g, "");
    if (!importer.files.includes(kind)) throw new UsageError(`${file}: not a ${plugin.id} debugfs file (it reads ${importer.files.join(", ")}; --as NAME says which one a renamed file is)`);
    const parsed = importer.parse(kind, readInputText(file, "import"));
    for (const error of parsed.errors) io.err(`${file}: ${error}`);
    if (parsed.errors.length > 0) status = 1;
    for (const e of parsed.entries) {
      if (json) io.out(JSON.stringify(entryJson(file, e)));
      else {
        const where = `${e.index !== undefined ? ` ${e.index}` : ""}${e.address !== undefined ? ` @0x${e.address.toString(16)}` : ""}`;
        io.out(`${e.structure}${where}  ${e.raw.join(" ")}`);
        io.out(`    ${Object.entries(e.fields).map(([k, v]) => `${k}=${fieldText(v)}`).join(" ")}`);
      }
    }
  }
  return status;
}

export function registerImport(program: Command, ctx: CliContext): void {
  withJson(program.command("import").description("decode Linux's debugfs dumps of the IOMMU (/sys/kernel/debug/iommu/<vendor>/*): every entry in the architecture's terms"))
    .requiredOption("--vendor <id>", "the vendor whose dumps these are")
    .argument("<files...>", "debugfs files (as copied from the guest or host; '-' is stdin with --as)")
    .option("--as <name>", "the debugfs name of the files, when they were renamed")
    .action(async (files: string[], opts: { json?: boolean; vendor: string; as?: string }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const plugin = await oneVendor(ctx, io, json, opts.vendor);
      ctx.exit(importCommand(io, plugin, files, opts.as, json));
    });
}
