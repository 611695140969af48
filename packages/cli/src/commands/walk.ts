import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { GuestMemory, HostMemory, PAGE_SIZE, type VendorPlugin, type WalkAnswer, type WalkRequest } from "@viommu/core";
import type { Io } from "../io.js";

export interface WalkArgs {
  readonly memory?: string;
  readonly memoryBase?: string;
  readonly reg?: readonly string[];
  readonly rid?: string;
  readonly pasid?: string;
  readonly iova?: string;
  readonly access?: string;
  readonly requests?: string;
}

function parseNumber(text: string, what: string): number {
  const v = Number(BigInt(text.trim()));
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${what} ${text} out of range`);
  return v;
}

/** Guest memory holding a raw guest-physical image (gzip or not) that starts at `base`. */
export function loadImage(path: string, base: number): GuestMemory {
  let bytes: Uint8Array = readFileSync(path);
  if (path.endsWith(".gz") || (bytes[0] === 0x1f && bytes[1] === 0x8b)) bytes = gunzipSync(bytes);
  const size = Math.max(PAGE_SIZE, Math.ceil(bytes.length / PAGE_SIZE) * PAGE_SIZE);
  const memory = new GuestMemory(new HostMemory({ sizeBytes: 2 ** 46 }), 1, { sizeBytes: size, base, backingPageShift: 12 });
  memory.loadImage(bytes, base);
  return memory;
}

/** The shared JSON shape of one walk result: addresses as "0x…" text. */
export function walkJson(a: WalkAnswer): Record<string, unknown> {
  if (!a.ok) return { ok: false, fault: a.fault };
  return { ok: true, output: `0x${a.output.toString(16)}`, pageSize: a.pageSize, read: a.read, write: a.write, ...(a.domain !== undefined ? { domain: a.domain } : {}), ...(a.asid !== undefined ? { asid: a.asid } : {}) };
}

function requestOf(record: Record<string, unknown>): WalkRequest {
  const rid = record.sid ?? record.devid ?? record.rid ?? record.bdf;
  if (rid === undefined || record.iova === undefined) throw new RangeError("a request needs sid/devid/rid and iova");
  const pasid = record.pasid ?? record.ssid;
  return {
    rid: parseNumber(String(rid), "requester id"),
    iova: parseNumber(String(record.iova), "iova"),
    pasid: pasid === undefined ? undefined : parseNumber(String(pasid), "pasid"),
    write: record.access === "write",
  };
}

/** `viommu walk`: translations from a raw guest-memory image and the registers the guest wrote. */
export function walkCommand(io: Io, plugin: VendorPlugin, args: WalkArgs): number {
  const tool = plugin.walk;
  if (tool === undefined) {
    io.err(`${plugin.id} has no table walker`);
    return 2;
  }
  if (args.memory === undefined) {
    io.err("--memory FILE[.gz] is required");
    return 2;
  }
  let walk: (r: WalkRequest) => WalkAnswer;
  try {
    const registers: Record<string, bigint> = {};
    for (const r of args.reg ?? []) {
      const [name, value] = r.split("=");
      if (name === undefined || value === undefined) throw new RangeError(`--reg ${r}: expected NAME=VALUE`);
      registers[name.trim().toUpperCase()] = BigInt(value.trim());
    }
    const memory = loadImage(args.memory, args.memoryBase === undefined ? 0 : parseNumber(args.memoryBase, "--memory-base"));
    const prepared = tool.prepare(memory, registers);
    if (!prepared.ok) {
      io.err(`${prepared.error.errno}: ${prepared.error.message} (registers: ${tool.registers.join(", ")})`);
      return 2;
    }
    walk = prepared.value;
  } catch (e) {
    io.err((e as Error).message);
    return 2;
  }
  if (args.requests !== undefined) {
    let status = 0;
    for (const line of readFileSync(args.requests, "utf8").split("\n")) {
      if (line.trim() === "") continue;
      try {
        io.out(JSON.stringify(walkJson(walk(requestOf(JSON.parse(line) as Record<string, unknown>)))));
      } catch (e) {
        io.out(JSON.stringify({ error: (e as Error).message }));
        status = 1;
      }
    }
    return status;
  }
  try {
    const answer = walk(requestOf({ rid: args.rid, iova: args.iova, pasid: args.pasid, access: args.access ?? "read" }));
    io.out(JSON.stringify(walkJson(answer)));
    return 0;
  } catch (e) {
    io.err((e as Error).message);
    return 2;
  }
}
