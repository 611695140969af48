import { encodeLayout } from "@viommu/core";
import { aidrLayout, idr0Layout, idr1Layout, idr3Layout, idr5Layout, iidrLayout, IdrHttu, IdrStallModel, IdrTtEndian, IdrTtf } from "../format/id-registers.js";

/** The ID registers of a physical SMMUv3: what its driver reads at probe and reports through hw_info. */
export interface Smmuv3HwConfig {
  /** IDR0..IDR5. */
  readonly idr: readonly number[];
  readonly iidr: number;
  readonly aidr: number;
}

function word(raw: Uint32Array): number {
  return raw[0]!;
}

/**
 * The modelled host SMMU: an SMMUv3.2 with both stages (nesting needs them), AArch64 little-endian tables,
 * coherent, hardware update of the access flag and dirty state (HTTU, for dirty tracking), 16-bit ASIDs and
 * VMIDs, MSIs, ATS with PRI (a 2^19-entry PRI queue), 2-level stream and CD tables, terminate-only stalls, 16-bit
 * StreamIDs and 20-bit SubstreamIDs, range invalidation, S2FWB (Linux's nesting prerequisite besides coherency),
 * 48-bit OAS and all three granules. No EL2 regime.
 */
export const DEFAULT_SMMUV3_HW: Smmuv3HwConfig = {
  idr: [
    word(
      encodeLayout(idr0Layout, {
        S2P: 1,
        S1P: 1,
        TTF: IdrTtf.AArch64,
        COHACC: 1,
        HTTU: IdrHttu.AccessAndDirty,
        ATS: 1,
        ASID16: 1,
        PRI: 1,
        MSI: 1,
        SEV: 1,
        VMID16: 1,
        CD2L: 1,
        TTENDIAN: IdrTtEndian.LittleOnly,
        STALL_MODEL: IdrStallModel.TerminateOnly,
        TERM_MODEL: 1,
        ST_LEVEL: 1,
      }),
    ),
    word(encodeLayout(idr1Layout, { SIDSIZE: 16, SSIDSIZE: 20, PRIQS: 19, EVENTQS: 19, CMDQS: 19 })),
    0,
    word(encodeLayout(idr3Layout, { HAD: 1, FWB: 1, RIL: 1, BBML: 2 })),
    0,
    word(encodeLayout(idr5Layout, { OAS: 5, GRAN4K: 1, GRAN16K: 1, GRAN64K: 1 })),
  ],
  iidr: word(encodeLayout(iidrLayout, { Implementer: 0x43b })),
  aidr: word(encodeLayout(aidrLayout, { ArchMinorRev: 2 })),
};
