import { conformanceCases, runCase, runHostileCampaign, type CampaignReport, type CaseResult } from "@viommu/conformance";
import type { TranslationMode, VendorPlugin } from "@viommu/core";
import type { DifftestSliceResult } from "@viommu/qemu";

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

/** One slice of a difftest campaign (its own QEMU), findings written to `outDir`. */
export interface DifftestUnit {
  readonly kind: "difftest";
  readonly vendor: string;
  readonly seed: number;
  readonly cases: number;
  readonly shard: { readonly index: number; readonly count: number };
  readonly outDir: string;
  readonly shrink: boolean;
  readonly qemu?: string;
}

export type WorkUnit = CaseUnit | CampaignUnit | DifftestUnit;
export type UnitResult = CaseResult | CampaignReport | DifftestSliceResult;

/** Runs any unit; difftest slices drive QEMU, so they are asynchronous. */
export async function runAnyUnit(unit: WorkUnit, installed: readonly VendorPlugin[]): Promise<UnitResult> {
  if (unit.kind !== "difftest") return runUnit(unit, installed);
  const { difftestSlice } = await import("@viommu/qemu");
  const { shard, kind: _, ...args } = unit;
  return difftestSlice({ ...args, plugins: installed }, shard);
}

/** Runs one unit against the installed plugins (found by id, in this thread or a worker's). */
export function runUnit(unit: CaseUnit | CampaignUnit, installed: readonly VendorPlugin[]): CaseResult | CampaignReport {
  const plugin = installed.find((p) => p.id === unit.vendor);
  if (plugin === undefined) throw new Error(`vendor ${unit.vendor} is not installed in this worker`);
  if (unit.kind === "case") {
    const kase = conformanceCases.find((c) => c.id === unit.caseId);
    if (kase === undefined) throw new Error(`no conformance case ${unit.caseId}`);
    return runCase(plugin, kase, unit.seed, installed);
  }
  return runHostileCampaign({ plugin, plugins: installed.filter((p) => p !== plugin), seed: unit.seed, steps: unit.steps, mode: unit.mode });
}
