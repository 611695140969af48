import type { Command } from "commander";
import { allPlugins, oneVendor, withJson, type CliContext } from "../cli/context.js";
import { InputError, UsageError } from "../cli/errors.js";
import { readInput, writeOutput } from "../cli/files.js";
import { ACPI_HEADER_BYTES, acpiTableProblem, parseAcpiTableHeader, type AcpiField, type VendorPlugin } from "@viommu/core";
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

/** The standard header's fields, as iasl lists them. */
function headerFields(table: Uint8Array): AcpiField[] {
  const h = parseAcpiTableHeader(table);
  const hex = (n: number, digits: number): string => n.toString(16).toUpperCase().padStart(digits, "0");
  return [
    { offset: 0, length: 4, name: "Signature", value: `"${h.signature}"`, depth: 0 },
    { offset: 4, length: 4, name: "Table Length", value: hex(h.length, 8), depth: 0 },
    { offset: 8, length: 1, name: "Revision", value: hex(h.revision, 2), depth: 0 },
    { offset: 9, length: 1, name: "Checksum", value: hex(h.checksum, 2), depth: 0 },
    { offset: 10, length: 6, name: "Oem ID", value: `"${h.oemId}"`, depth: 0 },
    { offset: 16, length: 8, name: "Oem Table ID", value: `"${h.oemTableId}"`, depth: 0 },
    { offset: 24, length: 4, name: "Oem Revision", value: hex(h.oemRevision, 8), depth: 0 },
    { offset: 28, length: 4, name: "Asl Compiler ID", value: `"${h.creatorId}"`, depth: 0 },
    { offset: 32, length: 4, name: "Asl Compiler Revision", value: hex(h.creatorRevision, 8), depth: 0 },
  ];
}

/**
 * One field as ACPICA's iasl -d prints it, `[offset-hex offset-dec length] name : value`, so the two can be
 * compared line by line (iasl adds bracketed annotations after some values).
 */
export function acpiFieldLine(f: AcpiField): string {
  const where = `[${f.offset.toString(16).toUpperCase().padStart(3, "0")}h ${String(f.offset).padStart(4, "0")} ${String(f.length).padStart(3)}]`;
  return `${where}${f.name.padStart(29)} : ${f.value}`;
}

/**
 * `viommu acpi --decode FILE`: a DMAR, IVRS or IORT someone else built, field by field with offsets. The vendor
 * is the one whose table the signature names, unless --vendor says.
 */
export function acpiDecodeCommand(io: Io, plugins: readonly VendorPlugin[], file: string, vendor: string | undefined, json: boolean): number {
  const table = readInput(file, "--decode");
  if (table.length < ACPI_HEADER_BYTES) throw new InputError(`--decode ${file}: ${table.length} bytes, shorter than an ACPI table header`);
  const header = parseAcpiTableHeader(table);
  const plugin = vendor !== undefined ? plugins.find((p) => p.id === vendor) : plugins.find((p) => p.acpi?.signature === header.signature && p.extends === undefined);
  if (plugin === undefined) throw new UsageError(vendor !== undefined ? `--vendor: ${vendor} is not installed` : `--decode ${file}: no installed vendor describes a "${header.signature}" table`);
  if (plugin.acpi?.decode === undefined) throw new UsageError(`--decode: ${plugin.id} cannot decode its ACPI table`);
  const problem = acpiTableProblem(table, plugin.acpi.signature);
  if (problem !== undefined && table.length < header.length) throw new InputError(`--decode ${file}: ${problem}`);
  const body = plugin.acpi.decode(table);
  if (!body.ok) throw new InputError(`--decode ${file}: ${body.error.message}`);
  const fields = [...headerFields(table), ...body.value];
  if (json) {
    io.out(JSON.stringify({ vendor: plugin.id, signature: header.signature, valid: problem === undefined, ...(problem !== undefined ? { problem } : {}), fields }));
    return problem === undefined ? 0 : 1;
  }
  for (const f of fields) io.out(acpiFieldLine(f));
  if (problem !== undefined) io.err(`--decode ${file}: ${problem}`);
  return problem === undefined ? 0 : 1;
}

export function registerAcpi(program: Command, ctx: CliContext): void {
  withJson(program.command("acpi").description("the vendor's ACPI table (DMAR, IVRS or IORT), checked, as a hex dump or to a file; or --decode an existing one field by field"))
    .option("--vendor <id>", "the vendor (with --decode: default, the one the table's signature names)")
    .option("--out <file>", "write the table's bytes to FILE")
    .option("--decode <file>", "decode an existing table (firmware's, QEMU's: /sys/firmware/acpi/tables/DMAR) field by field with offsets")
    .action(async (opts: { json?: boolean; vendor?: string; out?: string; decode?: string }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      if (opts.decode !== undefined) {
        if (opts.out !== undefined) throw new UsageError("--out: not with --decode");
        const { all } = await allPlugins(ctx, io, json);
        ctx.exit(acpiDecodeCommand(io, all, opts.decode, opts.vendor, json));
        return;
      }
      ctx.exit(acpiCommand(io, await oneVendor(ctx, io, json, opts.vendor), opts.out, json));
    });
}
