import { bytesToHex, hexToBytes, parseBigUint, toHexNumber } from "./hex.js";
import { TRACE_FORMAT, TRACE_VERSION, type IommuBlock, type RamRange, type Trace, type TraceDevice, type TraceHeader, type TraceModelConfig } from "./trace-header.js";
import type { AccessSize, DmaAnswer, InterruptSeen, TraceOp } from "./trace-op.js";

/**
 * The longest byte run one operation may carry or ask for (a fill, a read, a DMA): a trace is input from
 * anywhere, and a replay must not allocate without bound because a line says so.
 */
export const MAX_OP_BYTES = 64 * 2 ** 20;

/** Why a trace could not be read: the line (1-based) and what is wrong with it. */
export interface TraceParseError {
  readonly line: number;
  readonly message: string;
}

export type TraceParseResult = { readonly ok: true; readonly trace: Trace } | { readonly ok: false; readonly error: TraceParseError };

// ---- writing ----

function dmaOutcomeJson(outcome: DmaAnswer): Record<string, unknown> {
  return outcome.ok ? (outcome.data === undefined ? { ok: true } : { ok: true, data: bytesToHex(outcome.data) }) : { ok: false };
}

/** One operation as the JSON object of its line. */
export function opToJson(op: TraceOp): Record<string, unknown> {
  switch (op.op) {
    case "mem-write":
      return { op: op.op, addr: toHexNumber(op.addr), data: bytesToHex(op.data) };
    case "mem-fill":
      return { op: op.op, addr: toHexNumber(op.addr), len: op.len, byte: op.byte };
    case "mem-read":
      return withExpect({ op: op.op, addr: toHexNumber(op.addr), len: op.len }, op.expect === undefined ? undefined : bytesToHex(op.expect));
    case "mem-share":
      return { op: op.op, addr: toHexNumber(op.addr), len: op.len, shared: op.shared };
    case "mmio-write":
      return { op: op.op, addr: toHexNumber(op.addr), size: op.size, value: toHexNumber(op.value) };
    case "mmio-read":
      return withExpect({ op: op.op, addr: toHexNumber(op.addr), size: op.size }, op.expect === undefined ? undefined : toHexNumber(op.expect));
    case "pci-write":
      return { op: op.op, rid: toHexNumber(op.rid), offset: toHexNumber(op.offset), size: op.size, value: toHexNumber(op.value) };
    case "pci-read":
      return withExpect({ op: op.op, rid: toHexNumber(op.rid), offset: toHexNumber(op.offset), size: op.size }, op.expect === undefined ? undefined : toHexNumber(op.expect));
    case "dma": {
      const base: Record<string, unknown> = { op: op.op, dir: op.dir, rid: toHexNumber(op.rid) };
      if (op.pasid !== undefined) base.pasid = toHexNumber(op.pasid);
      base.iova = toHexNumber(op.iova);
      if (op.dir === "read") base.len = op.len;
      else base.data = bytesToHex(op.data);
      return withExpect(base, op.expect === undefined ? undefined : dmaOutcomeJson(op.expect));
    }
    case "msi":
      return { op: op.op, rid: toHexNumber(op.rid), address: toHexNumber(op.address), data: toHexNumber(op.data) };
    case "interrupts":
      return withExpect({ op: op.op }, op.expect?.map((i) => ({ vector: i.vector, destination: i.destination })));
    case "advance":
      return { op: op.op, ns: op.ns };
    case "hypercall":
      return withExpect(
        { op: op.op, input: toHexNumber(op.input), inputGpa: toHexNumber(op.inputGpa), outputGpa: toHexNumber(op.outputGpa) },
        op.expect === undefined ? undefined : toHexNumber(op.expect),
      );
    case "mark":
      return { op: op.op, label: op.label };
  }
}

function withExpect(base: Record<string, unknown>, expect: unknown): Record<string, unknown> {
  if (expect !== undefined) base.expect = expect;
  return base;
}

export function headerToJson(header: TraceHeader): Record<string, unknown> {
  const out: Record<string, unknown> = {
    format: TRACE_FORMAT,
    version: TRACE_VERSION,
    machine: {
      ram: header.machine.ram.map((r) => ({ base: toHexNumber(r.base), size: toHexNumber(r.size) })),
      iommus: header.machine.iommus.map((b) => ({ vendor: b.vendor, base: toHexNumber(b.base), size: toHexNumber(b.size) })),
      devices: header.machine.devices.map((d) => (d.pasidBits ? { rid: toHexNumber(d.rid), pasidBits: d.pasidBits } : { rid: toHexNumber(d.rid) })),
    },
  };
  if (header.model !== undefined) out.model = { ...header.model };
  if (header.description !== undefined) out.description = header.description;
  if (header.producer !== undefined) out.producer = header.producer;
  return out;
}

/** The trace as JSON lines: the header, then one operation per line; a final newline. */
export function formatTrace(trace: Trace): string {
  const lines = [JSON.stringify(headerToJson(trace.header))];
  for (const op of trace.ops) lines.push(JSON.stringify(opToJson(op)));
  return `${lines.join("\n")}\n`;
}

// ---- reading ----

class LineError extends Error {}

function fail(message: string): never {
  throw new LineError(message);
}

function object(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail(`${what} is not an object`);
  return value as Record<string, unknown>;
}

function uint(o: Record<string, unknown>, key: string, max: number = Number.MAX_SAFE_INTEGER): number {
  const v = parseBigUint(o[key]);
  if (v === undefined) fail(`"${key}" is missing or not a non-negative integer`);
  if (v > BigInt(max)) fail(`"${key}" ${toHexNumber(v)} is above ${toHexNumber(max)}`);
  return Number(v);
}

function optionalUint(o: Record<string, unknown>, key: string, max: number): number | undefined {
  return o[key] === undefined ? undefined : uint(o, key, max);
}

function big(o: Record<string, unknown>, key: string, bits: number): bigint {
  const v = parseBigUint(o[key]);
  if (v === undefined) fail(`"${key}" is missing or not a non-negative integer`);
  if (v >= 1n << BigInt(bits)) fail(`"${key}" ${toHexNumber(v)} does not fit in ${bits} bits`);
  return v;
}

function bytes(value: unknown, key: string): Uint8Array {
  if (typeof value !== "string") fail(`"${key}" is not a string of hex digits`);
  const b = hexToBytes(value);
  if (b === undefined) fail(`"${key}" is not an even-length string of hex digits`);
  if (b.length > MAX_OP_BYTES) fail(`"${key}" holds ${b.length} bytes, more than ${MAX_OP_BYTES}`);
  return b;
}

function length(o: Record<string, unknown>, key: string): number {
  const n = uint(o, key, MAX_OP_BYTES);
  if (n === 0) fail(`"${key}" is 0`);
  return n;
}

function accessSize(o: Record<string, unknown>, allowed: readonly number[]): number {
  const s = o.size;
  if (typeof s !== "number" || !allowed.includes(s)) fail(`"size" must be one of ${allowed.join(", ")}`);
  return s;
}

function dmaOutcome(value: unknown, dir: "read" | "write"): DmaAnswer {
  const o = object(value, '"expect"');
  if (o.ok === false) return { ok: false };
  if (o.ok !== true) fail('"expect.ok" is not true or false');
  if (o.data === undefined) return { ok: true };
  if (dir === "write") fail('"expect.data" is only for reads');
  return { ok: true, data: bytes(o.data, "expect.data") };
}

function interrupts(value: unknown): InterruptSeen[] {
  if (!Array.isArray(value)) fail('"expect" of interrupts is not an array');
  return value.map((v, i) => {
    const o = object(v, `interrupt ${i}`);
    return { vector: uint(o, "vector", 0xffff_ffff), destination: uint(o, "destination", 0xffff_ffff) };
  });
}

/** Decodes one operation line's object; throws LineError with the reason. */
export function opFromJson(value: unknown): TraceOp {
  const o = object(value, "the line");
  switch (o.op) {
    case "mem-write":
      return { op: "mem-write", addr: uint(o, "addr"), data: bytes(o.data, "data") };
    case "mem-fill": {
      const byte = uint(o, "byte", 0xff);
      return { op: "mem-fill", addr: uint(o, "addr"), len: length(o, "len"), byte };
    }
    case "mem-read": {
      const len = length(o, "len");
      const expect = o.expect === undefined ? undefined : bytes(o.expect, "expect");
      if (expect !== undefined && expect.length !== len) fail(`"expect" holds ${expect.length} bytes for a read of ${len}`);
      return expect === undefined ? { op: "mem-read", addr: uint(o, "addr"), len } : { op: "mem-read", addr: uint(o, "addr"), len, expect };
    }
    case "mem-share": {
      if (typeof o.shared !== "boolean") fail('"shared" is not true or false');
      return { op: "mem-share", addr: uint(o, "addr"), len: length(o, "len"), shared: o.shared };
    }
    case "mmio-write": {
      const size = accessSize(o, [1, 2, 4, 8]) as AccessSize;
      return { op: "mmio-write", addr: uint(o, "addr"), size, value: big(o, "value", size * 8) };
    }
    case "mmio-read": {
      const size = accessSize(o, [1, 2, 4, 8]) as AccessSize;
      const base = { op: "mmio-read" as const, addr: uint(o, "addr"), size };
      return o.expect === undefined ? base : { ...base, expect: big(o, "expect", size * 8) };
    }
    case "pci-write": {
      const size = accessSize(o, [1, 2, 4]) as 1 | 2 | 4;
      const offset = uint(o, "offset", 0xfff);
      if (offset % size !== 0) fail(`"offset" 0x${offset.toString(16)} is not aligned to the access size`);
      return { op: "pci-write", rid: uint(o, "rid", 0xffff), offset, size, value: big(o, "value", size * 8) };
    }
    case "pci-read": {
      const size = accessSize(o, [1, 2, 4]) as 1 | 2 | 4;
      const offset = uint(o, "offset", 0xfff);
      if (offset % size !== 0) fail(`"offset" 0x${offset.toString(16)} is not aligned to the access size`);
      const base = { op: "pci-read" as const, rid: uint(o, "rid", 0xffff), offset, size };
      return o.expect === undefined ? base : { ...base, expect: big(o, "expect", size * 8) };
    }
    case "dma": {
      const rid = uint(o, "rid", 0xffff);
      const pasid = optionalUint(o, "pasid", 0xf_ffff);
      const iova = uint(o, "iova");
      if (o.dir === "read") {
        const len = length(o, "len");
        const expect = o.expect === undefined ? undefined : dmaOutcome(o.expect, "read");
        if (expect?.ok === true && expect.data !== undefined && expect.data.length !== len) fail(`"expect.data" holds ${expect.data.length} bytes for a read of ${len}`);
        return { op: "dma", dir: "read", rid, ...(pasid === undefined ? {} : { pasid }), iova, len, ...(expect === undefined ? {} : { expect }) };
      }
      if (o.dir === "write") {
        const data = bytes(o.data, "data");
        if (data.length === 0) fail('"data" is empty');
        const expect = o.expect === undefined ? undefined : dmaOutcome(o.expect, "write");
        return { op: "dma", dir: "write", rid, ...(pasid === undefined ? {} : { pasid }), iova, data, ...(expect === undefined ? {} : { expect }) };
      }
      return fail('"dir" is not "read" or "write"');
    }
    case "msi":
      return { op: "msi", rid: uint(o, "rid", 0xffff), address: uint(o, "address"), data: uint(o, "data", 0xffff_ffff) };
    case "interrupts":
      return o.expect === undefined ? { op: "interrupts" } : { op: "interrupts", expect: interrupts(o.expect) };
    case "advance":
      return { op: "advance", ns: uint(o, "ns") };
    case "hypercall": {
      const base = { op: "hypercall" as const, input: big(o, "input", 64), inputGpa: uint(o, "inputGpa"), outputGpa: uint(o, "outputGpa") };
      return o.expect === undefined ? base : { ...base, expect: big(o, "expect", 64) };
    }
    case "mark":
      if (typeof o.label !== "string") fail('"label" is not a string');
      return { op: "mark", label: o.label };
    default:
      return fail(`unknown operation ${JSON.stringify(o.op)}`);
  }
}

function ramRange(v: unknown, i: number): RamRange {
  const o = object(v, `machine.ram[${i}]`);
  const r = { base: uint(o, "base"), size: uint(o, "size") };
  if (r.size === 0 || r.base + r.size > Number.MAX_SAFE_INTEGER) fail(`machine.ram[${i}] is empty or ends beyond 2^53`);
  return r;
}

function iommuBlock(v: unknown, i: number): IommuBlock {
  const o = object(v, `machine.iommus[${i}]`);
  if (typeof o.vendor !== "string" || o.vendor === "") fail(`machine.iommus[${i}].vendor is not a vendor id`);
  return { vendor: o.vendor, base: uint(o, "base"), size: uint(o, "size", 2 ** 32) };
}

function device(v: unknown, i: number): TraceDevice {
  const o = object(v, `machine.devices[${i}]`);
  const pasidBits = optionalUint(o, "pasidBits", 20);
  return pasidBits === undefined ? { rid: uint(o, "rid", 0xffff) } : { rid: uint(o, "rid", 0xffff), pasidBits };
}

function list<T>(value: unknown, what: string, each: (v: unknown, i: number) => T): T[] {
  if (!Array.isArray(value)) fail(`${what} is not an array`);
  return value.map(each);
}

function modelConfig(value: unknown): TraceModelConfig {
  const o = object(value, '"model"');
  const out: { -readonly [K in keyof TraceModelConfig]: TraceModelConfig[K] } = {};
  if (o.mode !== undefined) {
    if (o.mode !== "nested" && o.mode !== "shadow" && o.mode !== "ir-only") fail('"model.mode" is not nested, shadow or ir-only');
    out.mode = o.mode;
  }
  if (o.shadowBackend !== undefined) {
    if (o.shadowBackend !== "type1" && o.shadowBackend !== "iommufd") fail('"model.shadowBackend" is not type1 or iommufd');
    out.shadowBackend = o.shadowBackend;
  }
  if (o.eventInterrupts !== undefined) {
    if (o.eventInterrupts !== "vmm" && o.eventInterrupts !== "direct") fail('"model.eventInterrupts" is not vmm or direct');
    out.eventInterrupts = o.eventInterrupts;
  }
  if (o.dma !== undefined) {
    if (o.dma !== "passthrough" && o.dma !== "emulated") fail('"model.dma" is not passthrough or emulated');
    out.dma = o.dma;
  }
  if (o.seed !== undefined) out.seed = uint(o, "seed", 0xffff_ffff);
  if (o.vcpus !== undefined) out.vcpus = uint(o, "vcpus", 4096);
  return out;
}

/** Decodes the header line's object; throws LineError with the reason. */
export function headerFromJson(value: unknown): TraceHeader {
  const o = object(value, "the header");
  if (o.format !== TRACE_FORMAT) fail(`the first line is not a ${TRACE_FORMAT} header`);
  if (o.version !== TRACE_VERSION) fail(`trace version ${JSON.stringify(o.version)} is not ${TRACE_VERSION}, the version this reader knows`);
  const m = object(o.machine, '"machine"');
  const machine = {
    ram: list(m.ram, "machine.ram", ramRange),
    iommus: list(m.iommus, "machine.iommus", iommuBlock),
    devices: list(m.devices, "machine.devices", device),
  };
  const header: { -readonly [K in keyof TraceHeader]: TraceHeader[K] } = { format: TRACE_FORMAT, version: TRACE_VERSION, machine };
  if (o.model !== undefined) header.model = modelConfig(o.model);
  if (typeof o.description === "string") header.description = o.description;
  if (typeof o.producer === "string") header.producer = o.producer;
  return header;
}

/**
 * Reads a JSON-lines trace. Blank lines are skipped; unknown fields are ignored (producers may annotate);
 * anything else malformed is an error naming its line. Never throws on its input.
 */
export function parseTrace(text: string): TraceParseResult {
  const lines = text.split("\n");
  let header: TraceHeader | undefined;
  const ops: TraceOp[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      return { ok: false, error: { line: i + 1, message: "not a JSON value" } };
    }
    try {
      if (header === undefined) header = headerFromJson(value);
      else ops.push(opFromJson(value));
    } catch (e) {
      if (e instanceof LineError) return { ok: false, error: { line: i + 1, message: e.message } };
      throw e;
    }
  }
  if (header === undefined) return { ok: false, error: { line: 1, message: "the trace is empty (no header line)" } };
  return { ok: true, trace: { header, ops } };
}

/** One operation in its JSON-lines form (for reports). */
export function opText(op: TraceOp): string {
  return JSON.stringify(opToJson(op));
}
