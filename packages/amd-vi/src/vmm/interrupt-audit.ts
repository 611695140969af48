import { newWalkResult, Perm, WalkFault, type StaleTranslationAudit, type WalkResult } from "@viommu/core";
import type { RemapOutcome } from "./interrupt-remapper.js";

const cachedResult = newWalkResult();
const nowResult = newWalkResult();

/**
 * The audit of one hit in the IRTE cache: what the cached IRTE gave against what the guest's IRT gives now. The
 * audit compares translations, so an interrupt is put in that shape: a remapped interrupt is an "output" of
 * destination × 256 + vector, a refused one a fault; the finding's `iova` is the IRTE index the MSI selected.
 */
export function auditInterruptHit(audit: StaleTranslationAudit, at: { vm: number; unit: string; rid: number; index: number }, cached: RemapOutcome, now: RemapOutcome): boolean {
  return audit.check({ vm: at.vm, unit: at.unit, cache: "interrupt entry cache", rid: at.rid, iova: at.index }, asWalk(cached, cachedResult), asWalk(now, nowResult));
}

function asWalk(outcome: RemapOutcome, out: WalkResult): WalkResult {
  out.ok = outcome.ok;
  out.mapped = outcome.ok;
  out.pageShift = 12;
  out.perms = outcome.ok ? Perm.ReadWrite : 0;
  out.output = outcome.ok ? outcome.irq.destination * 256 + outcome.irq.vector : 0;
  out.fault = outcome.ok ? WalkFault.None : WalkFault.Translation;
  return out;
}
