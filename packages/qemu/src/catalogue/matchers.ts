import type { DivergenceContext, DmaOp, Trace, TraceOp } from "@viommu/trace";

/** The IOMMU register a divergent operation read, as (vendor, offset in the block), if it is one. */
export function registerRead(c: DivergenceContext, vendor: string): number | undefined {
  if (c.op.op !== "mmio-read" || c.register?.vendor !== vendor) return undefined;
  return c.register.offset;
}

/** The bits an expected and an actual register value differ in (0n when they are not values). */
export function differingBits(c: DivergenceContext): bigint {
  return typeof c.expected === "bigint" && typeof c.actual === "bigint" ? c.expected ^ c.actual : 0n;
}

/** Whether the value answers differ only in `mask`. */
export function differsOnlyIn(c: DivergenceContext, mask: bigint): boolean {
  const d = differingBits(c);
  return d !== 0n && (d & ~mask) === 0n;
}

/** The expected and actual answers of a memory read, if the divergent operation is one. */
export function memoryAnswers(c: DivergenceContext): { expected: Uint8Array; actual: Uint8Array; addr: number } | undefined {
  if (c.op.op !== "mem-read" || !(c.expected instanceof Uint8Array) || !(c.actual instanceof Uint8Array)) return undefined;
  return { expected: c.expected, actual: c.actual, addr: c.op.addr };
}

export function dword(bytes: Uint8Array, index: number): number {
  return ((bytes[index * 4] ?? 0) | ((bytes[index * 4 + 1] ?? 0) << 8) | ((bytes[index * 4 + 2] ?? 0) << 16) | ((bytes[index * 4 + 3] ?? 0) << 24)) >>> 0;
}

/** The device operation (DMA or MSI) closest before the divergent operation. */
export function lastDeviceOp(c: DivergenceContext): { index: number; op: DmaOp | Extract<TraceOp, { op: "msi" }> } | undefined {
  for (let i = c.index - 1; i >= 0; i--) {
    const op = c.trace.ops[i]!;
    if (op.op === "dma" || op.op === "msi") return { index: i, op };
  }
  return undefined;
}

/** The last value the trace wrote to the IOMMU register at `offset` before the divergent operation. */
export function lastRegisterWrite(c: DivergenceContext, vendor: string, offset: number): bigint | undefined {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === vendor);
  if (block === undefined) return undefined;
  for (let i = c.index - 1; i >= 0; i--) {
    const op = c.trace.ops[i]!;
    if (op.op === "mmio-write" && op.addr === block.base + offset) return op.value;
  }
  return undefined;
}

/** Operations within `span` after the divergent one, with their index. */
export function following(c: DivergenceContext, span: number): { index: number; op: TraceOp }[] {
  const out: { index: number; op: TraceOp }[] = [];
  for (let i = c.index + 1; i < Math.min(c.trace.ops.length, c.index + 1 + span); i++) out.push({ index: i, op: c.trace.ops[i]! });
  return out;
}

/** Guest memory as the trace wrote it before operation `end` (RAM is zero at the start of a trace). */
export function traceBytes(trace: Trace, end: number, addr: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < end; i++) {
    const op = trace.ops[i]!;
    // Only the overlap is copied: a trace writes pages of data, and matchers read a few bytes many times.
    if (op.op === "mem-write") {
      const from = Math.max(op.addr, addr);
      const to = Math.min(op.addr + op.data.length, addr + len);
      if (from < to) out.set(op.data.subarray(from - op.addr, to - op.addr), from - addr);
    } else if (op.op === "mem-fill") {
      const from = Math.max(op.addr, addr);
      const to = Math.min(op.addr + op.len, addr + len);
      if (from < to) out.fill(op.byte, from - addr, to - addr);
    }
  }
  return out;
}

/** Whether `x` is defined and within [lo, hi]. */
export const inRange = (x: number | undefined, lo: number, hi: number): x is number => x !== undefined && x >= lo && x <= hi;

/**
 * The 64-bit IOMMU register at `offset` of the `vendor` block as the trace's writes before operation `end` left
 * it: every write of any size that overlaps it merged in order (0 before any; read-only bits are not modelled).
 */
export function registerValue(trace: Trace, end: number, vendor: string, offset: number): bigint {
  const block = trace.header.machine.iommus.find((b) => b.vendor === vendor);
  if (block === undefined) return 0n;
  const at = block.base + offset;
  let value = 0n;
  for (let i = 0; i < end; i++) {
    const op = trace.ops[i]!;
    if (op.op !== "mmio-write" || op.addr + op.size <= at || op.addr >= at + 8) continue;
    const shift = (op.addr - at) * 8;
    const bits = BigInt(op.size * 8);
    const written = shift >= 0 ? op.value << BigInt(shift) : op.value >> BigInt(-shift);
    const mask = shift >= 0 ? ((1n << bits) - 1n) << BigInt(shift) : ((1n << bits) - 1n) >> BigInt(-shift);
    value = (value & ~mask) | (written & mask);
  }
  return value & 0xffff_ffff_ffff_ffffn;
}
