import { createInterface } from "node:readline";
import { closeSync, createReadStream, openSync, readSync } from "node:fs";
import { createGunzip } from "node:zlib";
import { Option, type Command } from "commander";
import type { VendorPlugin, WalkAnswer, WalkRequest, WalkTool } from "@viommu/core";
import { oneVendor, withJson, type CliContext } from "../cli/context.js";
import { fileProblem, UsageError } from "../cli/errors.js";
import { parseRequesterId, parseU64 } from "../cli/numbers.js";
import { MemoryImage } from "../memory/memory-image.js";
import { TracingGuestMemory, type MemoryRead } from "../memory/tracing-memory.js";
import type { Io } from "../io.js";

export interface WalkArgs {
  /** `FILE` or `FILE@BASE`, one per range (raw images, ELF cores, gzip of either). */
  readonly memory?: readonly string[];
  /** The base of raw images given without @BASE (default 0). */
  readonly memoryBase?: string;
  readonly reg?: readonly string[];
  readonly rid?: string;
  readonly pasid?: string;
  readonly iova?: string;
  readonly access?: string;
  readonly requests?: string;
  /** Print each walk's steps (always for a single request in human output). */
  readonly steps?: boolean;
}

/**
 * Guest memory over the user's dumps, recording the reads each walk makes: a page is read from the files the
 * first time a walk touches it, so memory use follows the tables walked, not the dump's size.
 */
export async function openGuestMemory(specs: readonly string[], defaultBase = 0): Promise<{ memory: TracingGuestMemory; image: MemoryImage }> {
  const image = await MemoryImage.open(specs, defaultBase);
  return { memory: new TracingGuestMemory(image), image };
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/** What one walk found, with the reads it made of the dump. */
export interface WalkReport {
  readonly answer: WalkAnswer;
  readonly reads: readonly MemoryRead[];
}

/** The shared JSON shape of one walk result: addresses as "0x…" text; with `--steps`, the vendor's named entries (`steps`, where it names them) and every read the walk made (`reads`). */
export function walkJson(report: WalkReport, steps = false): Record<string, unknown> {
  const a = report.answer;
  const outside = report.reads.filter((r) => !r.inImage).map((r) => hex(r.address));
  const base = a.ok
    ? { ok: true, output: hex(a.output), pageSize: a.pageSize, read: a.read, write: a.write, ...(a.domain !== undefined ? { domain: a.domain } : {}), ...(a.asid !== undefined ? { asid: a.asid } : {}) }
    : { ok: false, fault: a.fault };
  return {
    ...base,
    ...(outside.length > 0 ? { outsideImage: outside } : {}),
    ...(steps && a.steps !== undefined ? { steps: a.steps.map((s) => ({ ...s, address: hex(s.address) })) } : {}),
    ...(steps ? { reads: report.reads.map((r) => ({ address: hex(r.address), bytes: r.bytes, value: r.value, ...(r.inImage ? {} : { outsideImage: true }) })) } : {}),
  };
}

function sizeText(bytes: number): string {
  return bytes >= 2 ** 30 ? `${bytes / 2 ** 30}G` : bytes >= 2 ** 20 ? `${bytes / 2 ** 20}M` : `${bytes / 1024}K`;
}

/** One walk result as a line a person reads. */
export function walkLine(request: WalkRequest, report: WalkReport): string {
  const a = report.answer;
  const iova = request.address !== undefined ? `0x${request.address.toString(16)}` : hex(request.iova);
  const outside = report.reads.find((r) => !r.inImage);
  const note = outside === undefined ? "" : `  (read ${hex(outside.address)} outside the memory image)`;
  if (!a.ok) return `${iova}  FAULT ${a.fault.name} (code 0x${a.fault.code.toString(16)})${note}`;
  const perms = `${a.read ? "r" : "-"}${a.write ? "w" : "-"}`;
  return `${iova}  →  ${hex(a.output)}  ${sizeText(a.pageSize)} ${perms}${a.domain !== undefined ? `  domain ${a.domain}` : ""}${a.asid !== undefined ? `  asid ${a.asid}` : ""}${note}`;
}

/** The walk's steps as a table: the vendor's named entries, or else every read it made. */
export function walkTable(report: WalkReport): string[] {
  const rows: string[][] = [];
  if (report.answer.steps !== undefined) {
    rows.push(["step", "entry", "address", "level", "raw", "fields"]);
    report.answer.steps.forEach((s, i) =>
      rows.push([
        String(i + 1),
        `${s.stage !== undefined ? `S${s.stage} ` : ""}${s.what}`,
        hex(s.address),
        s.level === undefined ? "" : `${s.level}${s.pageSize !== undefined ? ` (${sizeText(s.pageSize)})` : ""}`,
        s.raw.join(" "),
        Object.entries(s.fields ?? {})
          .map(([k, v]) => `${k}=${typeof v === "number" ? (v > 9 ? hex(v) : String(v)) : String(v)}`)
          .join(" "),
      ]),
    );
  } else {
    rows.push(["step", "address", "bytes", "value", ""]);
    report.reads.forEach((r, i) => rows.push([String(i + 1), hex(r.address), String(r.bytes), r.value.join(" "), r.inImage ? "" : "outside the memory image"]));
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => `  ${r.map((cell, c) => cell.padEnd(widths[c]!)).join("  ")}`.trimEnd());
}

/**
 * The input address: a number below 2^53; above, all 64 bits go to a walker that takes them (5-level tables,
 * sign-extended or TTB1 addresses, addresses beyond the configured width all have an architectural answer).
 */
function addressOf(value: bigint, where: string, tool: WalkTool, vendor: string): { iova: number; address?: bigint } {
  if (value <= BigInt(Number.MAX_SAFE_INTEGER)) return { iova: Number(value) };
  if (tool.wideAddresses !== true) throw new RangeError(`${where} iova: 0x${value.toString(16)} is at or above 2^53, which ${vendor}'s walker does not take`);
  return { iova: Number(value), address: value };
}

function safe(value: bigint, option: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`${option}: 0x${value.toString(16)} is at or above 2^53, which walk does not take yet`);
  return Number(value);
}

function requestOf(record: Record<string, unknown>, where: string, tool: WalkTool, vendor: string): WalkRequest {
  const rid = record.sid ?? record.devid ?? record.rid ?? record.bdf;
  if (rid === undefined || record.iova === undefined) throw new RangeError(`${where}: a request needs sid, devid, rid or bdf, and iova`);
  const pasid = record.pasid ?? record.ssid;
  const access = record.access ?? "read";
  if (access !== "read" && access !== "write") throw new RangeError(`${where}: access "${String(access)}" is not read or write`);
  return {
    rid: parseRequesterId(String(rid), `${where} requester id`),
    ...addressOf(parseU64(String(record.iova), `${where} iova`), where, tool, vendor),
    pasid: pasid === undefined ? undefined : safe(parseU64(String(pasid), `${where} pasid`), `${where} pasid`),
    write: access === "write",
  };
}

/** Whether a file starts with gzip's magic (an unreadable one is reported when it is opened for reading). */
function gzipped(path: string): boolean {
  try {
    const fd = openSync(path, "r");
    const head = Buffer.alloc(2);
    const n = readSync(fd, head, 0, 2, 0);
    closeSync(fd);
    return n === 2 && head[0] === 0x1f && head[1] === 0x8b;
  } catch {
    return false;
  }
}

/** `--reg NAME=VALUE` options, each a register the vendor's walker takes (hex values). */
export function parseRegisters(plugin: VendorPlugin, tool: WalkTool, specs: readonly string[]): Record<string, bigint> {
  const registers: Record<string, bigint> = {};
  for (const r of specs) {
    const at = r.indexOf("=");
    if (at <= 0) throw new UsageError(`--reg ${r}: expected NAME=VALUE`);
    const name = r.slice(0, at).trim().toUpperCase();
    if (!tool.registers.includes(name)) throw new UsageError(`--reg ${name}: ${plugin.id}'s walker takes ${tool.registers.join(", ")}`);
    registers[name] = parseU64(r.slice(at + 1), `--reg ${name}`, { hexOnly: true });
  }
  return registers;
}

/** The lines of a requests file, or of stdin (`-`) as they arrive, so a tool can converse with walk. */
async function* requestLines(path: string): AsyncGenerator<string> {
  const name = path === "-" ? "(stdin)" : path;
  const file: NodeJS.ReadableStream = path === "-" ? process.stdin : createReadStream(path);
  const input: NodeJS.ReadableStream = path !== "-" && gzipped(path) ? file.pipe(createGunzip()) : file;
  const failed = new Promise<never>((_, reject) => {
    file.once("error", (e: unknown) => reject(fileProblem("--requests", name, e)));
    if (input !== file) input.once("error", (e: unknown) => reject(fileProblem("--requests", name, e)));
  });
  failed.catch(() => undefined); // raced below; an error after the last line is not an unhandled rejection

  const lines = createInterface({ input, crlfDelay: Infinity })[Symbol.asyncIterator]();
  for (;;) {
    const next = await Promise.race([lines.next(), failed]);
    if (next.done === true) return;
    yield next.value;
  }
}

/** `viommu walk`: translations from guest-memory dumps and the registers the guest wrote. */
export async function walkCommand(io: Io, plugin: VendorPlugin, args: WalkArgs, json = true): Promise<number> {
  const tool = plugin.walk;
  if (tool === undefined) throw new UsageError(`--vendor: ${plugin.id} has no table walker`);
  if (args.memory === undefined || args.memory.length === 0) throw new UsageError("--memory FILE[@BASE] is required");
  const registers = parseRegisters(plugin, tool, args.reg ?? []);
  const base = args.memoryBase === undefined ? 0 : safe(parseU64(args.memoryBase, "--memory-base"), "--memory-base");
  const { memory, image } = await openGuestMemory(args.memory, base);
  try {
    const prepared = tool.prepare(memory, registers);
    if (!prepared.ok) throw new UsageError(`--reg: ${prepared.error.message} (${plugin.id}'s walker takes ${tool.registers.join(", ")})`);
    const walk = prepared.value;
    return await walkRequests(io, (request) => {
      const { result, reads } = memory.traced(() => walk(request));
      return { answer: result, reads };
    }, args, json, tool, plugin.id);
  } finally {
    image.close();
  }
}

async function walkRequests(io: Io, walk: (request: WalkRequest) => WalkReport, args: WalkArgs, json: boolean, tool: WalkTool, vendor: string): Promise<number> {
  const steps = args.steps === true;
  if (args.requests !== undefined) {
    let status = 0;
    let lineNo = 0;
    for await (const line of requestLines(args.requests)) {
      lineNo++;
      if (line.trim() === "") continue;
      const where = `--requests ${args.requests} line ${lineNo}`;
      try {
        const request = requestOf(JSON.parse(line) as Record<string, unknown>, where, tool, vendor);
        const report = walk(request);
        if (json) io.out(JSON.stringify(walkJson(report, steps)));
        else {
          io.out(walkLine(request, report));
          if (steps) for (const row of walkTable(report)) io.out(row);
        }
      } catch (e) {
        io.err(e instanceof SyntaxError ? `${where}: not JSON` : (e as Error).message);
        status = 1;
      }
    }
    return status;
  }
  if (args.rid === undefined || args.iova === undefined) throw new UsageError("give --sid/--devid/--rid and --iova, or --requests FILE");
  let request: WalkRequest;
  try {
    request = requestOf({ rid: args.rid, iova: args.iova, pasid: args.pasid, access: args.access ?? "read" }, "request", tool, vendor);
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^request /, "--"));
  }
  const report = walk(request);
  if (json) io.out(JSON.stringify(walkJson(report, steps)));
  else {
    io.out(walkLine(request, report));
    for (const row of walkTable(report)) io.out(row);
  }
  return 0;
}

export function registerWalk(program: Command, ctx: CliContext): void {
  withJson(program.command("walk").description("translate from guest-memory dumps as the hardware would, given the registers the guest wrote"))
    .requiredOption("--vendor <id>", "the vendor")
    .requiredOption(
      "--memory <file[@base]>",
      "guest memory: a raw image (QEMU pmemsave) at BASE, or an ELF core (QEMU dump-guest-memory, kdump's vmcore) placed by its PT_LOAD segments; gzip of either; repeat for RAM split in ranges",
      (v: string, all: string[] = []) => [...all, v],
    )
    .option("--memory-base <address>", "guest-physical address of raw images given without @BASE (default 0)")
    .option("--reg <name=value>", "a register the guest programmed (repeatable; walk names the ones it takes)", (v: string, all: string[] = []) => [...all, v])
    .option("--sid <id>", "SMMUv3 StreamID")
    .option("--devid <id>", "AMD-Vi DeviceID (a number or bus:dev.fn)")
    .option("--rid <id>", "requester id (a number or bus:dev.fn)")
    .option("--bdf <bdf>", "PCI requester as [segment:]bus:dev.fn")
    .option("--pasid <n>", "PASID")
    .option("--ssid <n>", "SMMUv3 SubstreamID")
    .option("--iova <address>", "the address the device used")
    .addOption(new Option("--access <kind>", "read or write").choices(["read", "write"]).default("read"))
    .option("--steps", "show every entry each walk read (JSON: steps where the vendor names them, and every read)")
    .option("--requests <file>", "many requests, one JSON object per line ({\"rid\", \"iova\", \"pasid\", \"access\"}); - reads stdin as lines arrive")
    .action(async (opts: { json?: boolean; vendor: string; memory: string[]; memoryBase?: string; reg?: string[]; sid?: string; devid?: string; rid?: string; bdf?: string; pasid?: string; ssid?: string; iova?: string; access: string; requests?: string; steps?: boolean }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const plugin = await oneVendor(ctx, io, json, opts.vendor);
      const ids = [opts.sid, opts.devid, opts.rid, opts.bdf].filter((x) => x !== undefined);
      if (ids.length > 1) throw new UsageError("give one of --sid, --devid, --rid, --bdf");
      ctx.exit(
        await walkCommand(io, plugin, { memory: opts.memory, memoryBase: opts.memoryBase, reg: opts.reg, rid: ids[0], pasid: opts.pasid ?? opts.ssid, iova: opts.iova, access: opts.access, requests: opts.requests, steps: opts.steps }, json),
      );
    });
}
