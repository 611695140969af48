import { readdirSync, readFileSync } from "node:fs";
import { amdViPlugin } from "@viommu/amd-vi/plugin";
import { smmuv3Plugin } from "@viommu/smmuv3/plugin";
import { vtdPlugin } from "@viommu/vtd/plugin";
import { ModelTarget, parseTrace, replay, type Trace } from "@viommu/trace";
import { describe, expect, it } from "vitest";
import { QemuTarget, qemuDifferences, qemuDifferencesFor, qemuMachine } from "../src/index.js";
import { describeWith, qemuX86 } from "./support.js";

/**
 * The minimal traces of what difftest found, each named after the catalogue entry that explains it: the model's
 * answers are the expectations, QEMU's differ only where the catalogue says.
 */
const dir = new URL("./findings/", import.meta.url);
const plugins = [vtdPlugin, amdViPlugin, smmuv3Plugin];
function traces(from: URL): { id: string; trace: Trace }[] {
  return readdirSync(from)
    .filter((f) => f.endsWith(".jsonl"))
    .map((file) => {
      const parsed = parseTrace(readFileSync(new URL(file, from), "utf8"));
      if (!parsed.ok) throw new Error(`${file}: line ${parsed.error.line}: ${parsed.error.message}`);
      return { id: file.replace(/\.jsonl$/, ""), trace: parsed.trace };
    });
}
const findings = traces(dir);
/**
 * Findings the model was fixed for: the trace that found each, its expectations now the fixed model's answers,
 * which QEMU gives too, op for op.
 */
const fixed = traces(new URL("./fixed/", dir));

function vendorOf(trace: Trace): string {
  return trace.header.machine.iommus[0]!.vendor;
}

describe("difftest findings", () => {
  it("are each named after a catalogue entry of their vendor", () => {
    expect(findings.length).toBeGreaterThan(0);
    for (const f of findings) expect(qemuDifferences.find((d) => d.id === f.id)?.vendor, f.id).toBe(vendorOf(f.trace));
  });

  // A model deviation pending a fix: when the model is fixed this fails, and the entry and its trace go.
  for (const f of findings) {
    it(`${f.id}: the model still answers as the trace expects`, async () => {
      const plugin = plugins.find((p) => p.id === vendorOf(f.trace))!;
      const t = ModelTarget.create(plugin, plugins, f.trace.header);
      if (!t.ok) throw new Error(t.error.message);
      try {
        const r = await replay(f.trace, t.value);
        expect(r.divergences.map((d) => `line ${d.index + 2}`)).toEqual([]);
      } finally {
        t.value.dispose();
      }
    });
  }
});

describeWith(qemuX86, "difftest findings on QEMU", () => {
  for (const f of findings.filter((x) => vendorOf(x.trace) !== "smmuv3")) {
    it(`${f.id}: every divergence is catalogued, and this entry explains one`, async () => {
      const vendor = vendorOf(f.trace);
      const started = await QemuTarget.start(qemuMachine(vendor)!, f.trace.header);
      if (!started.ok) throw new Error(started.error);
      try {
        const r = await replay(f.trace, started.target, { known: qemuDifferencesFor(vendor) });
        expect(r.divergences.filter((d) => d.known === undefined).map((d) => `line ${d.index + 2}`)).toEqual([]);
        expect(r.divergences.map((d) => d.known?.id)).toContain(f.id);
      } finally {
        await started.target.close();
      }
    });
  }
});

describe("difftest findings fixed in the model", () => {
  for (const f of fixed) {
    it(`${f.id}: the model answers as the trace expects`, async () => {
      const plugin = plugins.find((p) => p.id === vendorOf(f.trace))!;
      const t = ModelTarget.create(plugin, plugins, f.trace.header);
      if (!t.ok) throw new Error(t.error.message);
      try {
        expect((await replay(f.trace, t.value)).divergences.map((d) => `line ${d.index + 2}`)).toEqual([]);
      } finally {
        t.value.dispose();
      }
    });
  }
});

describeWith(qemuX86, "difftest findings fixed in the model, on QEMU", () => {
  for (const f of fixed) {
    it(`${f.id}: QEMU answers every operation as the fixed model does`, async () => {
      const started = await QemuTarget.start(qemuMachine(vendorOf(f.trace))!, f.trace.header);
      if (!started.ok) throw new Error(started.error);
      try {
        expect((await replay(f.trace, started.target)).divergences.map((d) => `line ${d.index + 2}`)).toEqual([]);
      } finally {
        await started.target.close();
      }
    });
  }
});
