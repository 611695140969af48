import type { GuestMemory } from "@viommu/core";
import { littleEndian } from "../format/hex.js";
import type { TraceOp } from "../format/trace-op.js";

/** Where recorded operations go. */
export interface OpSink {
  record(op: TraceOp): void;
}

function bytesOfWords(words: Uint32Array): Uint8Array {
  const out = new Uint8Array(words.length * 4);
  for (let i = 0; i < words.length; i++) out.set(littleEndian(BigInt(words[i]! >>> 0), 4), i * 4);
  return out;
}

type Method = (...args: never[]) => unknown;

/**
 * How each guest access of `GuestMemory` becomes a trace operation. Called after the access succeeded, with its
 * arguments and result; an access that threw (a driver bug: outside RAM) is not recorded.
 */
const recorders: Record<string, (args: readonly unknown[], result: unknown) => TraceOp> = {
  read8: ([a], r) => ({ op: "mem-read", addr: a as number, len: 1, expect: Uint8Array.of(r as number) }),
  read16: ([a], r) => ({ op: "mem-read", addr: a as number, len: 2, expect: littleEndian(BigInt(r as number), 2) }),
  read32: ([a], r) => ({ op: "mem-read", addr: a as number, len: 4, expect: littleEndian(BigInt((r as number) >>> 0), 4) }),
  read64: ([a], r) => ({ op: "mem-read", addr: a as number, len: 8, expect: littleEndian(r as bigint, 8) }),
  read64Halves: ([a, out]) => ({ op: "mem-read", addr: a as number, len: 8, expect: bytesOfWords((out as Uint32Array).subarray(0, 2)) }),
  readWords: ([a], r) => ({ op: "mem-read", addr: a as number, len: (r as Uint32Array).length * 4, expect: bytesOfWords(r as Uint32Array) }),
  readBytes: ([a, len], r) => ({ op: "mem-read", addr: a as number, len: len as number, expect: (r as Uint8Array).slice(0, len as number) }),
  write8: ([a, v]) => ({ op: "mem-write", addr: a as number, data: Uint8Array.of((v as number) & 0xff) }),
  write16: ([a, v]) => ({ op: "mem-write", addr: a as number, data: littleEndian(BigInt((v as number) & 0xffff), 2) }),
  write32: ([a, v]) => ({ op: "mem-write", addr: a as number, data: littleEndian(BigInt((v as number) >>> 0), 4) }),
  write64: ([a, v]) => ({ op: "mem-write", addr: a as number, data: littleEndian(BigInt.asUintN(64, BigInt(v as bigint | number)), 8) }),
  write64Halves: ([a, lo, hi]) => ({ op: "mem-write", addr: a as number, data: bytesOfWords(Uint32Array.of(lo as number, hi as number)) }),
  writeWords: ([a, words]) => ({ op: "mem-write", addr: a as number, data: bytesOfWords(words as Uint32Array) }),
  writeBytes: ([a, bytes]) => ({ op: "mem-write", addr: a as number, data: (bytes as Uint8Array).slice() }),
  fill: ([a, len, value]) => ({ op: "mem-fill", addr: a as number, len: len as number, byte: ((value as number | undefined) ?? 0) & 0xff }),
  setShared: ([a, len, shared]) => ({ op: "mem-share", addr: a as number, len: len as number, shared: shared as boolean }),
};

/**
 * Methods made of recorded accesses: run against the proxy so the accesses inside them are what is recorded
 * (loading an image writes only its nonzero pages).
 */
const composed = new Set(["loadImage"]);

/**
 * A view of `memory` that records every guest access made through it into `sink`, with what it read as the
 * expectation. Each access is recorded once, at the outermost call (a `read16` is one two-byte read, not the
 * `readBytes` it is made of). Host-side members (pinning, backing, queries) pass through unrecorded. Zero-length
 * accesses change nothing and are not recorded.
 */
export function recordingMemory(memory: GuestMemory, sink: OpSink): GuestMemory {
  const wrapped = new Map<PropertyKey, Method>();
  const proxy: GuestMemory = new Proxy(memory, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      const known = wrapped.get(prop);
      if (known !== undefined) return known;
      const fn = value as Method;
      const recorder = typeof prop === "string" ? recorders[prop] : undefined;
      let method: Method;
      if (recorder !== undefined) {
        method = (...args: never[]) => {
          const result = fn.apply(target, args);
          const op = recorder(args, result);
          if (!("len" in op) || op.len > 0) {
            if (!(op.op === "mem-write" && op.data.length === 0)) sink.record(op);
          }
          return result;
        };
      } else if (typeof prop === "string" && composed.has(prop)) {
        method = (...args: never[]) => fn.apply(proxy, args);
      } else {
        method = fn.bind(target) as Method;
      }
      wrapped.set(prop, method);
      return method;
    },
  });
  return proxy;
}
