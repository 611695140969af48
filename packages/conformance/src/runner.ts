import type { VendorPlugin } from "@viommu/core";
import { buildBed, CaseFailure, type CaseResult, type ConformanceCase } from "./case.js";
import { conformanceCases } from "./cases/index.js";
import type { Testbed } from "@viommu/core";

export interface ConformanceOptions {
  readonly seed?: number;
  /** Other installed plugins (a parent vendor for an extension). */
  readonly plugins?: readonly VendorPlugin[];
  /** Run only these case ids. */
  readonly only?: readonly string[];
  /** Extra cases a vendor ships (its own vQUEUE cases, for example). */
  readonly extraCases?: readonly ConformanceCase[];
  /** Called after each case (progress on a terminal). */
  readonly onResult?: (result: CaseResult) => void;
}

export interface ConformanceReport {
  readonly vendor: string;
  readonly seed: number;
  readonly results: readonly CaseResult[];
  readonly passed: number;
  readonly failed: number;
  readonly notApplicable: number;
}

/**
 * Runs the suite on one vendor. A case the vendor lacks a capability for is n/a with the vendor's reason;
 * a failed check or any exception escaping a case is a failure, never a pass.
 */
export function runConformance(plugin: VendorPlugin, options: ConformanceOptions = {}): ConformanceReport {
  const seed = options.seed ?? 1;
  const cases = [...conformanceCases, ...(options.extraCases ?? [])].filter((c) => options.only === undefined || options.only.includes(c.id));
  const results: CaseResult[] = [];
  for (const kase of cases) {
    const result = runCase(plugin, kase, seed, options.plugins ?? []);
    results.push(result);
    options.onResult?.(result);
  }
  return conformanceReport(plugin.id, seed, results);
}

/** A vendor's report from its case results (in any order: they are put in the suite's order, so reports compare). */
export function conformanceReport(vendor: string, seed: number, results: readonly CaseResult[]): ConformanceReport {
  const order = new Map(conformanceCases.map((c, i) => [c.id, i]));
  const rank = (id: string): number => order.get(id) ?? conformanceCases.length;
  const sorted = [...results].sort((a, b) => rank(a.id) - rank(b.id) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return {
    vendor,
    seed,
    results: sorted,
    passed: sorted.filter((r) => r.status === "pass").length,
    failed: sorted.filter((r) => r.status === "fail").length,
    notApplicable: sorted.filter((r) => r.status === "n/a").length,
  };
}

/** Which units of work (cases, campaign seeds) shard `index` of `count` runs: every count-th, from index − 1. */
export function inShard(unit: number, shard: { readonly index: number; readonly count: number } | undefined): boolean {
  return shard === undefined || unit % shard.count === shard.index - 1;
}

export function runCase(plugin: VendorPlugin, kase: ConformanceCase, seed: number, plugins: readonly VendorPlugin[]): CaseResult {
  const missing = kase.requires.filter((cap) => !plugin.capabilities[cap]);
  if (missing.length > 0) {
    const reasons = missing.map((cap) => `${cap}: ${plugin.capabilities.reasons?.[cap] ?? "not supported"}`);
    return { id: kase.id, rule: kase.rule, status: "n/a", detail: reasons.join("; ") };
  }
  const beds: Testbed[] = [];
  const metrics: Record<string, number> = {};
  try {
    kase.run({
      plugin,
      plugins,
      seed,
      bed: (options) => {
        const bed = buildBed(plugin, plugins, options);
        beds.push(bed);
        return bed;
      },
      metric: (name, value) => {
        metrics[name] = value;
      },
    });
    return { id: kase.id, rule: kase.rule, status: "pass", metrics: Object.keys(metrics).length ? metrics : undefined };
  } catch (e) {
    const detail = e instanceof CaseFailure ? e.message : `exception escaped: ${e instanceof Error ? `${e.message}\n${e.stack ?? ""}` : String(e)}`;
    return { id: kase.id, rule: kase.rule, status: "fail", detail, metrics: Object.keys(metrics).length ? metrics : undefined };
  } finally {
    for (const bed of beds) {
      try {
        bed.dispose();
      } catch {
        // Teardown problems never hide the case's own verdict.
      }
    }
  }
}
