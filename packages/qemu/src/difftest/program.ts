import type { VendorPlugin } from "@viommu/core";
import { ModelTarget, sameBytes, type DmaOp, type Trace, type TraceHeader, type TraceOp } from "@viommu/trace";
import type { QemuVendor } from "../machines/qemu-machine.js";

/** A deterministic random source (mulberry32): the same seed gives the same program everywhere. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e37_79b9;
  }

  /** A 32-bit unsigned value. */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b_79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }

  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p;
  }
}

/** The seed of case `index` of a run seeded `seed`. */
export function caseSeed(seed: number, index: number): number {
  return (Math.imul(seed >>> 0, 0x9e37_79b1) ^ Math.imul(index + 1, 0x85eb_ca77)) >>> 0;
}

const DRIVER_POOL = 32 * 2 ** 20;

/** Where the program proper starts: after the driver's bring-up (the workload's mark). */
function programStart(ops: readonly TraceOp[]): number {
  let marks = 0;
  for (let i = 0; i < ops.length; i++) if (ops[i]!.op === "mark" && ++marks === 2) return i + 1;
  return 0;
}

/** Register blocks hostile writes may land in: the register page(s) the guest programs. */
const REGISTER_SPAN: Record<QemuVendor, number> = { vtd: 0x1000, "amd-vi": 0x4000, smmuv3: 0x2_0000 };

function flipBits(value: bigint, bits: number, rng: Rng, lowBias: boolean): bigint {
  let v = value;
  const flips = 1 + rng.below(3);
  for (let i = 0; i < flips; i++) {
    const bit = lowBias && rng.chance(0.5) ? rng.below(Math.min(12, bits)) : rng.below(bits);
    v ^= 1n << BigInt(bit);
  }
  return v;
}

/**
 * Structured mutations of a recorded program, each described: a word of a table or descriptor the driver wrote
 * (entry flags more often than addresses), a register value the driver wrote, a DMA's address or requester id, a
 * hostile register write inserted, an operation (a flush, a write) left out.
 */
export function mutate(trace: Trace, vendor: QemuVendor, rng: Rng, count: number): { ops: TraceOp[]; mutations: string[] } {
  const ops = trace.ops.slice();
  const start = programStart(ops);
  const ram = trace.header.machine.ram[0]!;
  const pool = ram.base + ram.size - DRIVER_POOL;
  const block = trace.header.machine.iommus[0]!;
  const rids = trace.header.machine.devices.map((d) => d.rid);
  const mutations: string[] = [];
  const indices = (pred: (op: TraceOp, i: number) => boolean): number[] => ops.flatMap((op, i) => (i >= start && pred(op, i) ? [i] : []));
  for (let m = 0; m < count; m++) {
    const kind = rng.below(6);
    if (kind === 0) {
      const candidates = indices((op) => op.op === "mem-write" && op.addr >= pool && op.data.length >= 8);
      if (candidates.length === 0) continue;
      const i = rng.pick(candidates);
      const op = ops[i] as Extract<TraceOp, { op: "mem-write" }>;
      const word = rng.below(Math.floor(op.data.length / 8)) * 8;
      const data = op.data.slice();
      let v = 0n;
      for (let b = 7; b >= 0; b--) v = (v << 8n) | BigInt(data[word + b]!);
      v = flipBits(v, 64, rng, true);
      for (let b = 0; b < 8; b++) data[word + b] = Number((v >> BigInt(8 * b)) & 0xffn);
      ops[i] = { ...op, data };
      mutations.push(`line ${i + 2}: table/descriptor word at 0x${(op.addr + word).toString(16)} became 0x${v.toString(16)}`);
    } else if (kind === 1) {
      const candidates = indices((op) => op.op === "mmio-write");
      if (candidates.length === 0) continue;
      const i = rng.pick(candidates);
      const op = ops[i] as Extract<TraceOp, { op: "mmio-write" }>;
      const value = flipBits(op.value, op.size * 8, rng, false);
      ops[i] = { ...op, value };
      mutations.push(`line ${i + 2}: register write at 0x${op.addr.toString(16)} became 0x${value.toString(16)}`);
    } else if (kind === 2 || kind === 3) {
      const candidates = indices((op) => op.op === "dma");
      if (candidates.length === 0) continue;
      const i = rng.pick(candidates);
      const op = ops[i] as DmaOp;
      if (kind === 3 && rids.length > 1) {
        const rid = rng.pick(rids.filter((r) => r !== op.rid));
        ops[i] = { ...op, rid };
        mutations.push(`line ${i + 2}: DMA by 0x${rid.toString(16)} instead of 0x${op.rid.toString(16)}`);
        continue;
      }
      const choice = rng.below(3);
      const bit = 2 ** rng.below(48);
      // Bit flips by arithmetic: `^` would cut the address to 32 bits.
      const flipped = Math.floor(op.iova / bit) % 2 === 1 ? op.iova - bit : op.iova + bit;
      const iova = choice === 0 ? Math.max(0, op.iova + (rng.chance(0.5) ? 0x1000 : -0x1000)) : choice === 1 ? flipped : rng.below(2 ** 18) * 0x1000 + (op.iova % 0x1000);
      ops[i] = { ...op, iova };
      mutations.push(`line ${i + 2}: DMA at 0x${iova.toString(16)} instead of 0x${op.iova.toString(16)}`);
    } else if (kind === 4) {
      const at = start + rng.below(Math.max(1, ops.length - start));
      const offset = rng.below(REGISTER_SPAN[vendor] / 4) * 4;
      const value = BigInt(rng.next());
      ops.splice(at, 0, { op: "mmio-write", addr: block.base + offset, size: 4, value });
      mutations.push(`line ${at + 2}: inserted register write 0x${value.toString(16)} at offset 0x${offset.toString(16)}`);
    } else {
      const candidates = indices((op) => op.op === "mmio-write" || op.op === "mem-write");
      if (candidates.length === 0) continue;
      const i = rng.pick(candidates);
      mutations.push(`line ${i + 2}: left out ${ops[i]!.op} at 0x${(ops[i] as { addr: number }).addr.toString(16)}`);
      ops.splice(i, 1);
    }
  }
  return { ops, mutations };
}

/** Where the vendor's guest-visible fault and queue state is, to read at the end of every program. */
function probe(vendor: QemuVendor, header: TraceHeader, ops: readonly TraceOp[]): TraceOp[] {
  const base = header.machine.iommus[0]!.base;
  const reg = (offset: number): TraceOp => ({ op: "mmio-read", addr: base + offset, size: 4 });
  const lastWrite = (offset: number): bigint | undefined => {
    for (let i = ops.length - 1; i >= 0; i--) {
      const op = ops[i]!;
      if (op.op === "mmio-write" && op.addr === base + offset) return op.value;
    }
    return undefined;
  };
  const ram = header.machine.ram[0]!;
  const entries = (at: number, bytes: number, count: number): TraceOp[] =>
    Array.from({ length: count }, (_, i) => at + i * bytes).filter((a) => a >= ram.base && a + bytes <= ram.base + ram.size).map((addr) => ({ op: "mem-read", addr, len: bytes }) as TraceOp);
  const out: TraceOp[] = [{ op: "mark", label: "probe" }];
  if (vendor === "vtd") {
    // As the driver reads a fault record: the dword with F first, then the rest; all eight the model has.
    for (const o of [0x1c, 0x34, 0x80, 0x88]) out.push(reg(o));
    for (let n = 0; n < 8; n++) for (const o of [0xc, 0x8, 0x4, 0x0]) out.push(reg(0x220 + n * 16 + o));
  } else if (vendor === "amd-vi") {
    for (const o of [0x2000, 0x2008, 0x2010, 0x2018, 0x2020]) out.push(reg(o));
    const log = lastWrite(0x10);
    if (log !== undefined) out.push(...entries(Number(log & 0x000f_ffff_ffff_f000n), 16, 8));
  } else {
    for (const o of [0x60, 0x64, 0x98, 0x9c, 0x100a8, 0x100ac]) out.push(reg(o));
    const q = lastWrite(0xa0);
    if (q !== undefined) out.push(...entries(Number(q & 0x000f_ffff_ffff_ffe0n), 32, 8));
  }
  return out;
}

/**
 * The program with the model's answers as its expectations: every operation runs on a fresh model of the header's
 * machine. A DMA write writes what its device's last read returned (edu can only copy, and a mutation may have
 * changed the read); one with no successful read before it is left out, as is anything the model refuses (outside
 * RAM). The vendor's fault and queue state is read at the end.
 */
export function answeredByModel(
  plugin: VendorPlugin,
  plugins: readonly VendorPlugin[],
  vendor: QemuVendor,
  header: TraceHeader,
  ops: readonly TraceOp[],
): { trace: Trace; modelExceptions: string[] } | undefined {
  const t = ModelTarget.create(plugin, plugins, header);
  if (!t.ok) return undefined;
  const model = t.value;
  const out: TraceOp[] = [];
  const lastRead = new Map<number, { now?: Uint8Array }>();
  const modelExceptions: string[] = [];
  try {
    const cut = ops.findIndex((o) => o.op === "mark" && o.label === "probe");
    for (const op of cut < 0 ? ops : ops.slice(0, cut)) runSync(op);
    for (const op of probe(vendor, header, out)) runSync(op);
  } finally {
    model.dispose();
  }
  return { trace: { header, ops: out }, modelExceptions };

  function runSync(op: TraceOp): void {
    let sent = op;
    if (op.op === "dma" && op.dir === "write") {
      // edu writes what it read last: the bytes of this device's last read, whatever a mutation did to the copy.
      const source = lastRead.get(op.rid);
      if (source?.now === undefined || source.now.length < op.data.length) return;
      if (!sameBytes(op.data, source.now.subarray(0, op.data.length))) sent = { ...op, data: source.now.slice(0, op.data.length) };
    }
    const result = model.answer(sent);
    if (result.status === "failed" && result.message.startsWith("exception escaped the model")) {
      modelExceptions.push(`${JSON.stringify(op.op)}: ${result.message.split("\n")[0]}`);
      // Kept, without an answer, so the finding's trace reproduces the exception when replayed on the model.
      out.push(withoutExpectation(sent));
      return;
    }
    if (result.status === "failed" || result.status === "unsupported") return;
    if (result.status !== "answered") {
      out.push(withoutExpectation(sent));
      return;
    }
    if (sent.op === "dma" && sent.dir === "read") {
      const answer = result.answer as { ok: boolean; data?: Uint8Array };
      lastRead.set(sent.rid, { now: answer.ok ? answer.data : undefined });
    }
    out.push({ ...sent, expect: result.answer } as TraceOp);
  }
}

function withoutExpectation(op: TraceOp): TraceOp {
  if (!("expect" in op)) return op;
  const { expect: _e, ...rest } = op as TraceOp & { expect?: unknown };
  return rest as TraceOp;
}
