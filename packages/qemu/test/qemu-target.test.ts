import { vtdPlugin } from "@viommu/vtd/plugin";
import { bringUp, dmaFaultReported, mappedDmaLands, readonlyDmaWriteBlocked, recordWorkload, replay, type Trace, type TraceOp, type Workload } from "@viommu/trace";
import { expect, it } from "vitest";
import { amdViMachine, EDU_MAX_TRANSFER, QemuTarget, qemuDifferencesFor, qemuRecordProfile, vtdMachine } from "../src/index.js";
import { describeWith, qemuX86, SEED } from "./support.js";

function recordVtd(workload: Workload): Trace {
  const p = qemuRecordProfile("vtd")!;
  const r = recordWorkload({ plugin: vtdPlugin, workload, mode: p.mode, dma: p.dma, seed: SEED, guest: { variant: p.variant }, ram: { base: p.ramBase!, size: p.ramBytes! } });
  if (r.status !== "recorded") throw new Error(`${workload.id}: ${r.status === "n/a" ? r.reason : r.reason}`);
  return r.trace;
}

async function onQemu<T>(trace: Trace, body: (t: QemuTarget) => Promise<T>): Promise<T> {
  const started = await QemuTarget.start(vtdMachine, trace.header);
  if (!started.ok) throw new Error(started.error);
  try {
    return await body(started.target);
  } finally {
    await started.target.close();
  }
}

const known = qemuDifferencesFor("vtd");

describeWith(qemuX86, "VT-d traces on QEMU's intel-iommu", () => {
  it("the reference driver's bring-up replays with only the capability registers differing", async () => {
    const trace = recordVtd(bringUp);
    const report = await onQemu(trace, (t) => replay(trace, t, { known }));
    expect(report.failures).toEqual([]);
    expect(report.unsupported).toEqual([]);
    expect(report.executed).toBe(trace.ops.length);
    // GSTS after each command, the invalidation wait descriptors' status writes: QEMU answers as the model does.
    expect(report.compared).toBeGreaterThan(10);
    expect(report.divergences.map((d) => d.known?.id)).toEqual(report.divergences.map(() => "vtd-capability-registers"));
  });

  it("mapped edu DMA lands where the guest mapped it (a copy across a page boundary)", async () => {
    const trace = recordVtd(mappedDmaLands);
    const report = await onQemu(trace, (t) => replay(trace, t, { known }));
    const last = trace.ops.findLastIndex((op) => op.op === "mem-read");
    expect(report.divergences.filter((d) => d.index >= last)).toEqual([]);
    expect(report.divergences.every((d) => d.known?.classification === "open")).toBe(true);
    expect(report.unobservable[0]!.count).toBe(2);
  });

  it("an unmapped read is blocked and recorded in FRCD[0] with the edu's requester id, the page and reason 6", async () => {
    const trace = recordVtd(dmaFaultReported);
    const report = await onQemu(trace, (t) => replay(trace, t, { known }));
    expect(report.divergences.every((d) => d.known?.classification === "open")).toBe(true);
    // Independently of the model: the record QEMU wrote, read before the driver clears it.
    const dma = trace.ops.findIndex((op) => op.op === "dma" && op.expect?.ok === false);
    const faultAt = (trace.ops[dma] as Extract<TraceOp, { op: "dma" }>).iova;
    await onQemu(trace, async (t) => {
      await replay({ ...trace, ops: trace.ops.slice(0, dma + 1) }, t);
      const q = t.process.qtest;
      const fsts = await q.readl(0xfed9_0034);
      const lo = await q.readq(0xfed9_0220);
      const hi = await q.readq(0xfed9_0228);
      expect(fsts & 2n).toBe(2n); // PPF
      expect(lo).toBe(BigInt(faultAt - (faultAt % 4096)));
      expect(hi & 0xffffn).toBe(0x20n); // SID: the edu at 00:04.0
      expect((hi >> 32n) & 0xffn).toBe(6n); // FR 6: read without read permission (not present)
      expect((hi >> 63n) & 1n).toBe(1n); // F
      expect((hi >> 62n) & 1n).toBe(1n); // T: a read
    });
  });

  it("a write through a read-only mapping is recorded (reason 5) before a read, and silently dropped after one (catalogued QEMU deviation)", async () => {
    const trace = recordVtd(readonlyDmaWriteBlocked);
    const report = await onQemu(trace, (t) => replay(trace, t, { known }));
    const writes = trace.ops.flatMap((op, i) => (op.op === "dma" && op.dir === "write" && op.expect?.ok === false ? [i] : []));
    expect(writes).toHaveLength(2);
    const against = report.divergences.filter((d) => d.known?.classification !== "open");
    expect(against.length).toBeGreaterThan(0);
    expect(against.every((d) => d.index > writes[1]! && d.known?.id === "vtd-readonly-write-cached-no-fault")).toBe(true);
    // The read-only page itself never changed on QEMU either: those memory reads agree.
    expect(report.divergences.some((d) => d.op.op === "mem-read")).toBe(false);
  });

  it("refuses what edu cannot do instead of guessing, and says why", async () => {
    const trace = recordVtd(bringUp);
    const extra: TraceOp[] = [
      { op: "dma", dir: "read", rid: 0x20, iova: 0x1000, len: EDU_MAX_TRANSFER + 1 },
      { op: "dma", dir: "read", rid: 0x20, pasid: 1, iova: 0x1000, len: 4 },
      { op: "dma", dir: "write", rid: 0x20, iova: 0x1000, data: Uint8Array.of(1, 2, 3) },
      { op: "dma", dir: "read", rid: 0x30, iova: 0x1000, len: 4 },
      { op: "mem-read", addr: 2 ** 31, len: 4 },
      { op: "hypercall", input: 1n, inputGpa: 0, outputGpa: 0 },
    ];
    const report = await onQemu(trace, (t) => replay({ ...trace, ops: [...trace.ops, ...extra] }, t, { known }));
    const n = trace.ops.length;
    expect(report.unsupported.map((u) => [u.index - n, u.reason])).toEqual([
      [0, expect.stringContaining("at most 4095 bytes")],
      [1, expect.stringContaining("without PASID")],
      [2, expect.stringContaining("buffer holds")],
      [5, expect.stringContaining("hypercalls")],
    ]);
    expect(report.failures.map((f) => f.index - n)).toEqual([3, 4]);
    expect(report.stoppedAt).toBeUndefined();
  });

  it("reports QEMU dying as a fatal failure and stops", async () => {
    const trace = recordVtd(mappedDmaLands);
    const report = await onQemu(trace, async (t) => {
      let n = 0;
      const dying = { ...t, name: t.name, iommuBases: t.iommuBases, close: () => t.close(), execute: (op: TraceOp) => (++n === 40 ? (process.kill(t.process.pid!, "SIGKILL"), t.execute(op)) : t.execute(op)) };
      return replay(trace, dying, { window: 1 });
    });
    expect(report.failures.length).toBeGreaterThan(0);
    expect(report.failures[0]!.reason).toMatch(/QEMU stopped answering/);
    expect(report.stoppedAt).toBeDefined();
    expect(report.executed).toBeLessThan(trace.ops.length);
  });

  it("says why a trace's machine is not one QEMU can be", () => {
    const header = recordVtd(bringUp).header;
    const m = header.machine;
    expect(QemuTarget.compatibility(vtdMachine, { ...header, machine: { ...m, ram: [{ base: 0x4000_0000, size: 2 ** 30 }] } })).toMatch(/RAM must be one range at 0x0/);
    expect(QemuTarget.compatibility(vtdMachine, { ...header, machine: { ...m, devices: [{ rid: 0xf8 }] } })).toMatch(/slot 31 is taken/);
    expect(QemuTarget.compatibility(vtdMachine, { ...header, machine: { ...m, devices: [{ rid: 0x121 }] } })).toMatch(/bus 0 at function 0/);
    expect(QemuTarget.compatibility(vtdMachine, { ...header, machine: { ...m, iommus: [{ vendor: "smmuv3", base: 0, size: 1 }] } })).toMatch(/one vtd IOMMU/);
    expect(QemuTarget.compatibility(vtdMachine, header)).toBeUndefined();
  });
});

describeWith(qemuX86, "a reused amd-iommu", () => {
  it("starts each trace as a fresh QEMU does: a device table the previous guest programmed is not walked after the reset", async () => {
    const header: Trace["header"] = { format: "viommu-trace", version: 1, machine: { ram: [{ base: 0, size: 64 * 2 ** 20 }], iommus: [{ vendor: "amd-vi", base: 0xfed8_0000, size: 0x4000 }], devices: [{ rid: 0x20 }] } };
    // The DTE of 00:04.0 (DeviceID 0x20) at 0x2000400: V, TV, Mode 3, IR and IW, tables at 0x200a000, whose entry 0
    // names its own table at level 3 again (a walk QEMU 7.2 never finishes).
    const dte = Uint8Array.from([0x03, 0xa6, 0x00, 0x02, 0x00, 0x00, 0x00, 0x60, 0x01, ...new Array<number>(23).fill(0)]);
    const pte = Uint8Array.from([0x41, 0xa6, 0x00, 0x02, 0x00, 0x00, 0x00, 0x60]);
    const tables: TraceOp[] = [
      { op: "mem-write", addr: 0x200_0400, data: dte },
      { op: "mem-write", addr: 0x200_a000, data: pte },
    ];
    const first: Trace = { header, ops: [{ op: "mmio-write", addr: 0xfed8_0000, size: 8, value: 0x200_0000n }, ...tables] };
    // The next guest writes the same bytes but never programs the Device Table Base Address Register (reset value 0:
    // DeviceID 0x20's entry is at 0x400, zero, so its DMA passes through).
    const second: Trace = {
      header,
      ops: [
        ...tables,
        { op: "mmio-write", addr: 0xfed8_0018, size: 8, value: 0x1n },
        { op: "dma", dir: "read", rid: 0x20, iova: 0x100_0000, len: 64, expect: { ok: true, data: new Uint8Array(64) } },
      ],
    };
    const started = await QemuTarget.start(amdViMachine, header, { reusable: true });
    if (!started.ok) throw new Error(started.error);
    try {
      expect((await replay(first, started.target)).failures).toEqual([]);
      expect(await started.target.reset(header)).toBeUndefined();
      const r = await replay(second, started.target);
      expect(r.failures).toEqual([]);
    } finally {
      await started.target.close();
    }
  });
});
