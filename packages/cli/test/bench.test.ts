import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { benchCommand } from "../src/commands/bench.js";
import { coreFigures } from "../src/bench/figures/index.js";
import { BenchRefused, isOneShot, measurePrepared, type FigureSpec, type Prepared } from "../src/bench/harness.js";
import { memoryIo } from "../src/io.js";

// Benchmarks are never timed tests: these check that each figure verifies its work and refuses wrong work.
const FAST = { rounds: 5, batchMs: 0.2 };

function plain(result: (n: number) => number, verify?: () => string | undefined): Prepared {
  return { model: { run: result, verify }, baseline: { run: (n) => n }, sameOutputs: true };
}

const spec = (name: string, prepared: () => Prepared): FigureSpec => ({ name, unit: "M ops/s", prepare: prepared });

describe("bench harness", () => {
  it("prints a verified figure with its baseline, ratio and spread over at least five rounds", () => {
    const r = measurePrepared(spec("ok", () => plain((n) => n)), plain((n) => n), FAST);
    expect(r).toMatchObject({ name: "ok", verified: true, rounds: 5 });
    expect(r.ratio).toBeGreaterThan(0);
    expect(r.spread![0]).toBeLessThanOrEqual(r.spread![1]);
    expect(r.best).toBeGreaterThan(0);
  });

  it("refuses a figure whose model failed an operation, whose outputs differ from the baseline's, or whose state is wrong", () => {
    expect(() => measurePrepared(spec("nan", () => plain(() => NaN)), plain(() => NaN), FAST)).toThrow(BenchRefused);
    expect(() => measurePrepared(spec("differs", () => plain((n) => n + 1)), plain((n) => n + 1), FAST)).toThrow(/different outputs/);
    expect(() => measurePrepared(spec("state", () => plain((n) => n)), plain((n) => n, () => "3 bytes wrong"), FAST)).toThrow(/3 bytes wrong/);
  });
});

describe("core figures", () => {
  const rated = coreFigures.filter((f): f is FigureSpec => !isOneShot(f));

  it("have stable, unique names", () => {
    const names = coreFigures.flatMap((f) => (isOneShot(f) ? f.yields : [f.name]));
    expect(new Set(names).size).toBe(names.length);
    expect(names).toEqual(
      expect.arrayContaining([
        "iotlb-hit-translate-vs-map",
        "iotlb-hit-dma-device-vs-map",
        "dma-device-hit-collections-per-million",
        "nested-4x4-miss-translate-vs-dataview",
        "dma-read-64k-vs-copy",
        "dma-write-64k-vs-copy",
        "iotlb-range-invalidate-16-in-1m-vs-1k",
        "claim-1tib-setup-ms",
        "claim-1tib-touch-64mib-rss-growth-mib",
        "internal-iotlb-lookup-vs-map",
        "internal-nested-walker-vs-dataview",
      ]),
    );
  });

  for (const figure of rated) {
    it(`${figure.name}: verifies its work, and refuses once the work is broken`, async () => {
      const good = await figure.prepare({ quick: true });
      try {
        expect(measurePrepared(figure, good, FAST).verified).toBe(true);
      } finally {
        good.dispose?.();
      }
      const bad = await figure.prepare({ quick: true });
      try {
        if (bad.sabotage === undefined) return; // an internal figure with nothing of the model's own to break
        bad.sabotage();
        expect(() => measurePrepared(figure, bad, FAST)).toThrow(BenchRefused);
      } finally {
        bad.dispose?.();
      }
    }, 60_000);
  }
});

describe("viommu bench", () => {
  const good = spec("good-figure", () => plain((n) => n));
  const broken = spec("broken-figure", () => plain((n) => n, () => "the DMA moved nothing"));

  it("prints verified figures, refuses broken ones (not printed, exit 1), keeps --json names, compares against a saved run", async () => {
    const io = memoryIo();
    expect(await benchCommand(io, [], true, { quick: true, figures: [good, broken] })).toBe(1);
    const doc = JSON.parse(io.lines[0]!) as { figures: { name: string; value: number }[]; refused: string[] };
    expect(doc.figures.map((f) => f.name)).toEqual(["good-figure"]);
    expect(doc.refused).toEqual(["broken-figure: refused: model: the DMA moved nothing"]);

    const dir = mkdtempSync(join(tmpdir(), "bench-"));
    const saved = join(dir, "saved.json");
    writeFileSync(saved, JSON.stringify({ figures: [{ ...doc.figures[0], value: doc.figures[0]!.value / 2 }] }));
    const text = memoryIo();
    expect(await benchCommand(text, [], false, { quick: true, figures: [good], compare: saved })).toBe(0);
    expect(text.lines.join("\n")).toMatch(/against .*saved\.json/);
    expect(text.lines.find((l) => l.startsWith("good-figure") && /[+-]\d+\.\d%/.test(l))).toBeDefined();
  });
});

describe("exit cost through the Testbed", () => {
  it("reaches each VM (the testbed's default, a VM's own), charges the guest driver's trapped accesses, and refuses a bad cost", async () => {
    const { Testbed, NO_EXIT_COST, KVM_EXIT_COST } = await import("@viommu/core");
    const { mockPlugin } = await import("@viommu/example-mock");
    const vms = [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }, { devices: [{ rid: 0x200, guestRid: 0x10 }], exitCost: { ...NO_EXIT_COST, mmioNs: 1 } }];
    const made = Testbed.create({ plugin: mockPlugin, vms });
    if (!made.ok) throw new Error(made.error.message);
    const [a, b] = made.value.vms;
    expect(a!.vm.exitCost).toBe(KVM_EXIT_COST);
    expect(a!.vm.exits.mmio).toBeGreaterThan(0);
    expect(a!.vm.exitNanoseconds).toBe(a!.vm.exits.mmio * KVM_EXIT_COST.mmioNs + a!.vm.exits.hypercall * KVM_EXIT_COST.hypercallNs + a!.vm.exits.pciConfig * KVM_EXIT_COST.pciConfigNs);
    expect(b!.vm.exitNanoseconds).toBe(b!.vm.exits.mmio);
    made.value.dispose();
    const bad = Testbed.create({ plugin: mockPlugin, vms: [vms[0]!], exitCost: { ...KVM_EXIT_COST, mmioNs: -5 } });
    expect(bad.ok || bad.error.errno).toBe("EINVAL");
  });
});
