import { bytesToHex, sameBytes, toHexNumber } from "../format/hex.js";
import type { Trace } from "../format/trace-header.js";
import type { DmaAnswer, InterruptSeen, TraceOp } from "../format/trace-op.js";
import type { Answer } from "./replay-target.js";

/**
 * Who is wrong when a target and the model disagree: the model deviates from the specification (a defect to fix
 * here), the target deviates from it (recorded with the specification's section and the target's source, never
 * copied), or the specification leaves the behaviour open (implementation-defined values, optional features).
 */
export type Classification = "model-deviates" | "target-deviates" | "open";

/** An operation whose answer differed from the trace's expectation. */
export interface Divergence {
  /** Index of the operation in the trace (0-based); its line in the file is index + 2. */
  readonly index: number;
  readonly op: TraceOp;
  readonly expected: Answer;
  readonly actual: Answer;
  /** The catalogued difference that explains it, if one does. */
  readonly known?: { readonly id: string; readonly classification: Classification; readonly summary: string };
}

/** What a known difference sees to decide whether it explains a divergence. */
export interface DivergenceContext {
  readonly trace: Trace;
  readonly index: number;
  readonly op: TraceOp;
  readonly expected: Answer;
  readonly actual: Answer;
  /** For a register access inside an IOMMU block of the header: the block's vendor and the offset in it. */
  readonly register?: { readonly vendor: string; readonly offset: number };
}

/** One entry of a catalogue of known differences between the model and a target. */
export interface KnownDifference {
  readonly id: string;
  readonly classification: Classification;
  /** One line: what differs. */
  readonly summary: string;
  matches(context: DivergenceContext): boolean;
}

function sameInterrupts(a: readonly InterruptSeen[], b: readonly InterruptSeen[]): boolean {
  return a.length === b.length && a.every((x, i) => x.vector === b[i]!.vector && x.destination === b[i]!.destination);
}

function sameDma(a: DmaAnswer, b: DmaAnswer): boolean {
  if (a.ok !== b.ok) return false;
  if (!a.ok || !b.ok) return true;
  return a.data === undefined || b.data === undefined || sameBytes(a.data, b.data);
}

/** Whether a target's answer agrees with the expectation for `op`. */
export function sameAnswer(op: TraceOp, expected: Answer, actual: Answer): boolean {
  switch (op.op) {
    case "mem-read":
      return expected instanceof Uint8Array && actual instanceof Uint8Array && sameBytes(expected, actual);
    case "mmio-read":
    case "pci-read":
    case "hypercall":
      return typeof expected === "bigint" && expected === actual;
    case "dma":
      return typeof expected === "object" && "ok" in expected && typeof actual === "object" && "ok" in actual && sameDma(expected, actual);
    case "interrupts":
      return Array.isArray(expected) && Array.isArray(actual) && sameInterrupts(expected as InterruptSeen[], actual as InterruptSeen[]);
    default:
      return true;
  }
}

/** An answer as text for reports: hex for bytes and values, `ok`/`blocked` for DMA, vector@destination for interrupts. */
export function answerText(answer: Answer): string {
  if (answer instanceof Uint8Array) return bytesToHex(answer);
  if (typeof answer === "bigint") return toHexNumber(answer);
  if (Array.isArray(answer)) return `[${(answer as InterruptSeen[]).map((i) => `0x${i.vector.toString(16)}@${i.destination}`).join(", ")}]`;
  const dma = answer as DmaAnswer;
  if (!dma.ok) return "blocked";
  return dma.data === undefined ? "ok" : `ok ${bytesToHex(dma.data)}`;
}

/** An answer as JSON (the same text as the trace format uses). */
export function answerJson(answer: Answer): unknown {
  if (answer instanceof Uint8Array) return bytesToHex(answer);
  if (typeof answer === "bigint") return toHexNumber(answer);
  if (Array.isArray(answer)) return (answer as InterruptSeen[]).map((i) => ({ vector: i.vector, destination: i.destination }));
  const dma = answer as DmaAnswer;
  return dma.ok ? (dma.data === undefined ? { ok: true } : { ok: true, data: bytesToHex(dma.data) }) : { ok: false };
}

/** The expectation an operation carries, if it carries one. */
export function expectationOf(op: TraceOp): Answer | undefined {
  switch (op.op) {
    case "mem-read":
    case "mmio-read":
    case "pci-read":
    case "dma":
    case "interrupts":
    case "hypercall":
      return op.expect;
    default:
      return undefined;
  }
}
