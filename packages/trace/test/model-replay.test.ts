import type { TranslationMode, VendorPlugin } from "@viommu/core";
import { mockPlugin } from "@viommu/example-mock/plugin";
import { amdViPlugin } from "@viommu/amd-vi/plugin";
import { hypervPlugin } from "@viommu/hyperv/plugin";
import { smmuv3Plugin } from "@viommu/smmuv3/plugin";
import { vtdPlugin } from "@viommu/vtd/plugin";
import { describe, expect, it } from "vitest";
import {
  bringUp,
  formatTrace,
  mappedDmaLands,
  ModelTarget,
  parseTrace,
  recordWorkload,
  replay,
  replayClean,
  workloads,
  type Trace,
  type TraceOp,
} from "../src/index.js";

const SEED = Number(process.env.VIOMMU_SEED ?? 1);

interface Profile {
  readonly plugin: VendorPlugin;
  readonly plugins?: VendorPlugin[];
  readonly mode: TranslationMode;
  readonly variant?: string;
  readonly ramBase: number;
  readonly dma?: "passthrough" | "emulated";
}

const profiles: Profile[] = [
  { plugin: vtdPlugin, mode: "shadow", variant: "legacy", ramBase: 0 },
  { plugin: vtdPlugin, mode: "nested", ramBase: 0 },
  { plugin: amdViPlugin, mode: "nested", ramBase: 0 },
  { plugin: smmuv3Plugin, mode: "nested", variant: "2level", ramBase: 0x4000_0000 },
  { plugin: vtdPlugin, mode: "shadow", variant: "legacy", ramBase: 0, dma: "emulated" },
  { plugin: amdViPlugin, mode: "shadow", ramBase: 0, dma: "emulated" },
  { plugin: smmuv3Plugin, mode: "shadow", variant: "2level", ramBase: 0x4000_0000, dma: "emulated" },
  { plugin: hypervPlugin, mode: "nested", ramBase: 0 },
  { plugin: mockPlugin, mode: "nested", ramBase: 0 },
];

function record(p: Profile, workload = mappedDmaLands): Trace {
  const r = recordWorkload({ plugin: p.plugin, plugins: p.plugins, workload, mode: p.mode, seed: SEED, ram: { base: p.ramBase, size: 2 ** 30 }, guest: p.variant === undefined ? {} : { variant: p.variant } });
  if (r.status !== "recorded") throw new Error(`${workload.id}: ${r.status}: ${r.status === "n/a" ? r.reason : r.reason}`);
  expect(r.leftovers).toEqual([]);
  return r.trace;
}

async function replayOnModel(p: Profile, trace: Trace): Promise<Awaited<ReturnType<typeof replay>>> {
  const target = ModelTarget.create(p.plugin, p.plugins ?? [], trace.header);
  if (!target.ok) throw new Error(target.error.message);
  try {
    return await replay(trace, target.value);
  } finally {
    expect(target.value.dispose()).toEqual([]);
  }
}

describe("a trace recorded on the model replays on the model with no divergence", () => {
  for (const p of profiles) {
    for (const w of workloads) {
      it(`${p.plugin.id} ${p.mode}${p.variant ? ` ${p.variant}` : ""}${p.dma ? ` ${p.dma}` : ""}: ${w.id}`, async () => {
        const r = recordWorkload({ plugin: p.plugin, workload: w, mode: p.mode, dma: p.dma, seed: SEED, ram: { base: p.ramBase, size: 2 ** 30 }, guest: p.variant === undefined ? {} : { variant: p.variant } });
        if (r.status === "n/a") return;
        expect(r, r.status === "failed" ? r.reason : "").toMatchObject({ status: "recorded" });
        if (r.status !== "recorded") return;
        // Through the file format, as another tool would get it.
        const parsed = parseTrace(formatTrace(r.trace));
        if (!parsed.ok) throw new Error(parsed.error.message);
        const report = await replayOnModel(p, parsed.trace);
        expect(report.divergences).toEqual([]);
        expect(replayClean(report)).toBe(true);
        expect(report.executed).toBe(r.trace.ops.length);
        expect(report.compared).toBe(r.trace.ops.filter((op) => "expect" in op && op.expect !== undefined).length);
      });
    }
  }
});

describe("replay reports what differs", () => {
  const p = profiles[0]!;

  it("reports a changed register expectation at its operation, with the expected and the actual answer", async () => {
    const trace = record(p);
    const at = trace.ops.findIndex((op) => op.op === "mmio-read" && op.addr === 0xfed9_0000);
    const original = trace.ops[at] as Extract<TraceOp, { op: "mmio-read" }>;
    const ops = trace.ops.slice();
    ops[at] = { ...original, expect: original.expect! ^ 1n };
    const report = await replayOnModel(p, { ...trace, ops });
    expect(report.divergences).toHaveLength(1);
    expect(report.divergences[0]).toMatchObject({ index: at, expected: original.expect! ^ 1n, actual: original.expect });
  });

  it("reports a changed memory and DMA expectation, and stops at the first when asked", async () => {
    const trace = record(p);
    const dma = trace.ops.findIndex((op) => op.op === "dma" && op.dir === "read");
    const mem = trace.ops.findLastIndex((op) => op.op === "mem-read");
    const ops = trace.ops.slice();
    ops[dma] = { ...(ops[dma] as Extract<TraceOp, { op: "dma"; dir: "read" }>), expect: { ok: false } };
    const m = ops[mem] as Extract<TraceOp, { op: "mem-read" }>;
    const flipped = m.expect!.slice();
    flipped[0]! ^= 0x80;
    ops[mem] = { ...m, expect: flipped };
    const report = await replayOnModel(p, { ...trace, ops });
    expect(report.divergences.map((d) => d.index)).toEqual([dma, mem]);
    const first = await replayOnModel(p, { ...trace, ops });
    expect(first.divergences).toHaveLength(2);
    const stopped = await (async () => {
      const t = ModelTarget.create(p.plugin, [], trace.header);
      if (!t.ok) throw new Error(t.error.message);
      try {
        return await replay({ ...trace, ops }, t.value, { stopAtFirst: true, window: 1 });
      } finally {
        t.value.dispose();
      }
    })();
    expect(stopped.stoppedAt).toBe(dma);
    expect(stopped.divergences.map((d) => d.index)).toEqual([dma]);
  });

  it("marks a divergence a known difference explains, and keeps it out of the unexplained", async () => {
    const trace = record(p);
    const at = trace.ops.findIndex((op) => op.op === "mmio-read");
    const ops = trace.ops.slice();
    ops[at] = { ...(ops[at] as Extract<TraceOp, { op: "mmio-read" }>), expect: 0x10n };
    const t = ModelTarget.create(p.plugin, [], trace.header);
    if (!t.ok) throw new Error(t.error.message);
    const report = await replay({ ...trace, ops }, t.value, {
      known: [{ id: "ver", classification: "open", summary: "the version register", matches: (c) => c.register?.vendor === "vtd" && c.register.offset === 0 }],
    });
    t.value.dispose();
    expect(report.divergences).toHaveLength(1);
    expect(report.divergences[0]!.known).toEqual({ id: "ver", classification: "open", summary: "the version register" });
    expect(replayClean(report)).toBe(true);
  });

  it("relocates register accesses to where the target put the IOMMU", async () => {
    const trace = record(p);
    const shift = 0x10_0000;
    const block = trace.header.machine.iommus[0]!;
    const moved: Trace = {
      header: { ...trace.header, machine: { ...trace.header.machine, iommus: [{ ...block, base: block.base - shift }] } },
      ops: trace.ops.map((op) => (op.op === "mmio-read" || op.op === "mmio-write" ? { ...op, addr: op.addr - shift } : op)),
    };
    const report = await replayOnModel(p, moved);
    expect(report.divergences).toEqual([]);
    expect(report.compared).toBeGreaterThan(10);
  });

  it("answers operations outside RAM, unknown devices and PCI configuration without throwing", async () => {
    const trace = record(p, bringUp);
    const ops: TraceOp[] = [
      { op: "mem-read", addr: 2 ** 30, len: 4, expect: new Uint8Array(4) },
      { op: "mem-write", addr: 2 ** 30 - 2, data: new Uint8Array(4) },
      { op: "dma", dir: "read", rid: 0x99, iova: 0, len: 4 },
      { op: "pci-read", rid: 0x20, offset: 0, size: 4, expect: 0x11e81234n },
      { op: "mmio-read", addr: 0xfed9_0000, size: 2, expect: 0n },
      { op: "mmio-read", addr: 0xdead_0000, size: 4, expect: 0xffff_ffffn },
    ];
    const report = await replayOnModel(p, { ...trace, ops: [...trace.ops, ...ops] });
    const base = trace.ops.length;
    expect(report.failures.map((f) => f.index)).toEqual([base, base + 1, base + 2]);
    expect(report.unsupported.map((u) => u.index)).toEqual([base + 3, base + 4]);
    expect(report.divergences).toEqual([]);
    expect(report.stoppedAt).toBeUndefined();
  });
});
