import { amdViPlugin } from "@viommu/amd-vi/plugin";
import { smmuv3Plugin } from "@viommu/smmuv3/plugin";
import { vtdPlugin } from "@viommu/vtd/plugin";
import { mappedDmaLands, ModelTarget, recordWorkload, replay, type Trace, type TraceOp } from "@viommu/trace";
import { VirtualMachine } from "@viommu/core";
import { describe, expect, it, vi } from "vitest";
import { answeredByModel, caseSeed, inDifftestShard, mergeDifftestReports, mutate, subShard, qemuDifferencesFor, QemuTarget, qemuRecordProfile, Rng, runDifftest, shrink, vtdMachine, type QemuVendor } from "../src/index.js";
import { describeWith, qemuArm, qemuX86, SEED } from "./support.js";

const plugins = [vtdPlugin, amdViPlugin, smmuv3Plugin];

function base(): Trace {
  const p = qemuRecordProfile("vtd")!;
  const r = recordWorkload({ plugin: vtdPlugin, workload: mappedDmaLands, mode: p.mode, dma: p.dma, guest: { variant: p.variant }, ram: { base: 0, size: 64 * 2 ** 20 } });
  if (r.status !== "recorded") throw new Error("recording failed");
  return r.trace;
}

describe("difftest slices", () => {
  it("split a campaign so that slices of slices still run every case exactly once", () => {
    for (const [outer, n] of [[undefined, 3], [{ index: 2, count: 4 }, 3], [{ index: 1, count: 1 }, 2]] as const) {
      const owners = Array.from({ length: 60 }, (_, i) => [1, 2, 3].slice(0, n).filter((j) => inDifftestShard(i, subShard(outer, j, n))));
      for (const [i, o] of owners.entries()) expect(o.length, `case ${i}`).toBe(inDifftestShard(i, outer) ? 1 : 0);
    }
  });

  it("merge into one report: counts summed, findings in case order", () => {
    const part = (cases: number, findings: number[], known: Record<string, number>) => ({
      vendor: "vtd", seed: 1, cases, qemu: "q", ms: 5, qemuStarts: 1, predictedFailures: 0, catalogueMs: 2, byKnown: known,
      byStatus: { agree: cases - findings.length, known: 0, diverged: findings.length, "qemu-failed": 0, "model-exception": 0, misprediction: 0, inexpressible: 0 },
      findings: findings.map((index) => ({ index, seed: index, workload: "w", mutations: [], status: "diverged" as const, known: [] })),
    });
    const m = mergeDifftestReports([part(5, [7, 1], { b: 1 }), part(4, [4], { a: 2, b: 3 })], 99);
    expect(m.cases).toBe(9);
    expect(m.byStatus.diverged).toBe(3);
    expect(m.byStatus.agree).toBe(6);
    expect(m.findings.map((f) => f.index)).toEqual([1, 4, 7]);
    expect(Object.entries(m.byKnown)).toEqual([["a", 2], ["b", 4]]);
    expect([m.ms, m.qemuStarts, m.catalogueMs]).toEqual([99, 2, 4]);
  });
});

describe("difftest programs", () => {
  it("are a function of the seed", () => {
    const t = base();
    const a = mutate(t, "vtd", new Rng(caseSeed(SEED, 3)), 3);
    const b = mutate(t, "vtd", new Rng(caseSeed(SEED, 3)), 3);
    const c = mutate(t, "vtd", new Rng(caseSeed(SEED, 4)), 3);
    expect(a).toEqual(b);
    expect(a.mutations).not.toEqual(c.mutations);
    expect(a.mutations.length).toBeGreaterThan(0);
  });

  it("are answered by the model: a DMA write carries what its device read last, and the fault state is read at the end", () => {
    const t = base();
    const ops = t.ops.slice();
    const read = ops.findIndex((op) => op.op === "dma" && op.dir === "read");
    const moved = { ...(ops[read] as Extract<TraceOp, { op: "dma"; dir: "read" }>), iova: 0x20_0000 + 0x800 };
    ops[read] = moved;
    const answered = answeredByModel(vtdPlugin, plugins, "vtd", t.header, ops)!;
    expect(answered.modelExceptions).toEqual([]);
    const out = answered.trace.ops;
    const r = out.find((op) => op.op === "dma" && op.dir === "read") as Extract<TraceOp, { op: "dma"; dir: "read" }>;
    const w = out.find((op) => op.op === "dma" && op.dir === "write") as Extract<TraceOp, { op: "dma"; dir: "write" }>;
    // The read now reads the (zeroed) destination page; the copy writes those bytes, not the recorded ones.
    expect(r.expect).toEqual({ ok: true, data: new Uint8Array(0xc00) });
    expect(w.data).toEqual(new Uint8Array(0xc00));
    const probe = out.findIndex((op) => op.op === "mark" && op.label === "probe");
    expect(out.slice(probe + 1).every((op) => op.op === "mmio-read" && op.expect !== undefined)).toBe(true);
    // A blocked read leaves its copy out.
    ops[read] = { ...moved, iova: 0x7000_0000 };
    const blocked = answeredByModel(vtdPlugin, plugins, "vtd", t.header, ops)!.trace.ops;
    expect(blocked.some((op) => op.op === "dma" && op.dir === "write")).toBe(false);
  });

  it("keep the operation an exception escaped the model on, so the finding's trace reproduces it on the model", async () => {
    const t = base();
    const sentinel = 0x5a5a_0001n;
    const original = VirtualMachine.prototype.mmioWrite;
    const spy = vi.spyOn(VirtualMachine.prototype, "mmioWrite").mockImplementation(function (this: VirtualMachine, address, size, value) {
      if (BigInt(value) === sentinel) throw new Error("injected defect");
      original.call(this, address, size, value);
    });
    try {
      const base0 = t.header.machine.iommus[0]!.base;
      const throwing: TraceOp = { op: "mmio-write", addr: base0 + 0x18, size: 4, value: sentinel };
      const answered = answeredByModel(vtdPlugin, plugins, "vtd", t.header, [...t.ops.slice(0, 5), throwing])!;
      expect(answered.modelExceptions).toHaveLength(1);
      expect(answered.trace.ops).toContainEqual(throwing);
      const target = ModelTarget.create(vtdPlugin, plugins, answered.trace.header);
      if (!target.ok) throw new Error(target.error.message);
      const report = await replay(answered.trace, target.value);
      target.value.dispose();
      expect(report.failures.map((f) => f.reason.split("\n")[0])).toEqual(["exception escaped the model: injected defect"]);
    } finally {
      spy.mockRestore();
    }
  });

  it("shrink to the smallest run of operations that still reproduces", async () => {
    const ops: TraceOp[] = Array.from({ length: 40 }, (_, i) => ({ op: "mark", label: `m${i}` }));
    const needed = new Set(["m7", "m31"]);
    const header = base().header;
    let runs = 0;
    const found = await shrink(
      ops,
      async (candidate) => {
        runs++;
        const labels = new Set(candidate.map((o) => (o as { label: string }).label));
        return [...needed].every((l) => labels.has(l)) ? { header, ops: candidate } : undefined;
      },
      200,
    );
    expect(found?.ops.map((o) => (o as { label: string }).label)).toEqual(["m7", "m31"]);
    expect(runs).toBeLessThan(100);
  });
});

for (const [vendor, tool] of [["vtd", qemuX86], ["amd-vi", qemuX86], ["smmuv3", qemuArm]] as const) {
  describeWith(tool, `difftest against QEMU: ${vendor}`, () => {
    it("a fixed seed set finds nothing the catalogue does not explain", async () => {
      const r = await runDifftest({ vendor: vendor as QemuVendor, plugins, seed: SEED, cases: 6, shrink: false });
      if (!r.ok) throw new Error(r.error);
      const findings = r.report.findings.map((f) => `case ${f.index} ${f.status}: ${f.detail} ${f.first?.op ?? ""} | ${f.mutations.join("; ")}`);
      expect(findings).toEqual([]);
      expect(r.report.byStatus.agree + r.report.byStatus.known).toBeGreaterThan(0);
    });
  });
}

describeWith(qemuX86, "difftest findings", () => {
  it("shrinks an unexplained divergence to a minimal trace that replay on QEMU reproduces", async () => {
    const r = await runDifftest({ vendor: "vtd", plugins, seed: SEED, cases: 1, known: [], shrinkBudget: 40 });
    if (!r.ok) throw new Error(r.error);
    expect(r.report.findings).toHaveLength(1);
    const f = r.report.findings[0]!;
    expect(f.status).toBe("diverged");
    // The capability registers differ first: the minimal program reads one of them (and the probe).
    const probe = f.trace!.ops.findIndex((op) => op.op === "mark" && op.label === "probe");
    expect(probe).toBeLessThanOrEqual(2);
    const t = await QemuTarget.start(vtdMachine, f.trace!.header, { reusable: true });
    if (!t.ok) throw new Error(t.error);
    try {
      const again = await replay(f.trace!, t.target);
      expect(again.divergences.length).toBeGreaterThan(0);
      expect(await t.target.reset(f.trace!.header)).toBeUndefined();
      const known = await replay(f.trace!, t.target, { known: qemuDifferencesFor("vtd") });
      expect(known.divergences.every((d) => d.known !== undefined)).toBe(true);
    } finally {
      await t.target.close();
    }
  });
});

describeWith(qemuX86, "difftest pace on AMD-Vi", () => {
  it("keeps to a case budget: one QEMU restart for the first catalogued hang, later hangs predicted, catalogue lookups cheap", async () => {
    // Seed 11's first 20 programs meet the command-tail hang three times and many divergences the command-buffer
    // entries have to examine (a lookup rebuilding guest memory byte by byte took 4 s a case).
    const cases = 20;
    const r = await runDifftest({ vendor: "amd-vi", plugins, seed: 11, cases, shrink: false });
    if (!r.ok) throw new Error(r.error);
    const hangs = r.report.byKnown["amdvi-cmd-tail-beyond-buffer-hangs"] ?? 0;
    expect(hangs).toBeGreaterThanOrEqual(3);
    expect(r.report.qemuStarts, "QEMU restarted after a hang the catalogue predicts").toBe(2);
    expect(r.report.predictedFailures).toBe(hangs - 1);
    expect(r.report.byStatus.misprediction).toBe(0);
    expect(r.report.catalogueMs / cases, "catalogue lookups per case (ms)").toBeLessThan(50);
    // The budget holds on a loaded machine: at the model's pace a case takes ~0.2 s, the first hang costs the 5 s deadline (it took 4 s a case).
    expect(r.report.ms / cases, "wall time per case (ms)").toBeLessThan(2500);
  });
});
