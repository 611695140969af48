import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { formatTrace, parseTrace, TRACE_FORMAT, TRACE_VERSION, type Trace, type TraceOp } from "../src/index.js";

const SEED = Number(process.env.VIOMMU_SEED ?? 1);

const header = {
  format: TRACE_FORMAT,
  version: TRACE_VERSION,
  machine: { ram: [{ base: 0x4000_0000, size: 2 ** 30 }], iommus: [{ vendor: "smmuv3", base: 0x0905_0000, size: 0x2_0000 }], devices: [{ rid: 0x20 }, { rid: 0x28, pasidBits: 20 }] },
  model: { mode: "nested", seed: 7, vcpus: 8 },
  description: "every operation once",
  producer: "test",
} as const;

/** One of each operation, with the extremes of each field. */
const ops: TraceOp[] = [
  { op: "mark", label: "start" },
  { op: "mem-write", addr: 0x4100_0000, data: Uint8Array.of(0, 1, 0xfe, 0xff) },
  { op: "mem-fill", addr: 0x4100_1000, len: 4096, byte: 0xa5 },
  { op: "mem-read", addr: 0x4100_0000, len: 4, expect: Uint8Array.of(0, 1, 0xfe, 0xff) },
  { op: "mem-read", addr: 0x4100_0000, len: 2 },
  { op: "mem-share", addr: 0x4100_0000, len: 4096, shared: true },
  { op: "mmio-write", addr: 0x0905_0020, size: 4, value: 0xffff_ffffn },
  { op: "mmio-write", addr: 0x0905_0080, size: 8, value: 0xffff_ffff_ffff_ffffn },
  { op: "mmio-read", addr: 0x0905_0000, size: 8, expect: 0x8000_0000_0000_0001n },
  { op: "mmio-read", addr: 0x0905_0000, size: 1 },
  { op: "pci-write", rid: 0x20, offset: 0x10, size: 4, value: 0x1000_0000n },
  { op: "pci-read", rid: 0x20, offset: 0x2, size: 2, expect: 0x11e8n },
  { op: "dma", dir: "read", rid: 0x20, iova: 2 ** 53 - 1, len: 8, expect: { ok: false } },
  { op: "dma", dir: "read", rid: 0x28, pasid: 0xf_ffff, iova: 0x1000, len: 2, expect: { ok: true, data: Uint8Array.of(7, 8) } },
  { op: "dma", dir: "write", rid: 0x20, iova: 0x1000, data: Uint8Array.of(9), expect: { ok: true } },
  { op: "dma", dir: "write", rid: 0x20, iova: 0x2000, data: Uint8Array.of(9, 10) },
  { op: "msi", rid: 0x20, address: 0xfee0_0010, data: 0x4041 },
  { op: "interrupts", expect: [{ vector: 0x41, destination: 3 }] },
  { op: "interrupts" },
  { op: "advance", ns: 1_000_000 },
  { op: "hypercall", input: 0x1_0000_0044n, inputGpa: 0x1000, outputGpa: 0x2000, expect: 0n },
];

function lines(...objects: unknown[]): string {
  return objects.map((o) => (typeof o === "string" ? o : JSON.stringify(o))).join("\n");
}

const headerJson = JSON.parse(formatTrace({ header, ops: [] }).split("\n")[0]!) as Record<string, unknown>;

describe("the trace format", () => {
  it("writes and reads back every operation exactly", () => {
    const trace: Trace = { header, ops };
    const text = formatTrace(trace);
    expect(text.split("\n")).toHaveLength(ops.length + 2);
    const parsed = parseTrace(text);
    expect(parsed).toEqual({ ok: true, trace });
    expect(formatTrace((parsed as { trace: Trace }).trace)).toBe(text);
  });

  it("writes addresses and values as 0x strings, byte strings as plain hex in memory order", () => {
    const [, , write, , read] = formatTrace({ header, ops }).split("\n");
    expect(JSON.parse(write!)).toEqual({ op: "mem-write", addr: "0x41000000", data: "0001feff" });
    expect(JSON.parse(read!)).toEqual({ op: "mem-read", addr: "0x41000000", len: 4, expect: "0001feff" });
  });

  it("accepts JSON numbers and decimal strings for integers, skips blank lines and ignores unknown fields", () => {
    const text = lines(headerJson, "", { op: "mmio-read", addr: 151322624, size: 4, expect: "16", note: "a producer's annotation" }, "   ");
    expect(parseTrace(text)).toEqual({ ok: true, trace: { header, ops: [{ op: "mmio-read", addr: 0x0905_0000, size: 4, expect: 16n }] } });
  });

  const invalid: [string, unknown, RegExp][] = [
    ["an unknown operation", { op: "poke" }, /unknown operation "poke"/],
    ["a size the access cannot have", { op: "mmio-read", addr: "0x0", size: 3 }, /"size" must be one of 1, 2, 4, 8/],
    ["a value wider than its access", { op: "mmio-write", addr: "0x0", size: 4, value: "0x100000000" }, /does not fit in 32 bits/],
    ["odd hex", { op: "mem-write", addr: "0x0", data: "abc" }, /even-length/],
    ["an expectation of the wrong length", { op: "mem-read", addr: "0x0", len: 4, expect: "00" }, /holds 1 bytes for a read of 4/],
    ["a zero-length read", { op: "mem-read", addr: "0x0", len: 0 }, /"len" is 0/],
    ["a read longer than the limit", { op: "mem-read", addr: "0x0", len: 2 ** 30 }, /above/],
    ["an address beyond 2^53", { op: "mem-read", addr: "0x20000000000000", len: 1 }, /above/],
    ["a negative number", { op: "advance", ns: -1 }, /non-negative integer/],
    ["a requester id above 16 bits", { op: "dma", dir: "read", rid: "0x10000", iova: "0x0", len: 1 }, /above 0xffff/],
    ["a DMA without a direction", { op: "dma", rid: "0x20", iova: "0x0", len: 1 }, /"dir"/],
    ["data expected of a write", { op: "dma", dir: "write", rid: "0x20", iova: "0x0", data: "00", expect: { ok: true, data: "00" } }, /only for reads/],
    ["a misaligned PCI access", { op: "pci-read", rid: "0x20", offset: "0x1", size: 2 }, /not aligned/],
    ["not an object", [1, 2], /not an object/],
  ];
  for (const [what, line, message] of invalid) {
    it(`refuses ${what}, naming the line`, () => {
      const r = parseTrace(lines(headerJson, { op: "mark", label: "ok" }, line));
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.error.line).toBe(3);
        expect(r.error.message).toMatch(message);
      }
    });
  }

  it("refuses a trace without its header, or of another version", () => {
    expect(parseTrace("")).toMatchObject({ ok: false, error: { line: 1 } });
    expect(parseTrace(lines({ op: "mark", label: "x" }))).toMatchObject({ ok: false, error: { line: 1, message: /not a viommu-trace header/ } });
    expect(parseTrace(lines({ ...headerJson, version: 2 }))).toMatchObject({ ok: false, error: { message: /version 2 is not 1/ } });
    expect(parseTrace(lines(headerJson, "{not json"))).toMatchObject({ ok: false, error: { line: 2, message: "not a JSON value" } });
  });

  it("never throws on arbitrary lines (a trace is input from anywhere)", () => {
    const value = fc.oneof(
      fc.jsonValue(),
      fc.record({ op: fc.constantFrom("mem-write", "mem-read", "mmio-read", "mmio-write", "dma", "pci-read", "msi", "interrupts", "hypercall", "mem-fill"), addr: fc.oneof(fc.string(), fc.integer(), fc.bigInt().map((b) => `0x${b.toString(16)}`)), size: fc.integer({ min: -1, max: 9 }), len: fc.integer(), data: fc.string(), dir: fc.constantFrom("read", "write", "x"), expect: fc.jsonValue() }, { requiredKeys: ["op"] }),
    );
    fc.assert(
      fc.property(fc.array(value, { maxLength: 6 }), (values) => {
        const r = parseTrace(lines(headerJson, ...values.map((v) => JSON.stringify(v) ?? "null")));
        if (!r.ok) expect(r.error.line).toBeGreaterThanOrEqual(2);
      }),
      { seed: SEED, numRuns: 2000 },
    );
  });
});
