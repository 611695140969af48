import { readFileSync } from "node:fs";
import { fromWords64, jsonFields, type VendorPlugin } from "@viommu/core";
import type { Io } from "../io.js";

export interface DecodeArgs {
  readonly structure?: string;
  readonly hex?: string;
  readonly input?: string;
}

/** Decodes one structure given as 64-bit words, lowest first, into the shared JSON shape. */
export function decodeOne(plugin: VendorPlugin, structureId: string, words: readonly string[]): Record<string, unknown> {
  const structure = plugin.structures.find((s) => s.id === structureId)!;
  if (!structure.words.includes(words.length)) throw new RangeError(`${structureId} takes ${structure.words.join(" or ")} 64-bit words, got ${words.length}`);
  const d = structure.decode(fromWords64(words));
  return { vendor: plugin.id, structure: structureId, name: d.name, code: d.code, fields: jsonFields(d.fields) };
}

/** `viommu decode`: one structure from --hex, or one JSON object per line of --input. */
export function decodeCommand(io: Io, plugin: VendorPlugin, args: DecodeArgs, json: boolean): number {
  const structures = plugin.structures.map((s) => s.id);
  if (args.structure === undefined || !structures.includes(args.structure)) {
    io.err(`--structure must be one of: ${structures.join(", ")}`);
    return 2;
  }
  if (args.hex !== undefined) {
    try {
      const out = decodeOne(plugin, args.structure, args.hex.split(",").map((w) => w.trim()));
      io.out(json ? JSON.stringify(out) : JSON.stringify(out, undefined, 2));
      return 0;
    } catch (e) {
      io.err((e as Error).message);
      return 2;
    }
  }
  if (args.input === undefined) {
    io.err("give --hex W[,W...] or --input FILE");
    return 2;
  }
  let status = 0;
  const text = readFileSync(args.input, "utf8");
  let lineNo = 0;
  for (const line of text.split("\n")) {
    lineNo++;
    if (line.trim() === "") continue;
    try {
      const record = JSON.parse(line) as { hex?: unknown };
      if (!Array.isArray(record.hex)) throw new RangeError("expected {\"hex\": [\"0x…\", …]}");
      io.out(JSON.stringify(decodeOne(plugin, args.structure, record.hex.map(String))));
    } catch (e) {
      io.out(JSON.stringify({ error: (e as Error).message, line: lineNo }));
      status = 1;
    }
  }
  return status;
}
