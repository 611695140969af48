import { newWalkResult, Perm, WalkFault, type StaleTranslationAudit, type WalkResult } from "@viommu/core";
import type { RemapOutcome } from "./interrupt-remapper.js";

const cachedResult = newWalkResult();
const nowResult = newWalkResult();

/**
 * An interrupt-entry-cache hit audited: the cached IRTE's answer against the IRTE in guest memory. The audit
 * compares translations, so each answer is put in a walk result whose output is the interrupt's destination
 * and vector (destination × 256 + vector) and whose fault is the remapping fault; the finding's `iova` is the
 * IRTE index the interrupt's handle selected.
 */
export function auditInterruptHit(audit: StaleTranslationAudit, at: { vm: number; unit: string; rid: number; index: number }, cached: RemapOutcome, now: RemapOutcome): boolean {
  return audit.check({ vm: at.vm, unit: at.unit, cache: "interrupt entry cache", rid: at.rid, iova: at.index }, asWalk(cached, cachedResult), asWalk(now, nowResult));
}

function asWalk(outcome: RemapOutcome, out: WalkResult): WalkResult {
  const r = outcome.result;
  out.ok = r.ok;
  out.mapped = r.ok;
  out.pageShift = 12;
  out.perms = r.ok ? Perm.ReadWrite : 0;
  out.output = r.ok ? r.irq.destination * 256 + r.irq.vector : 0;
  out.fault = r.ok ? WalkFault.None : WalkFault.Translation;
  return out;
}
