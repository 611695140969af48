import type { Command } from "commander";
import { oneVendor, withJson, type CliContext } from "../cli/context.js";
import { UsageError } from "../cli/errors.js";
import { writeOutput } from "../cli/files.js";
import { acpiTableProblem, parseAcpiTableHeader, type VendorPlugin } from "@viommu/core";
import type { Io } from "../io.js";

/** `viommu acpi`: the vendor's ACPI table, written to --out or shown as a hex dump. */
export function acpiCommand(io: Io, plugin: VendorPlugin, out: string | undefined, json: boolean): number {
  if (plugin.acpi === undefined) throw new UsageError(`--vendor: ${plugin.id} has no ACPI table (${plugin.capabilities.reasons?.acpi ?? "not described by firmware tables"})`);
  const table = plugin.acpi.generate();
  const header = parseAcpiTableHeader(table);
  const problem = acpiTableProblem(table, plugin.acpi.signature);
  if (out !== undefined) writeOutput(out, "--out", table);
  if (json) {
    io.out(JSON.stringify({ vendor: plugin.id, signature: header.signature, length: header.length, revision: header.revision, valid: problem === undefined, out }));
    return problem === undefined ? 0 : 1;
  }
  io.out(`${header.signature} revision ${header.revision}, ${header.length} bytes, ${problem ?? "checksum ok"}${out !== undefined ? `, written to ${out}` : ""}`);
  if (out === undefined) {
    for (let i = 0; i < table.length; i += 16) {
      const row = [...table.subarray(i, i + 16)];
      io.out(`${i.toString(16).padStart(4, "0")}  ${row.map((b) => b.toString(16).padStart(2, "0")).join(" ").padEnd(47)}  ${row.map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("")}`);
    }
  }
  return problem === undefined ? 0 : 1;
}

export function registerAcpi(program: Command, ctx: CliContext): void {
  withJson(program.command("acpi").description("the vendor's ACPI table (DMAR, IVRS or IORT), checked, as a hex dump or to a file"))
    .requiredOption("--vendor <id>", "the vendor")
    .option("--out <file>", "write the table's bytes to FILE")
    .action(async (opts: { json?: boolean; vendor: string; out?: string }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      ctx.exit(acpiCommand(io, await oneVendor(ctx, io, json, opts.vendor), opts.out, json));
    });
}
