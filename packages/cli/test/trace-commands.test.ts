import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { externalTool } from "../../../test-support/external-tools.js";
import { builtMain, oneLine, viommu } from "./run-cli.js";

const qemuX86 = externalTool("qemu-system-x86_64", ["--version"], "qemu-system-x86");
const qemuArm = externalTool("qemu-system-aarch64", ["--version"], "qemu-system-arm");
const dir = mkdtempSync(join(tmpdir(), "viommu-trace-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!existsSync(builtMain))("viommu trace, difftest and conformance --target qemu: options", () => {
  it("record writes a JSON-lines trace with a header naming the format and the vendor, and replay on the model finds no divergence", () => {
    const file = join(dir, "vtd.jsonl");
    const rec = viommu(["trace", "record", "--vendor", "vtd", "--workload", "mapped-dma-lands", "--for", "qemu", "--out", file]);
    expect(rec.status, rec.stderr).toBe(0);
    expect(rec.stdout).toMatch(/^recorded \d+ operations of mapped-dma-lands on vtd shadow into /);
    const lines = readFileSync(file, "utf8").trim().split("\n");
    expect(JSON.parse(lines[0]!)).toMatchObject({ format: "viommu-trace", machine: { iommus: [{ vendor: "vtd" }] } });
    const replay = viommu(["trace", "replay", file, "--json"]);
    expect(replay.status, replay.stderr).toBe(0);
    expect(JSON.parse(replay.stdout)).toMatchObject({ clean: true });
  });

  it("refuses what it cannot do with exit 2 and one line", () => {
    const cases: (readonly string[])[] = [
      ["trace", "record", "--vendor", "nope"],
      ["trace", "record", "--vendor", "hyperv", "--for", "qemu"],
      ["trace", "record", "--vendor", "vtd", "--mode", "sideways"],
      ["trace", "replay", join(dir, "missing.jsonl")],
      ["difftest", "--vendor", "hyperv"],
      ["difftest", "--vendor", "vtd", "--cases", "ten"],
      ["conformance", "--qemu", "/bin/true"],
      ["conformance", "--target", "qemu", "--workers", "2"],
    ];
    for (const args of cases) {
      const r = viommu(args);
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stderr.trim().split("\n"), args.join(" ")).toHaveLength(1);
      expect(r.stderr, args.join(" ")).not.toMatch(/\n\s+at /);
    }
    expect(oneLine(viommu(["conformance", "--traces", dir]).stderr)).toBe(true);
  });
});

describe.skipIf(!existsSync(builtMain) || qemuX86.command === undefined)(`viommu against QEMU's intel-iommu (${qemuX86.version || qemuX86.skipReason})`, () => {
  it("conformance --target qemu gives every case pass, fail or n/a, failures explained by the catalogue", () => {
    const r = viommu(["conformance", "--target", "qemu", "--vendor", "vtd", "--json"]);
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { vendors: { vendor: string; results: { id: string; status: string }[] }[] };
    const results = report.vendors[0]!.results;
    expect(results.length).toBeGreaterThan(5);
    expect(results.find((x) => x.id === "mapped-dma-lands")?.status).toBe("pass");
  }, 120_000);

  it("trace replay --target qemu replays a bring-up recorded for QEMU with nothing unexplained", () => {
    const file = join(dir, "bring-up.jsonl");
    expect(viommu(["trace", "record", "--vendor", "vtd", "--for", "qemu", "--out", file]).status).toBe(0);
    const r = viommu(["trace", "replay", file, "--target", "qemu", "--json"]);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ clean: true });
  }, 120_000);
});

describe.skipIf(!existsSync(builtMain) || qemuArm.command === undefined)(`viommu difftest against QEMU's arm-smmuv3 (${qemuArm.version || qemuArm.skipReason})`, () => {
  it("is deterministic per seed and catalogues every divergence of a short run", () => {
    const out = mkdtempSync(join(dir, "dt-"));
    const a = viommu(["difftest", "--vendor", "smmuv3", "--cases", "8", "--seed", "3", "--out", out, "--json"]);
    expect(a.status, a.stderr).toBe(0);
    const b = viommu(["difftest", "--vendor", "smmuv3", "--cases", "8", "--seed", "3", "--out", out, "--json"]);
    const strip = (s: string): unknown => {
      const { ms: _ms, catalogueMs: _catalogueMs, ...rest } = JSON.parse(s) as Record<string, unknown>;
      return rest;
    };
    expect(strip(b.stdout)).toEqual(strip(a.stdout));
    expect(JSON.parse(a.stdout)).toMatchObject({ vendor: "smmuv3", cases: 8, findings: [] });
  }, 120_000);

  it("gives the same report over two workers, each with its own QEMU, and --shard slices that together run each case once", () => {
    const out = mkdtempSync(join(dir, "dtw-"));
    const args = ["difftest", "--vendor", "smmuv3", "--cases", "6", "--seed", "3", "--out", out, "--json"];
    const strip = (s: string): Record<string, unknown> => {
      const { ms: _ms, catalogueMs: _catalogueMs, qemuStarts: _starts, ...rest } = JSON.parse(s) as Record<string, unknown>;
      return rest;
    };
    const one = viommu(args);
    expect(one.status, one.stderr).toBe(0);
    const two = viommu([...args, "--workers", "2"]);
    expect(two.status, two.stderr).toBe(0);
    expect(strip(two.stdout)).toEqual(strip(one.stdout));
    const slices = [1, 2, 3].map((i) => strip(viommu([...args, "--shard", `${i}/3`]).stdout) as { shard: string; cases: number; byStatus: Record<string, number> });
    expect(slices.map((s) => [s.shard, s.cases])).toEqual([["1/3", 2], ["2/3", 2], ["3/3", 2]]);
    const summed: Record<string, number> = {};
    for (const s of slices) for (const [k, n] of Object.entries(s.byStatus)) summed[k] = (summed[k] ?? 0) + n;
    expect(summed).toEqual((strip(one.stdout) as { byStatus: Record<string, number> }).byStatus);
  }, 180_000);
});
