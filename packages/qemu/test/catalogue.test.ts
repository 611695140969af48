import { readFileSync } from "node:fs";
import { TRACE_FORMAT, TRACE_VERSION, type DivergenceContext, type Trace, type TraceOp } from "@viommu/trace";
import { describe, expect, it } from "vitest";
import { qemuDifferences, qemuDifferencesFor, qemuFailures } from "../src/index.js";

const doc = readFileSync(new URL("../qemu-differences.md", import.meta.url), "utf8");

function context(vendor: string, base: number, ops: TraceOp[], index: number, expected: bigint | Uint8Array, actual: bigint | Uint8Array): DivergenceContext {
  const trace: Trace = { header: { format: TRACE_FORMAT, version: TRACE_VERSION, machine: { ram: [{ base: 0, size: 2 ** 30 }], iommus: [{ vendor, base, size: 0x20000 }], devices: [{ rid: 0x20 }] } }, ops };
  const op = ops[index]!;
  const register = op.op === "mmio-read" ? { vendor, offset: op.addr - base } : undefined;
  return { trace, index, op, expected, actual, register };
}

describe("the catalogue of differences with QEMU", () => {
  it("documents every entry in qemu-differences.md, with a classification and both citations", () => {
    for (const d of [...qemuDifferences, ...qemuFailures]) {
      expect(doc, d.id).toContain(`\`${d.id}\``);
      expect(["open", "target-deviates", "model-deviates"]).toContain(d.classification);
      expect(d.specification.length, d.id).toBeGreaterThan(20);
      expect(d.qemu.length, d.id).toBeGreaterThan(10);
    }
    const ids = [...qemuDifferences, ...qemuFailures].map((d) => d.id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  const VTD = 0xfed9_0000;
  const read = (offset: number, expect: bigint): TraceOp => ({ op: "mmio-read", addr: VTD + offset, size: 4, expect });
  const explain = (c: DivergenceContext): string | undefined => qemuDifferencesFor("vtd").find((k) => k.matches(c))?.id;

  it("explains only the bits and registers it names", () => {
    // FSTS differing only in FRI: one fault record vs eight.
    expect(explain(context("vtd", VTD, [read(0x34, 0x102n)], 0, 0x102n, 0x2n))).toBe("vtd-one-fault-record");
    // FSTS differing in PPF is not that.
    expect(explain(context("vtd", VTD, [read(0x34, 0x2n)], 0, 0x2n, 0x0n))).toBeUndefined();
    // PV of FRCD[0] differs: open; FR differing as well is not.
    expect(explain(context("vtd", VTD, [read(0x22c, 0xc0000006n)], 0, 0xc0000006n, 0xc0ffff06n))).toBe("vtd-frcd-pv-without-pp");
    expect(explain(context("vtd", VTD, [read(0x22c, 0xc0000006n)], 0, 0xc0000006n, 0xc0ffff05n))).toBeUndefined();
    // GSTS is nobody's business.
    expect(explain(context("vtd", VTD, [read(0x1c, 0xc7000000n)], 0, 0xc7000000n, 0x87000000n))).toBeUndefined();
  });

  it("blames the cached read-only write only when the device read the page before the blocked write", () => {
    const w: TraceOp = { op: "dma", dir: "write", rid: 0x20, iova: 0x10_0000, data: Uint8Array.of(1), expect: { ok: false } };
    const r: TraceOp = { op: "dma", dir: "read", rid: 0x20, iova: 0x10_0000, len: 4, expect: { ok: true, data: new Uint8Array(4) } };
    const fsts = read(0x34, 0x2n);
    expect(explain(context("vtd", VTD, [r, w, fsts], 2, 0x2n, 0n))).toBe("vtd-readonly-write-cached-no-fault");
    expect(explain(context("vtd", VTD, [w, fsts], 1, 0x2n, 0n))).toBeUndefined();
    const other: TraceOp = { ...r, rid: 0x28 };
    expect(explain(context("vtd", VTD, [other, w, fsts], 2, 0x2n, 0n))).toBeUndefined();
  });

  it("blames QEMU's silent interrupt-remapping failures only after an MSI", () => {
    const msi: TraceOp = { op: "msi", rid: 0x20, address: 0xfee0_0010, data: 0 };
    expect(explain(context("vtd", VTD, [msi, read(0x34, 0x2n)], 1, 0x2n, 0n))).toBe("vtd-interrupt-fault-not-recorded");
    expect(explain(context("vtd", VTD, [read(0x34, 0x2n)], 0, 0x2n, 0n))).toBeUndefined();
  });

  it("sorts AMD-Vi's missing events by the kind of record the model wrote", () => {
    const AMD = 0xfed8_0000;
    const log: TraceOp = { op: "mmio-write", addr: AMD + 0x10, size: 8, value: 0x0900_0000_3e00_6000n };
    const record = (dw1: number): Uint8Array => Uint8Array.from([0x20, 0, 0, 0, dw1 & 0xff, (dw1 >>> 8) & 0xff, (dw1 >>> 16) & 0xff, dw1 >>> 24, 0, 0, 0x10, 0, 0, 0, 0, 0]);
    const at = (dw1: number): string | undefined => {
      const op: TraceOp = { op: "mem-read", addr: 0x3e00_6000, len: 16, expect: record(dw1) };
      return qemuDifferencesFor("amd-vi").find((k) => k.matches(context("amd-vi", AMD, [log, op], 1, record(dw1), new Uint8Array(16))))?.id;
    };
    expect(at(0x2000_0001)).toBe("amdvi-no-event-for-missing-pte");
    expect(at(0x2070_0001)).toBe("amdvi-no-event-for-leaf-permission");
    expect(at(0x2028_0000)).toBe("amdvi-no-event-for-interrupt");
    // An event record QEMU did write differently is not a missing one.
    const op: TraceOp = { op: "mem-read", addr: 0x3e00_6000, len: 16, expect: record(0x2000_0001) };
    expect(qemuDifferencesFor("amd-vi").find((k) => k.matches(context("amd-vi", AMD, [log, op], 1, record(0x2000_0001), record(0x2000_0002))))).toBeUndefined();
  });

  it("tells an AMD-Vi DTE reported at invalidation from one a request met, and a hardware error from a fetch in RAM", () => {
    const AMD = 0xfed8_0000;
    const devtab: TraceOp = { op: "mmio-write", addr: AMD, size: 8, value: 0x3e00_0000n };
    const log: TraceOp = { op: "mmio-write", addr: AMD + 0x10, size: 8, value: 0x0900_0000_3e00_6000n };
    const dma: TraceOp = { op: "dma", dir: "read", rid: 0x20, iova: 0x10_0000, len: 64, expect: { ok: false } };
    const record = (dw1: number, address: number): Uint8Array => {
      const r = new Uint8Array(16);
      const v = new DataView(r.buffer);
      v.setUint32(0, 0x20, true);
      v.setUint32(4, dw1, true);
      v.setUint32(8, address % 2 ** 32, true);
      v.setUint32(12, Math.floor(address / 2 ** 32), true);
      return r;
    };
    const explainAt = (before: TraceOp[], dw1: number, address: number): string | undefined => {
      const op: TraceOp = { op: "mem-read", addr: 0x3e00_6000, len: 16, expect: record(dw1, address) };
      const ops = [devtab, log, ...before, op];
      return qemuDifferencesFor("amd-vi").find((k) => k.matches(context("amd-vi", AMD, ops, ops.length - 1, record(dw1, address), new Uint8Array(16))))?.id;
    };
    // ILLEGAL_DEV_TABLE_ENTRY naming DeviceID 0x20's DTE: the model's report at INVALIDATE_DEVTAB_ENTRY.
    expect(explainAt([], 0x1000_0000, 0x3e00_0400)).toBe("amdvi-dte-checked-at-invalidation");
    // Naming the IOVA of a DMA the device made: the request's; without that DMA, neither.
    expect(explainAt([dma], 0x1000_0000, 0x10_0020)).toBe("amdvi-no-event-for-illegal-dte");
    expect(explainAt([], 0x1000_0000, 0x10_0020)).toBeUndefined();
    // PAGE_TAB_HARDWARE_ERROR / DEV_TAB_HARDWARE_ERROR: only for a fetch where no memory is (RAM is 1 GiB here).
    expect(explainAt([dma], 0x4000_0000, 0x8000_0000)).toBe("amdvi-no-event-for-table-fetch-error");
    expect(explainAt([dma], 0x4000_0000, 0x10_0000)).toBeUndefined();
    expect(explainAt([dma], 0x3000_0000, 0x8000_0400)).toBe("amdvi-no-event-for-devtab-fetch-error");
    expect(explainAt([dma], 0x3000_0000, 0x3e00_0400)).toBeUndefined();
  });
});

describe("the SMMUv3 catalogue", () => {
  const SMMU = 0x905_0000;
  const write = (offset: number, value: bigint, size: 4 | 8 = 4): TraceOp => ({ op: "mmio-write", addr: SMMU + offset, size, value });
  const read = (offset: number, expect: bigint): TraceOp => ({ op: "mmio-read", addr: SMMU + offset, size: 4, expect });
  const explain = (ops: TraceOp[], expected: bigint | Uint8Array, actual: bigint | Uint8Array): string | undefined =>
    qemuDifferencesFor("smmuv3").find((k) => k.matches(context("smmuv3", SMMU, ops, ops.length - 1, expected, actual)))?.id;
  // An 8-entry command queue at 0x1000 whose entry 0 the model found illegal (CONS.ERR = CERROR_ILL at 0).
  const commandQueue = (opcode: number, dw1 = 1): TraceOp[] => [
    write(0x90, 0x1000n | 3n, 8),
    { op: "mem-write", addr: 0x1000, data: Uint8Array.of(opcode, 0, 0, 0, 0x20, 0, 0, 0, dw1, 0, 0, 0, 0, 0, 0, 0) },
    write(0x98, 1n),
    read(0x9c, 0x100_0000n),
  ];

  it("blames a command QEMU passes over unhandled (CMD_STALL_TERM with a reserved bit) when QEMU stops later or not at all", () => {
    expect(explain([...commandQueue(0x45), read(0x9c, 0x100_0000n)], 0x100_0000n, 0x1n)).toBe("smmuv3-command-reserved-bits-accepted");
    expect(explain([...commandQueue(0x45), read(0x9c, 0x100_0000n)], 0x100_0000n, 0x100_0001n)).toBe("smmuv3-command-reserved-bits-accepted");
    // An opcode QEMU finds illegal too, or QEMU further than a queue's worth away, is something else.
    expect(explain([...commandQueue(0x07), read(0x9c, 0x100_0000n)], 0x100_0000n, 0x100_0001n)).toBeUndefined();
    expect(explain([...commandQueue(0x45), read(0x9c, 0x100_0000n)], 0x100_0000n, 0x100_000fn)).toBeUndefined();
  });

  it("explains a GERROR read bit by bit: CMDQ_ERR (model) and EVTQ_ABT_ERR (QEMU) together only when each has its cause", () => {
    // The guest's EVTQ_CONS makes the 8-entry event queue full (index 0, the other wrap), as the model answers.
    const fullQueue: TraceOp[] = [write(0xa0, 0x2000n | 3n, 8), write(0x100ac, 0x8000_0008n), read(0x100a8, 0n)];
    expect(explain([...commandQueue(0x45), ...fullQueue, read(0x60, 1n)], 1n, 4n)).toBe("smmuv3-command-reserved-bits-accepted");
    // Either cause missing: the queue never full, or the command one QEMU rejects as well.
    const notFull: TraceOp[] = [write(0xa0, 0x2000n | 3n, 8), write(0x100ac, 0n), read(0x100a8, 0n)];
    expect(explain([...commandQueue(0x45), ...notFull, read(0x60, 1n)], 1n, 4n)).toBeUndefined();
    expect(explain([...commandQueue(0x07), ...fullQueue, read(0x60, 1n)], 1n, 4n)).toBeUndefined();
    // Each alone.
    expect(explain([...commandQueue(0x45), ...notFull, read(0x60, 1n)], 1n, 0n)).toBe("smmuv3-command-reserved-bits-accepted");
    expect(explain([...commandQueue(0x07), ...fullQueue, read(0x60, 1n)], 1n, 5n)).toBe("smmuv3-evtq-full-as-abort");
  });

  it("takes a CMD_SYNC slot QEMU left alone for the model's MSI write only when the model wrote the command's MSIData there", () => {
    // CMD_SYNC, CS = SIG_IRQ, MSIData 0x00100040, MSIAddress the command itself.
    const sync = Uint8Array.of(0x46, 0x10, 0, 0, 0x40, 0, 0x10, 0, 0x00, 0x10, 0, 0, 0, 0, 0, 0);
    const ops = (expect: Uint8Array): TraceOp[] => [write(0x90, 0x1000n | 3n, 8), { op: "mem-write", addr: 0x1000, data: sync }, write(0x98, 1n), { op: "mem-read", addr: 0x1000, len: 4, expect }];
    expect(explain(ops(sync.subarray(4, 8)), sync.subarray(4, 8), sync.subarray(0, 4))).toBe("smmuv3-cmd-sync-without-msi");
    expect(explain(ops(new Uint8Array(4)), new Uint8Array(4), sync.subarray(0, 4))).toBeUndefined();
  });

  it("takes QEMU's repeat of a configuration record for one of its per-access extras by type and StreamID, whatever QEMU puts in the rest", () => {
    // The model's F_CD_FETCH names the CD in FetchAddr (bytes 24-31), QEMU's in InputAddr (bytes 16-23).
    const record = (at: number): Uint8Array => {
      const r = new Uint8Array(32);
      r.set([0x09, 0, 0, 0, 0x20], 0);
      r.set([0x00, 0x80, 0x00, 0x42], at);
      return r;
    };
    const blocked: TraceOp = { op: "dma", dir: "read", rid: 0x20, iova: 0x10_0000, len: 64, expect: { ok: false } };
    const queue = write(0xa0, 0x2000n | 3n, 8);
    const first: TraceOp = { op: "mem-read", addr: 0x2000, len: 32, expect: record(24) };
    const second: TraceOp = { op: "mem-read", addr: 0x2020, len: 32, expect: new Uint8Array(32) };
    expect(explain([queue, blocked, first, second], new Uint8Array(32), record(16))).toBe("smmuv3-event-per-access");
    // The model's own slot holding that event (differing elsewhere) is no extra record.
    expect(explain([queue, blocked, { ...first, addr: 0x2020 }], record(24), record(16))).toBe("smmuv3-cd-fetch-address-in-input-address");
  });

  it("takes QEMU's C_BAD_STE for a StreamID its L1 descriptor makes invalid (index beyond the span, reserved Span, Span above SPLIT + 1)", () => {
    // A two-level stream table at 0x4000 (SPLIT 8, 16-bit StreamIDs); StreamID 0x20 uses the descriptor at 0x4000.
    const ops = (l1: number): TraceOp[] => [
      write(0x80, 0x4000n, 8),
      write(0x88, 0x10210n),
      write(0xa0, 0x2000n | 3n, 8),
      { op: "mem-write", addr: 0x4000, data: Uint8Array.of(l1 & 0xff, (l1 >>> 8) & 0xff, (l1 >>> 16) & 0xff, l1 >>> 24, 0, 0, 0, 0) },
      { op: "dma", dir: "read", rid: 0x20, iova: 0x10_0000, len: 4, expect: { ok: false } },
      { op: "mem-read", addr: 0x2000, len: 32, expect: new Uint8Array(32) },
    ];
    const badSte = Uint8Array.from({ length: 32 }, (_, i) => (i === 0 ? 0x04 : i === 4 ? 0x20 : 0));
    for (const span of [1, 25, 10]) expect(explain(ops(0x8000 | span), new Uint8Array(32), badSte), `Span ${span}`).toBe("smmuv3-l2-span-overrun-as-bad-ste");
    // Span 9 reaches StreamID 0x20: an STE QEMU finds bad is another matter.
    expect(explain(ops(0x8000 | 9), new Uint8Array(32), badSte)).toBeUndefined();
  });

  it("tells QEMU's extra per-access records from its stale translation by the direction EVTQ_PROD differs in", () => {
    // The command queue stopped before the device used the page, so the unmap that followed was never invalidated.
    const used: TraceOp = { op: "dma", dir: "read", rid: 0x20, iova: 0x10_0000, len: 64, expect: { ok: true, data: new Uint8Array(64) } };
    const blocked: TraceOp = { op: "dma", dir: "read", rid: 0x20, iova: 0x10_0000, len: 64, expect: { ok: false } };
    const ops = [...commandQueue(0x00), write(0xa0, 0x2000n | 3n, 8), used, read(0x9c, 0x100_0000n), blocked, read(0x100a8, 1n)];
    expect(explain(ops, 1n, 0n)).toBe("smmuv3-stale-translation-without-invalidation");
    expect(explain(ops, 1n, 5n)).toBe("smmuv3-event-per-access");
    // The guest's EVTQ_CONS made the model's queue full, so it toggled OVFLG; QEMU's PROD, ahead, was not full.
    expect(explain(ops, 0x8000_0001n, 0x5n)).toBe("smmuv3-event-per-access");
    expect(explain(ops, 0x1n, 0x8000_0005n)).toBeUndefined();
    // Commands consumed between the use and the blocked transfer: an invalidation could have run.
    const moved = [...commandQueue(0x00), write(0xa0, 0x2000n | 3n, 8), used, read(0x9c, 0x100_0001n), blocked, read(0x100a8, 1n)];
    expect(explain(moved, 1n, 0n)).toBeUndefined();
  });
});

describe("guest memory as a trace wrote it (traceBytes)", () => {
  it("takes each write's and fill's overlap with the range, later operations over earlier ones, and stops at the index", async () => {
    const { traceBytes } = await import("../src/catalogue/matchers.js");
    const trace: Trace = {
      header: { format: TRACE_FORMAT, version: TRACE_VERSION, machine: { ram: [{ base: 0, size: 0x10000 }], iommus: [], devices: [] } },
      ops: [
        { op: "mem-fill", addr: 0x0ff0, len: 0x20, byte: 0xaa },
        { op: "mem-write", addr: 0x0ffe, data: Uint8Array.of(1, 2, 3, 4) },
        { op: "mem-write", addr: 0x1006, data: Uint8Array.of(9, 8, 7, 6) },
        { op: "mem-fill", addr: 0x1009, len: 1, byte: 0x55 },
      ],
    };
    expect([...traceBytes(trace, 4, 0x1000, 10)]).toEqual([3, 4, 0xaa, 0xaa, 0xaa, 0xaa, 9, 8, 7, 0x55]);
    expect([...traceBytes(trace, 2, 0x1000, 10)]).toEqual([3, 4, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa]);
    expect([...traceBytes(trace, 4, 0x0ff8, 4)]).toEqual([0xaa, 0xaa, 0xaa, 0xaa]);
    expect([...traceBytes(trace, 4, 0x2000, 4)]).toEqual([0, 0, 0, 0]);
  });
});
