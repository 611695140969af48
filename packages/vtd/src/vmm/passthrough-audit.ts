import { copyWalkResult, newWalkResult, Perm, WalkFault, type DmaRequest, type StaleTranslationAudit, type WalkResult } from "@viommu/core";
import type { TranslationAuditor } from "../hw/translation-auditor.js";
import type { DeviceBindings } from "./device-bindings.js";
import { DeviceContext, GuestTranslation, type GuestTranslator } from "./guest-translator.js";

/**
 * The stale-translation audit of passthrough devices. What the host translates a passthrough device with is a
 * cache of the guest's tables: the attachment the VMM built from the guest's context / PASID entry (its context
 * or PASID cache, refreshed only by the guest's context- and PASID-cache invalidations), and the translations the
 * host IOTLB or the VMM's shadow hold (refreshed by its IOTLB invalidations). After each translation of an
 * audited device the guest's tables are walked again as they are now and the two answers compared in guest
 * addresses; the cache named is the context / PASID cache when the entry the attachment was built from changed,
 * the IOTLB otherwise.
 */
export class PassthroughAudit implements TranslationAuditor {
  private readonly fresh = new DeviceContext();
  private readonly now = new GuestTranslation();
  private readonly cached: WalkResult = newWalkResult();
  private readonly site = { vm: 0, unit: "", cache: "", rid: 0, pasid: undefined as number | undefined, iova: 0 };

  constructor(
    private readonly audit: StaleTranslationAudit,
    private readonly bindings: DeviceBindings,
    private readonly translator: GuestTranslator,
    private readonly vm: number,
    private readonly unit: string,
  ) {}

  audited(request: DmaRequest, result: WalkResult, _iotlbHit: boolean): void {
    const bindings = this.bindings;
    if (!bindings.translationEnabled) return;
    const a = bindings.byRequesterId(request.requesterId);
    if (a === undefined) return;
    const slot = bindings.slotOf(a, request.pasid);
    // A configuration the host refused (logged as such) or PASIDs beyond what the host binds are not stale caches.
    if ((slot !== undefined && slot.refusedReason !== 0) || (slot === undefined && a.pasidOverflow)) return;
    const memory = this.translator.memory;
    const cached = this.cached;
    copyWalkResult(result, cached);
    cached.ok = result.ok;
    if (result.ok) {
      // The host answers in host addresses; the guest's tables in guest ones.
      const gpa = memory.guestAddressOf(result.output);
      if (gpa === undefined) return;
      cached.output = gpa;
    }
    const ctx = this.translator.resolve(a.guestRid, request.pasid, this.fresh);
    const now = this.now;
    this.translator.translateWith(ctx, request.iova, (request.access & Perm.Write) !== 0, now, request.privileged === true);
    const tables = now.walk;
    tables.ok = now.ok;
    // A guest address outside RAM reaches nothing, as the host's stage 2 answers it.
    if (tables.ok && !memory.contains(tables.output)) {
      tables.ok = false;
      tables.fault = WalkFault.AddressSize;
    }
    const contextStale = slot === undefined || !ctx.sameAs(slot.context);
    const site = this.site;
    site.vm = this.vm;
    site.unit = this.unit;
    site.cache = contextStale ? (ctx.scalable || slot?.context.scalable === true ? "PASID cache" : "context cache") : "IOTLB";
    site.rid = a.guestRid;
    site.pasid = request.pasid >= 0 ? request.pasid : undefined;
    site.iova = request.iova;
    this.audit.check(site, cached, tables);
  }
}
