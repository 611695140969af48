import type { Command } from "commander";
import { fromWords64, jsonFields, type VendorPlugin } from "@viommu/core";
import { oneVendor, withJson, type CliContext } from "../cli/context.js";
import { UsageError } from "../cli/errors.js";
import { readInputText } from "../cli/files.js";
import { parseU64 } from "../cli/numbers.js";
import { table, type Io } from "../io.js";

export interface DecodeArgs {
  readonly structure?: string;
  readonly hex?: string;
  readonly input?: string;
}

/** Decodes one structure given as 64-bit words, lowest first, into the shared JSON shape. */
export function decodeOne(plugin: VendorPlugin, structureId: string, words: readonly string[]): Record<string, unknown> {
  const structure = plugin.structures.find((s) => s.id === structureId)!;
  if (!structure.words.includes(words.length)) throw new RangeError(`${structureId} takes ${structure.words.join(" or ")} 64-bit words, got ${words.length}`);
  const normalized = words.map((w, i) => `0x${parseU64(String(w), `word ${i}`, { hexOnly: true }).toString(16)}`);
  const d = structure.decode(fromWords64(normalized));
  return { vendor: plugin.id, structure: structureId, name: d.name, code: d.code, fields: jsonFields(d.fields) };
}

/** A decoded structure as a human reads it: the name and code, then each field and its value in hex and decimal. */
function human(io: Io, decoded: Record<string, unknown>, label?: string): void {
  const code = decoded.code as number;
  io.out(`${label !== undefined ? `${label}: ` : ""}${String(decoded.name)} (code 0x${code.toString(16)})`);
  const fields = Object.entries(decoded.fields as Record<string, unknown>);
  for (const line of table(
    ["field", "value", "decimal"],
    fields.map(([k, v]) => {
      const n = typeof v === "string" ? BigInt(v) : typeof v === "number" ? BigInt(v) : undefined;
      return [k, n === undefined ? String(v) : `0x${n.toString(16)}`, n === undefined ? "" : n.toString()];
    }),
  ))
    io.out(`  ${line}`);
}

/** The words of one input line: `{"hex": [...]}` or `{"words": [...]}`. */
function wordsOf(line: string): string[] {
  const record = JSON.parse(line) as { hex?: unknown; words?: unknown };
  const words = Array.isArray(record.hex) ? record.hex : Array.isArray(record.words) ? record.words : undefined;
  if (words === undefined) throw new RangeError('expected {"hex": ["0x…", …]} or {"words": […]}');
  return words.map(String);
}

/**
 * `viommu decode`: one structure from --hex, or one JSON object per line of --input (a file, `.gz`, or `-` for
 * stdin). Each bad input line is an error on stderr naming the line; the others still decode (exit 1 if any
 * failed).
 */
export function decodeCommand(io: Io, plugin: VendorPlugin, args: DecodeArgs, json: boolean): number {
  const structures = plugin.structures.map((s) => s.id);
  if (args.structure === undefined || !structures.includes(args.structure)) throw new UsageError(`--structure: ${plugin.id} decodes ${structures.join(", ")}`);
  if (args.hex !== undefined) {
    let out: Record<string, unknown>;
    try {
      out = decodeOne(plugin, args.structure, args.hex.split(",").map((w) => w.trim()));
    } catch (e) {
      throw new UsageError(`--hex: ${(e as Error).message}`);
    }
    if (json) io.out(JSON.stringify(out));
    else human(io, out);
    return 0;
  }
  if (args.input === undefined) throw new UsageError("give --hex W[,W...] or --input FILE");
  let status = 0;
  const text = readInputText(args.input, "--input");
  let lineNo = 0;
  for (const line of text.split("\n")) {
    lineNo++;
    if (line.trim() === "") continue;
    try {
      const out = decodeOne(plugin, args.structure, wordsOf(line));
      if (json) io.out(JSON.stringify(out));
      else human(io, out, `line ${lineNo}`);
    } catch (e) {
      io.err(`--input ${args.input === "-" ? "(stdin)" : args.input} line ${lineNo}: ${(e as Error).message}`);
      status = 1;
    }
  }
  return status;
}

export function registerDecode(program: Command, ctx: CliContext): void {
  withJson(program.command("decode").description("decode one structure (64-bit words, lowest first) into its named fields"))
    .requiredOption("--vendor <id>", "the vendor")
    .requiredOption("--structure <name>", "the structure (viommu plugins --json lists each vendor's)")
    .option("--hex <words>", "comma-separated 64-bit words, lowest first (0x… or plain hex)")
    .option("--input <file>", "JSON lines {\"hex\": […]} or {\"words\": […]}; .gz or - for stdin")
    .action(async (opts: { json?: boolean; vendor: string; structure: string; hex?: string; input?: string }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const plugin = await oneVendor(ctx, io, json, opts.vendor);
      if (opts.hex !== undefined && opts.input !== undefined) throw new UsageError("give --hex or --input, not both");
      ctx.exit(decodeCommand(io, plugin, { structure: opts.structure, hex: opts.hex, input: opts.input }, json));
    });
}
