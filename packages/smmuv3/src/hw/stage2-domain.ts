import { err, fail, ok, TablePagingDomain, type HostServices, type PagingDomain, type PhysicalIommu, type Result, type TableGeometry, type WritableFormat } from "@viommu/core";
import { encodeSte, SteConfig, type SteFields } from "../format/stream-table-entry.js";
import { stage2Geometry, stage2Sl0 } from "../format/vmsa-geometry.js";
import { stage2DirtyBits, vmsaStage2Encoder, vmsaStage2Format } from "../format/vmsa-stage2.js";
import { Shareability } from "../format/control-registers.js";

/**
 * The host's stage-2 domains, as Linux's arm-smmu-v3 builds a nesting-parent (or S2-only) domain with
 * io-pgtable-arm: 4 KiB granule, a 48-bit IPA (S2T0SZ 16) walked from ARM level 0 (S2SL0 2), 48-bit output.
 */
export const S2_GRANULE_SHIFT = 12;
export const S2_T0SZ = 16;
export const S2_PS_CODE = 5;
export const S2_OUTPUT_BITS = 48;

const geometryResult = stage2Geometry(S2_GRANULE_SHIFT, S2_T0SZ, 2, { outputBits: S2_OUTPUT_BITS, ias: 48 });
if (!geometryResult.ok) throw new Error(`host stage-2 geometry: ${geometryResult.reason}`);

export const smmuStage2Geometry: TableGeometry = geometryResult.geometry;

/** The stage-2 format, readable and writable (io-pgtable's ARM_64_LPAE_S2). */
export const smmuStage2Format: WritableFormat = {
  ...vmsaStage2Format({ granuleShift: S2_GRANULE_SHIFT, outputBits: S2_OUTPUT_BITS }),
  ...vmsaStage2Encoder({ granuleShift: S2_GRANULE_SHIFT, geometry: smmuStage2Geometry }),
};

/**
 * The same format for a domain allocated for dirty tracking, whose STEs set S2HA and S2HD: writable leaves carry
 * DBM, and a writable-clean leaf (S2AP[1] = 0, DBM = 1) grants write, the hardware marking it dirty as it does.
 */
export const smmuStage2DirtyFormat: WritableFormat = {
  ...vmsaStage2Format({ granuleShift: S2_GRANULE_SHIFT, outputBits: S2_OUTPUT_BITS, accessFlagFaultDisabled: true, hardwareDirty: true }),
  ...vmsaStage2Encoder({ granuleShift: S2_GRANULE_SHIFT, geometry: smmuStage2Geometry, dirtyBitModifier: true }),
};

/** Domains in this format, whichever unit allocated them: any SMMUv3 unit can walk them. */
const stage2Domains = new WeakSet<PagingDomain>();

export function isSmmuStage2Domain(domain: unknown): domain is TablePagingDomain {
  return domain instanceof TablePagingDomain && stage2Domains.has(domain);
}

/**
 * Allocates a stage-2 domain (a host VMID, a root table in host memory); with `dirty`, one that tracks DMA writes
 * in its leaves (DBM and S2AP, `stage2DirtyBits`) for IOMMU_HWPT_ALLOC_DIRTY_TRACKING.
 */
export function createStage2Domain(unit: PhysicalIommu, host: HostServices, nestParent: boolean, dirty = false): Result<TablePagingDomain> {
  const r = TablePagingDomain.create(unit, host, dirty ? smmuStage2DirtyFormat : smmuStage2Format, smmuStage2Geometry, { nestParent, dirty: dirty ? stage2DirtyBits : undefined });
  if (!r.ok) return fail(r);
  stage2Domains.add(r.value);
  return ok(r.value);
}

/** IR0/OR0 write-back read/write-allocate (TCR encoding 1), as Linux programs the VTCR image. */
const TCR_WBWA = 1;

/**
 * The STE's stage-2 fields for a domain (Linux `arm_smmu_make_s2_domain_ste`): S2VMID, the VTCR image
 * (S2T0SZ, S2SL0, S2IR0/S2OR0 WBWA, S2SH0 ISH, S2TG 4K, S2PS), S2AA64, S2PTW, S2R, S2TTB; S2FWB when the SMMU
 * has it. A dirty-tracking domain also sets S2HA and S2HD (IHI0070 §5.2, §3.13): the SMMU updates the access flag
 * and the dirty state of its leaves. Linux has no stage-2 dirty tracking (arm_smmu_domain_finalise answers
 * EOPNOTSUPP for a dirty stage-2 domain and tracks dirty pages in stage 1 with CD.HA/HD); the architecture defines
 * both stages, and a VMM migrating a nested guest needs it on the stage-2 parent, which is what these fields do.
 */
export function stage2SteFields(domain: TablePagingDomain, forcedWriteBack: boolean): Partial<SteFields> {
  const sl0 = stage2Sl0(S2_GRANULE_SHIFT, smmuStage2Geometry.startLevel);
  return {
    S2VMID: domain.vmid,
    S2T0SZ: S2_T0SZ,
    S2SL0: sl0 ?? 2,
    S2IR0: TCR_WBWA,
    S2OR0: TCR_WBWA,
    S2SH0: Shareability.ISH,
    S2TG: 0,
    S2PS: S2_PS_CODE,
    S2AA64: 1,
    S2PTW: 1,
    S2R: 1,
    S2FWB: forcedWriteBack ? 1 : 0,
    S2HA: domain.dirtyOps !== undefined ? 1 : 0,
    S2HD: domain.dirtyOps !== undefined ? 1 : 0,
    S2TTB: domain.table.root,
  };
}

/** A stage-2-only STE (Config S2 translate) for a domain. */
export function stage2Ste(domain: TablePagingDomain, forcedWriteBack: boolean): Uint32Array {
  return encodeSte({ V: 1, Config: SteConfig.S2Translate, ...stage2SteFields(domain, forcedWriteBack) });
}

/** An abort STE (Linux `arm_smmu_make_abort_ste`): V with Config 0; traffic is terminated without an event. */
export function abortSte(): Uint32Array {
  return encodeSte({ V: 1, Config: SteConfig.Abort });
}

/** EINVAL unless `domain` is a stage-2 domain of this driver. */
export function requireStage2(domain: PagingDomain): Result<TablePagingDomain> {
  return isSmmuStage2Domain(domain) ? ok(domain) : err("EINVAL", "not an SMMUv3 stage-2 domain");
}
