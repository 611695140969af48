import { conformanceCases, runCase, runHostileCampaign, type CampaignReport, type CaseResult } from "@viommu/conformance";
import type { TranslationMode, VendorPlugin } from "@viommu/core";

/** One conformance case on one vendor. */
export interface CaseUnit {
  readonly kind: "case";
  readonly vendor: string;
  readonly caseId: string;
  readonly seed: number;
}

/** One campaign run: a vendor, a mode, a seed. */
export interface CampaignUnit {
  readonly kind: "campaign";
  readonly vendor: string;
  readonly mode: TranslationMode;
  readonly seed: number;
  readonly steps: number;
}

export type WorkUnit = CaseUnit | CampaignUnit;
export type UnitResult = CaseResult | CampaignReport;

/** Runs one unit against the installed plugins (found by id, in this thread or a worker's). */
export function runUnit(unit: WorkUnit, installed: readonly VendorPlugin[]): UnitResult {
  const plugin = installed.find((p) => p.id === unit.vendor);
  if (plugin === undefined) throw new Error(`vendor ${unit.vendor} is not installed in this worker`);
  if (unit.kind === "case") {
    const kase = conformanceCases.find((c) => c.id === unit.caseId);
    if (kase === undefined) throw new Error(`no conformance case ${unit.caseId}`);
    return runCase(plugin, kase, unit.seed, installed);
  }
  return runHostileCampaign({ plugin, plugins: installed.filter((p) => p !== plugin), seed: unit.seed, steps: unit.steps, mode: unit.mode });
}
