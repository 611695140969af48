import { readdirSync, readFileSync } from "node:fs";
import { amdViPlugin } from "@viommu/amd-vi/plugin";
import { smmuv3Plugin } from "@viommu/smmuv3/plugin";
import { vtdPlugin } from "@viommu/vtd/plugin";
import { ModelTarget, parseTrace, replay, type Trace } from "@viommu/trace";
import { describe, expect, it } from "vitest";
import { QemuTarget, qemuDifferences, qemuDifferencesFor, qemuFailures, qemuMachine } from "../src/index.js";
import { describeWith, qemuArm, qemuX86 } from "./support.js";

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
 * which QEMU gives too (where QEMU differs elsewhere in the trace, the catalogue explains it).
 */
const fixed = traces(new URL("./fixed/", dir));

/** The catalogue entry a finding's trace is named after: `<entry id>.jsonl`, or `<entry id>--<what else>.jsonl`. */
function entryOf(f: { id: string }): string {
  return f.id.split("--")[0]!;
}

function vendorOf(trace: Trace): string {
  return trace.header.machine.iommus[0]!.vendor;
}

/** The lines of `trace` where the model answers otherwise than the trace expects, or fails to answer (an exception). */
async function modelDivergences(trace: Trace): Promise<string[]> {
  const plugin = plugins.find((p) => p.id === vendorOf(trace))!;
  const t = ModelTarget.create(plugin, plugins, trace.header);
  if (!t.ok) throw new Error(t.error.message);
  try {
    const r = await replay(trace, t.value);
    return [...r.divergences.map((d) => `line ${d.index + 2}`), ...r.failures.map((f) => `line ${f.index + 2}: ${f.reason.split("\n")[0]}`)];
  } finally {
    t.value.dispose();
  }
}

/** Runs `body` on a QEMU started as the trace's machine, and stops QEMU whatever happens. */
async function withQemu<T>(header: Trace["header"], body: (target: QemuTarget) => Promise<T>, reusable = false): Promise<T> {
  const started = await QemuTarget.start(qemuMachine(vendorOf({ header, ops: [] }))!, header, reusable ? { reusable: true } : undefined);
  if (!started.ok) throw new Error(started.error);
  try {
    return await body(started.target);
  } finally {
    await started.target.close();
  }
}

describe("difftest findings", () => {
  it("are each named after a catalogue entry of their vendor", () => {
    expect(findings.length).toBeGreaterThan(0);
    for (const f of findings) expect(qemuDifferences.find((d) => d.id === entryOf(f))?.vendor, f.id).toBe(vendorOf(f.trace));
  });

  // A model deviation pending a fix: when the model is fixed this fails, and the entry and its trace go.
  for (const f of findings) {
    it(`${f.id}: the model still answers as the trace expects`, async () => {
      expect(await modelDivergences(f.trace)).toEqual([]);
    });
  }
});

/** Every divergence of the finding's trace on QEMU is catalogued, and the entry it is named after explains one. */
function explainedOnQemu(f: { id: string; trace: Trace }): Promise<void> {
  return withQemu(f.trace.header, async (target) => {
    const r = await replay(f.trace, target, { known: qemuDifferencesFor(vendorOf(f.trace)) });
    expect(r.divergences.filter((d) => d.known === undefined).map((d) => `line ${d.index + 2}`)).toEqual([]);
    expect(r.divergences.map((d) => d.known?.id)).toContain(entryOf(f));
  });
}

describeWith(qemuArm, "difftest findings on QEMU's arm-smmuv3", () => {
  for (const f of findings.filter((x) => vendorOf(x.trace) === "smmuv3")) {
    it(`${f.id}: every divergence is catalogued, and this entry explains one`, () => explainedOnQemu(f));
  }

  it("smmuv3-base-registers-unknown-at-reset: after a reset QEMU keeps the event queue base a previous guest wrote; a guest enabling the queue without writing it diverges, and the entry explains it", async () => {
    const withQueue = findings.find((x) => x.id === "smmuv3-command-reserved-bits-accepted")!.trace;
    const header = withQueue.header;
    // A guest that programs the event queue (at 0x42002000), then one that enables it without writing its base.
    const first: Trace = { header, ops: [{ op: "mmio-write", addr: 0x905_00a0, size: 8, value: 0x4000_0000_4200_2000n | 8n }] };
    const second: Trace = {
      header,
      ops: [
        { op: "mmio-write", addr: 0x905_0020, size: 4, value: 0xdn },
        { op: "dma", dir: "read", rid: 0x20, iova: 0x10_0000, len: 64, expect: { ok: false } },
        { op: "mem-read", addr: 0x4200_2000, len: 32, expect: new Uint8Array(32) },
      ],
    };
    await withQemu(
      header,
      async (target) => {
        expect((await replay(first, target)).failures).toEqual([]);
        expect(await target.reset(header)).toBeUndefined();
        const r = await replay(second, target, { known: qemuDifferencesFor("smmuv3") });
        const atQueue = r.divergences.find((d) => d.op.op === "mem-read");
        expect(atQueue?.known?.id).toBe("smmuv3-base-registers-unknown-at-reset");
        expect(r.divergences.filter((d) => d.known === undefined)).toEqual([]);
      },
      true,
    );
  });
});

/** Traces under which QEMU itself fails (aborts, hangs): each named after its qemuFailures entry. */
const failures = traces(new URL("./failures/", dir));

describeWith(qemuX86, "QEMU failures difftest found", () => {
  for (const f of failures) {
    it(`${f.id}: QEMU fails under the trace, and the catalogue entry explains the failure`, async () => {
      await withQemu(f.trace.header, async (target) => {
        const reason = (await replay(f.trace, target)).failures[0]?.reason ?? "";
        expect(reason).toMatch(/QEMU/);
        expect(qemuFailures.filter((x) => x.vendor === vendorOf(f.trace) && x.matches(f.trace, reason)).map((x) => x.id)).toEqual([f.id]);
      });
    });
  }
});

describeWith(qemuX86, "difftest findings on QEMU", () => {
  for (const f of findings.filter((x) => vendorOf(x.trace) !== "smmuv3")) {
    it(`${f.id}: every divergence is catalogued, and this entry explains one`, () => explainedOnQemu(f));
  }
});

describe("difftest findings fixed in the model", () => {
  for (const f of fixed) {
    it(`${f.id}: the model answers as the trace expects`, async () => {
      expect(await modelDivergences(f.trace)).toEqual([]);
    });
  }
});

describeWith(qemuX86, "difftest findings fixed in the model, on QEMU", () => {
  for (const f of fixed) {
    it(`${f.id}: QEMU answers as the fixed model does, but for catalogued differences elsewhere`, async () => {
      await withQemu(f.trace.header, async (target) => {
        const r = await replay(f.trace, target, { known: qemuDifferencesFor(vendorOf(f.trace)) });
        expect(r.divergences.filter((d) => d.known === undefined).map((d) => `line ${d.index + 2}`)).toEqual([]);
        // A catalogued difference may sit in the same register as a fixed one: where both record a VT-d fault (F
        // in a fault-recording register, 0x220 on), its reason must agree.
        const vtdBase = f.trace.header.machine.iommus.find((b) => b.vendor === "vtd")?.base;
        for (const d of r.divergences) {
          const offset = vtdBase === undefined || d.op.op !== "mmio-read" ? -1 : d.op.addr - vtdBase;
          if (offset >= 0x220 && offset < 0x300 && offset % 16 === 0xc && typeof d.expected === "bigint" && typeof d.actual === "bigint" && (d.expected & d.actual & 0x8000_0000n) !== 0n) {
            expect(d.actual & 0xffn, `line ${d.index + 2}: fault reason`).toBe(d.expected & 0xffn);
          }
        }
      });
    });
  }
});
