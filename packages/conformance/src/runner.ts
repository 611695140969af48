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
  return {
    vendor: plugin.id,
    seed,
    results,
    passed: results.filter((r) => r.status === "pass").length,
    failed: results.filter((r) => r.status === "fail").length,
    notApplicable: results.filter((r) => r.status === "n/a").length,
  };
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
