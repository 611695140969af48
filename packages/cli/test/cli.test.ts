import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { mockPlugin } from "@viommu/example-mock/plugin";
import { conformanceCommand, decodeCommand, demoCommand, memoryIo, parseRequesterId, parseU64, runDemo, selectVendors, UsageError, walkCommand } from "../src/index.js";

const root = join(import.meta.dirname, "../../..");
const main = join(import.meta.dirname, "../dist/main.js");
const shim = join(import.meta.dirname, "../bin/viommu.js");

/** The built command as a user runs it: a separate process, from the repository root. */
function viommu(args: string[], input?: string | Uint8Array): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [shim, ...args], { cwd: root, encoding: "utf8", input });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** One line on stderr, no stack trace. */
function oneLine(stderr: string): boolean {
  const lines = stderr.trim().split("\n");
  return lines.length === 1 && !/\n\s+at /.test(stderr) && lines[0]!.startsWith("viommu: error:");
}

describe("viommu decode", () => {
  it("prints the shared JSON shape, and one object per input line in order, bad lines on stderr", () => {
    const io = memoryIo();
    expect(decodeCommand(io, mockPlugin, { structure: "cmd", hex: "0x0000000000010001,0x0" }, true)).toBe(0);
    expect(JSON.parse(io.lines[0]!)).toEqual({ vendor: "mock", structure: "cmd", name: "INV_DEVICE", code: 1, fields: { OP: 1, IRQ: 0, LEAF: 0, RID: 1, ASID: 0, NPAGES: 0, ADDR: 0, DATA: 0 } });
    const dir = mkdtempSync(join(tmpdir(), "viommu-"));
    const file = join(dir, "in.jsonl");
    writeFileSync(file, ['{"hex":["0x5","0"]}', '{"words":["ff","0"]}', '{"hex":["0x1"]}'].join("\n"));
    const many = memoryIo();
    expect(decodeCommand(many, mockPlugin, { structure: "cmd", input: file }, true)).toBe(1);
    expect(many.lines.map((l) => JSON.parse(l).name)).toEqual(["SYNC", "UNKNOWN"]);
    expect(many.errors).toEqual([expect.stringMatching(/line 3: cmd takes 2 64-bit words, got 1/)]);
  });

  it("names the accepted structures when the structure is unknown", () => {
    expect(() => decodeCommand(memoryIo(), mockPlugin, { structure: "nope", hex: "0" }, true)).toThrow(UsageError);
    expect(() => decodeCommand(memoryIo(), mockPlugin, { structure: "nope", hex: "0" }, true)).toThrow(/cmd, event, dte, irte, pte/);
  });
});

describe("one number syntax", () => {
  it("takes 0x hex and decimal everywhere, plain hex where a field is hex, 64-bit values, and BDFs for requester ids", () => {
    expect(parseU64("0x10", "--x")).toBe(16n);
    expect(parseU64("10", "--x")).toBe(10n);
    expect(parseU64("ff", "--reg", { hexOnly: true })).toBe(255n);
    expect(() => parseU64("ff", "--iova")).toThrow(/--iova: "ff" is not a number/);
    expect(parseU64("0xffffffffffffffff", "--x")).toBe((1n << 64n) - 1n);
    expect(() => parseU64("0x10000000000000000", "--x")).toThrow(/64 bits/);
    expect(parseRequesterId("02:00.0", "--rid")).toBe(0x200);
    expect(parseRequesterId("0000:02:1f.7", "--rid")).toBe(0x2ff);
    expect(parseRequesterId("0x18", "--rid")).toBe(0x18);
    expect(() => parseRequesterId("02:20.0", "--rid")).toThrow(/above 31/);
  });
});

describe("viommu demo and conformance", () => {
  it("the demo passes every step on the mock, live migration included", () => {
    const report = runDemo(mockPlugin, [mockPlugin]);
    expect(report.steps.filter((s) => !s.ok)).toEqual([]);
    expect(report.isolationViolations).toBe(0);
    expect(report.faultRecords.length).toBeGreaterThan(0);
    const migration = report.steps.find((s) => s.step === "live-migration");
    expect(migration).toMatchObject({ ok: true });
    expect(migration?.notApplicable).toBeUndefined();
    expect(migration?.detail).toMatch(/pre-copy pages per round \d+(, \d+)+; stop-and-copy \d+/);
    expect(report.steps.find((s) => s.step === "pasid")).toMatchObject({ ok: true, notApplicable: true, detail: expect.stringMatching(/PASID tables/) });
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
  it("says so when a vendor has no walker", async () => {
    const { walk: _walker, ...withoutWalker } = mockPlugin;
    await expect(walkCommand(memoryIo(), withoutWalker, { memory: ["x"] })).rejects.toThrow(/no table walker/);
  });
});

describe.skipIf(!existsSync(main))("the built command, as a user runs it", () => {
  it("is linked by npm as node_modules/.bin/viommu through the committed shim", () => {
    expect(existsSync(join(root, "node_modules/.bin/viommu"))).toBe(true);
    const r = spawnSync(join(root, "node_modules/.bin/viommu"), ["--version"], { cwd: root, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(JSON.parse(readFileSync(join(root, "packages/cli/package.json"), "utf8")).version);
  });

  it("answers --help for the program and for each command, listing each command's options", () => {
    const top = viommu(["--help"]);
    expect(top.status).toBe(0);
    for (const c of ["plugins", "demo", "conformance", "decode", "walk", "acpi", "bench", "campaign"]) expect(top.stdout).toContain(c);
    const walk = viommu(["walk", "--help"]);
    expect(walk.status).toBe(0);
    for (const o of ["--vendor", "--memory", "--reg", "--iova", "--access", "--requests", "--json"]) expect(walk.stdout).toContain(o);
  });

  it("finds installed plugins by their package.json and runs conformance as JSON", () => {
    const plugins = JSON.parse(viommu(["plugins", "--json"]).stdout);
    expect(plugins.plugins.map((p: { id: string }) => p.id)).toContain("mock");
    const r = viommu(["conformance", "--vendor", "mock", "--json"]);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).vendors[0].vendor).toBe("mock");
  });

  it.each([
    [["plugins", "--iova", "5"], /unknown option '--iova'/],
    [["conformance", "--seed", "abc"], /--seed: "abc" is not a number/],
    [["walk", "--vendor", "vtd", "--memory", "x", "--access", "wrtie"], /--access.*wrtie/],
    [["walk", "--vendor", "vtd", "--memory", "README.md", "--reg", "FOO=1", "--rid", "1", "--iova", "0"], /--reg FOO: vtd's walker takes RTADDR/],
    [["acpi", "--vendor", "nope"], /not installed \(installed: .*mock/],
    [["decode", "--vendor", "mock", "--structure", "cmd", "--hex", "zz,0"], /--hex: word 0: "zz" is not a number/],
    [["frobnicate"], /unknown command 'frobnicate'/],
    [["demo", "--vendor", "mock", "--property", "caching-mode=on"], /--property: mock: property 'caching-mode' not found/],
    [["demo", "--vendor", "mock", "--property", "caching-mode"], /--property caching-mode: expected NAME=VALUE/],
    [["conformance", "--plugin", "/nonexistent"], /--plugin \/nonexistent: no package.json declaring/],
  ])("a usage error exits 2 with one line naming the option: %j", (args, message) => {
    const r = viommu(args);
    expect(r.status).toBe(2);
    expect(oneLine(r.stderr), r.stderr).toBe(true);
    expect(r.stderr).toMatch(message);
  });

  it("an I/O error is one line naming the option and file, exit 1: missing input, unwritable --out, truncated .gz", () => {
    const dir = mkdtempSync(join(tmpdir(), "viommu-"));
    const missing = viommu(["decode", "--vendor", "mock", "--structure", "cmd", "--input", join(dir, "nope.jsonl")]);
    expect(missing.status).toBe(1);
    expect(oneLine(missing.stderr), missing.stderr).toBe(true);
    expect(missing.stderr).toMatch(/--input .*nope.jsonl: no such file/);
    const out = viommu(["acpi", "--vendor", "vtd", "--out", join(dir, "no-such-dir", "dmar.bin")]);
    expect(out.status).toBe(1);
    expect(out.stderr).toMatch(/--out .*dmar.bin: no such file/);
    const gz = join(dir, "image.gz");
    writeFileSync(gz, gzipSync(new Uint8Array(1 << 16)).subarray(0, 40));
    const truncated = viommu(["walk", "--vendor", "vtd", "--memory", gz, "--reg", "RTADDR=0x1000", "--rid", "0", "--iova", "0"]);
    expect(truncated.status).toBe(1);
    expect(oneLine(truncated.stderr), truncated.stderr).toBe(true);
    expect(truncated.stderr).toMatch(/--memory .*image.gz: truncated or corrupt gzip data/);
    const requests = viommu(["walk", "--vendor", "vtd", "--memory", "README.md", "--reg", "RTADDR=0x1000", "--requests", join(dir, "none.jsonl")]);
    expect(requests.status).toBe(1);
    expect(requests.stderr).toMatch(/--requests .*none.jsonl: no such file/);
  });

  it("decode --input - reads stdin", () => {
    const r = viommu(["decode", "--vendor", "mock", "--structure", "cmd", "--input", "-", "--json"], '{"hex":["0x5","0"]}\n');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).name).toBe("SYNC");
  });

  it("ends quietly when its reader goes away (| head)", () => {
    const r = spawnSync("sh", ["-c", `"${process.execPath}" "${shim}" acpi --vendor vtd | head -n 1`], { cwd: root, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout.split("\n").filter(Boolean)).toHaveLength(1);
    expect(r.stderr).toBe("");
  });
});
