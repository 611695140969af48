import { describe, expect, it } from "vitest";
import { parseShard, parseWorkers } from "../src/commands/parallel.js";
import { viommu } from "./run-cli.js";

function json(args: string[]): { status: number | null; doc: Record<string, unknown> } {
  const r = viommu(args);
  if (r.stdout.trim() === "") throw new Error(`viommu ${args.join(" ")}: no output; stderr: ${r.stderr}`);
  return { status: r.status, doc: JSON.parse(r.stdout) as Record<string, unknown> };
}

type Conformance = { vendors: { vendor: string; results: { id: string; status: string }[]; passed: number }[] };
type Campaign = { runs: ({ vendor: string; mode: string; seed: number; ms: number } & Record<string, unknown>)[] };

describe("--workers and --shard", () => {
  it("parse i/n with 1 <= i <= n and a thread count, refusing anything else", () => {
    expect(parseShard("2/8")).toEqual({ index: 2, count: 8 });
    for (const bad of ["0/4", "5/4", "1/0", "a/b", "3"]) expect(() => parseShard(bad)).toThrow(/--shard/);
    expect(parseWorkers("4")).toBe(4);
    for (const bad of ["0", "-1", "x", "1000"]) expect(() => parseWorkers(bad)).toThrow(/--workers/);
  });

  it("give the same conformance report whatever the number of workers, and shards that together run every case once", () => {
    const one = json(["conformance", "--vendor", "mock", "--json"]);
    const three = json(["conformance", "--vendor", "mock", "--json", "--workers", "3"]);
    expect(three.doc).toEqual(one.doc);
    expect(three.status).toBe(one.status);
    const all = (one.doc as Conformance).vendors[0]!.results.map((r) => `${r.id}:${r.status}`);
    const shards = [1, 2, 3].map((i) => (json(["conformance", "--vendor", "mock", "--json", "--shard", `${i}/3`]).doc as Conformance & { shard: string }));
    expect(shards.map((s) => s.shard)).toEqual(["1/3", "2/3", "3/3"]);
    const union = shards.flatMap((s) => s.vendors[0]!.results.map((r) => `${r.id}:${r.status}`));
    expect(union.sort()).toEqual([...all].sort());
    expect(shards[0]!.vendors[0]!.results.length).toBeGreaterThan(0);
  }, 120_000);

  it("give the same campaign runs whatever the number of workers (only the wall time differs), in (vendor, mode, seed) order", () => {
    const args = ["campaign", "--vendor", "mock", "--mode", "nested", "--seed", "5", "--seeds", "3", "--steps", "40", "--json"];
    const strip = (doc: Record<string, unknown>): unknown => ({ ...doc, runs: (doc as Campaign).runs.map(({ ms: _ms, ...rest }) => rest) });
    const one = json(args);
    const two = json([...args, "--workers", "2"]);
    expect(strip(two.doc)).toEqual(strip(one.doc));
    expect((one.doc as Campaign).runs.map((r) => r.seed)).toEqual([5, 6, 7]);
    const second = json([...args, "--shard", "2/2"]);
    expect((second.doc as Campaign).runs.map((r) => r.seed)).toEqual([6]);
  }, 120_000);
});
