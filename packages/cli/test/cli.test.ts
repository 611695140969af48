import { describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mockPlugin } from "@viommu/example-mock/plugin";
import { conformanceCommand, decodeCommand, demoCommand, memoryIo, runDemo, selectVendors, walkCommand } from "../src/index.js";

const main = join(import.meta.dirname, "../dist/main.js");

describe("viommu decode", () => {
  it("prints the shared JSON shape, and one object per input line in order", () => {
    const io = memoryIo();
    expect(decodeCommand(io, mockPlugin, { structure: "cmd", hex: "0x0000000000010001,0x0" }, true)).toBe(0);
    expect(JSON.parse(io.lines[0]!)).toEqual({ vendor: "mock", structure: "cmd", name: "INV_DEVICE", code: 1, fields: { OP: 1, IRQ: 0, LEAF: 0, RID: 1, ASID: 0, NPAGES: 0, ADDR: 0, DATA: 0 } });
    const dir = mkdtempSync(join(tmpdir(), "viommu-"));
    const file = join(dir, "in.jsonl");
    writeFileSync(file, ['{"hex":["0x5","0"]}', '{"hex":["0xff","0"]}', '{"hex":["0x1"]}'].join("\n"));
    const many = memoryIo();
    expect(decodeCommand(many, mockPlugin, { structure: "cmd", input: file }, true)).toBe(1);
    expect(many.lines.map((l) => JSON.parse(l).name ?? "error")).toEqual(["SYNC", "UNKNOWN", "error"]);
  });

  it("names the accepted structures when the structure is unknown", () => {
    const io = memoryIo();
    expect(decodeCommand(io, mockPlugin, { structure: "nope", hex: "0" }, true)).toBe(2);
    expect(io.errors[0]).toMatch(/cmd, event, dte, irte, pte/);
  });
});

describe("viommu demo and conformance", () => {
  it("the demo passes every step on the mock", () => {
    const report = runDemo(mockPlugin, [mockPlugin]);
    expect(report.steps.filter((s) => !s.ok)).toEqual([]);
    expect(report.isolationViolations).toBe(0);
    expect(report.faultRecords.length).toBeGreaterThan(0);
    const io = memoryIo();
    expect(demoCommand(io, [mockPlugin], [mockPlugin], 1, true)).toBe(0);
    expect(JSON.parse(io.lines[0]!).vendors[0].ok).toBe(true);
  });

  it("conformance --json runs every case on the mock, none failing", () => {
    const io = memoryIo();
    expect(conformanceCommand(io, [mockPlugin], [mockPlugin], 1, true)).toBe(0);
    const out = JSON.parse(io.lines[0]!);
    expect(out.vendors[0].failed).toBe(0);
    expect(out.vendors[0].results.length).toBeGreaterThanOrEqual(20);
  });

  it("refuses an unknown vendor, naming the installed ones", () => {
    const installed = [{ plugin: mockPlugin, packageName: "@viommu/example-mock", version: "0.1.0", directory: ".", manifest: { plugin: "./plugin", kind: "example" as const } }];
    expect(selectVendors(installed, "vtd")).toEqual({ error: 'vendor "vtd" is not installed (installed: mock)' });
    expect(selectVendors(installed, undefined)).toEqual({ plugins: [mockPlugin] });
  });
});

describe("viommu walk", () => {
  it("says so when a vendor has no walker", () => {
    const io = memoryIo();
    expect(walkCommand(io, mockPlugin, { memory: "x" })).toBe(2);
    expect(io.errors[0]).toMatch(/no table walker/);
  });
});

describe.skipIf(!existsSync(main))("the built command", () => {
  it("finds installed plugins by their package.json and runs conformance as JSON", () => {
    const plugins = JSON.parse(execFileSync(process.execPath, [main, "plugins", "--json"], { encoding: "utf8" }));
    expect(plugins.plugins.map((p: { id: string }) => p.id)).toContain("mock");
    const r = spawnSync(process.execPath, [main, "conformance", "--vendor", "mock", "--json"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).vendors[0].vendor).toBe("mock");
  });

  it("exits 2 with a message naming the installed vendors for an unknown one", () => {
    const r = spawnSync(process.execPath, [main, "acpi", "--vendor", "nope"], { encoding: "utf8" });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/not installed \(installed: .*mock/);
  });
});
