import { efrLayout, encodeEfr, encodeEfr2, u64FromRaw } from "../format/index.js";

/**
 * The physical IOMMU's feature registers, as GET_HW_INFO reports them (`iommu_hw_info_amd`): guest
 * translation with 3-level GCR3 tables (GLXSup = 2) and 20-bit PASIDs (PASmax = 19), the widest the
 * specification allows (Linux amd_iommu_types.h: "the spec says it could have upto 20 bits"; Linux itself
 * handles 16, see emulated-features.ts), 4-level guest tables (so a 5-level guest DTE is
 * EOPNOTSUPP, as Linux answers), 128-bit IRTEs with x2APIC, the hardware vIOMMU (vIommuSup), GCR3TRPMode
 * (the GCR3 root as a GPA), 2048 interrupts per device, guest virtual APIC posting (GAMSup = 1: vAPIC mode,
 * Linux FEATURE_GAM_VAPIC), and host dirty tracking (HDSup: the D bit of v1 leaves
 * under DTE.HAD).
 */
export const HOST_EFR: bigint = u64FromRaw(
  encodeEfr({
    PrefSup: 1,
    PPRSup: 1,
    XTSup: 1,
    NXSup: 1,
    GTSup: 1,
    IASup: 1,
    GASup: 1,
    GAMSup: 1,
    HATS: 2,
    GATS: 0,
    GLXSup: 2,
    PASmax: 19,
    GIoSup: 1,
    HDSup: 1,
    vIommuSup: 1,
  }),
);

export const HOST_EFR2: bigint = u64FromRaw(encodeEfr2({ GCR3TRPModeSup: 1, NumIntRemapSup: 1 }));

/** HOST_EFR without HDSup: a unit that cannot track dirty pages (for hosts whose parts lack it). */
export const HOST_EFR_NO_HD: bigint = HOST_EFR & ~(1n << BigInt(efrLayout.field("HDSup").bit));
