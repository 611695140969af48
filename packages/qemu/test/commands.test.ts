import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { amdViPlugin } from "@viommu/amd-vi/plugin";
import { smmuv3Plugin } from "@viommu/smmuv3/plugin";
import { vtdPlugin } from "@viommu/vtd/plugin";
import { traceRecord, type CommandIo } from "@viommu/trace";
import { afterAll, describe, expect, it } from "vitest";
import { qemuConformance, qemuRecordProfile, traceReplay } from "../src/index.js";
import { describeWith, qemuX86 } from "./support.js";

const plugins = [vtdPlugin, amdViPlugin, smmuv3Plugin];
const dir = mkdtempSync(join(tmpdir(), "viommu-qemu-cmd-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function io(): CommandIo & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l), progress: false };
}

function recorded(name: string, workload: string): string {
  const file = join(dir, name);
  const o = io();
  expect(traceRecord(o, { vendor: "vtd", plugins, workload, out: file, profile: qemuRecordProfile("vtd") })).toBe(0);
  expect(o.lines[0]).toMatch(new RegExp(`recorded \\d+ operations of ${workload} on vtd shadow into`));
  return file;
}

describe("trace replay on the model (command)", () => {
  it("replays a recorded trace with no divergence and exit 0", async () => {
    const file = recorded("model.jsonl", "dma-fault-reported");
    const o = io();
    expect(await traceReplay(o, { file, target: "model", plugins })).toBe(0);
    expect(o.lines[0]).toMatch(/on model vtd shadow: (\d+)\/\1 operations, \d+ answers compared, 0 divergences/);
  });

  it("reports a changed expectation as the first divergence with its line, and exits 1", async () => {
    const file = recorded("changed.jsonl", "bring-up");
    const lines = readFileSync(file, "utf8").split("\n");
    const at = lines.findIndex((l) => l.includes('"mmio-read"'));
    lines[at] = lines[at]!.replace(/"expect":"0x[0-9a-f]+"/, '"expect":"0x12345"');
    writeFileSync(file, lines.join("\n"));
    const o = io();
    expect(await traceReplay(o, { file, target: "model", plugins, json: true })).toBe(1);
    const j = JSON.parse(o.lines[0]!) as { divergences: { line: number; expected: string }[]; clean: boolean };
    expect(j.clean).toBe(false);
    expect(j.divergences).toEqual([expect.objectContaining({ line: at + 1, expected: "0x12345" })]);
  });

  it("answers a malformed file, a missing file and an uninstalled vendor with a usage error naming the cause", async () => {
    const bad = join(dir, "bad.jsonl");
    writeFileSync(bad, '{"format":"viommu-trace","version":1,"machine":{"ram":[],"iommus":[],"devices":[]}}\n{"op":"dma"}\n');
    const o = io();
    expect(await traceReplay(o, { file: bad, target: "model", plugins })).toBe(2);
    expect(o.errors[0]).toMatch(/bad\.jsonl:2: /);
    expect(await traceReplay(o, { file: join(dir, "none.jsonl"), target: "model", plugins })).toBe(2);
    expect(o.errors[1]).toMatch(/cannot read/);
    const file = recorded("v.jsonl", "bring-up");
    expect(await traceReplay(o, { file, target: "model", plugins: [smmuv3Plugin] })).toBe(2);
    expect(o.errors[2]).toMatch(/vtd IOMMU, which is not installed/);
  });
});

describeWith(qemuX86, "trace replay and conformance on QEMU (commands)", () => {
  it("replays the driver's bring-up on QEMU: only catalogued differences, exit 0", async () => {
    const file = recorded("qemu.jsonl", "bring-up");
    const o = io();
    expect(await traceReplay(o, { file, target: "qemu", plugins })).toBe(0);
    expect(o.lines[0]).toMatch(/intel-iommu: \d+\/\d+ operations, \d+ answers compared, \d+ divergences \(0 unexplained\)/);
    expect(o.lines[1]).toMatch(/^FIRST line 3: .*"0xfed90000"/);
    expect(o.lines.some((l) => l.includes("known: vtd-capability-registers (open)"))).toBe(true);
  });

  it("runs one conformance case on QEMU as JSON and writes the failing case's trace", async () => {
    const o = io();
    const code = await qemuConformance(o, { vendors: ["vtd"], plugins, only: ["readonly-dma-write-blocked", "mapped-dma-lands"], tracesDir: dir, json: true });
    expect(code).toBe(0);
    const j = JSON.parse(o.lines[0]!) as { vendors: { results: { id: string; status: string }[] }[] };
    expect(j.vendors[0]!.results.map((r) => [r.id, r.status])).toEqual([
      ["mapped-dma-lands", "pass"],
      ["readonly-dma-write-blocked", "fail"],
    ]);
    // The failing case's trace reproduces the QEMU deviation through `trace replay`.
    const r = io();
    expect(await traceReplay(r, { file: join(dir, "vtd-readonly-dma-write-blocked.jsonl"), target: "qemu", plugins })).toBe(0);
    expect(r.lines.join("\n")).toMatch(/vtd-readonly-write-cached-no-fault/);
  });

  it("refuses an unknown vendor and a missing QEMU as usage errors", async () => {
    const o = io();
    expect(await qemuConformance(o, { vendors: ["hyperv"], plugins })).toBe(2);
    expect(await qemuConformance(o, { vendors: ["vtd"], plugins, qemu: "/nonexistent/qemu" })).toBe(2);
    expect(o.errors).toEqual([expect.stringMatching(/no hyperv IOMMU/), expect.stringMatching(/not on PATH/)]);
  });
});
