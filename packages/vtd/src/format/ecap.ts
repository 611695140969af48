import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";

/**
 * Extended capability register ECAP_REG (MMIO offset 0x10, 64-bit, read-only). Intel VT-d spec §11.4.3;
 * bit positions as in ../shared/spec/x86.md A3 and Linux `ecap_*` (drivers/iommu/intel/iommu.h). ADMS (52) and
 * RPRIVS (53) come from VirtualBox's spec-derived `VTD_BF_ECAP_REG_*` (include/VBox/iommu-intel.h). Bits 5, 24,
 * 28 and 32 are deprecated (they meant caching hints, extended context, the pre-3.0 PASID support and
 * PASID-only translation) and are left unnamed; 19:18 and 63:54 are reserved.
 */
export const ecapLayout = defineLayout("ECAP_REG", 64, [
  /** Page-walk coherency. */
  { name: "C", bit: 0, width: 1 },
  /** Queued invalidation. */
  { name: "QI", bit: 1, width: 1 },
  /** Device-TLB (ATS). */
  { name: "DT", bit: 2, width: 1 },
  /** Interrupt remapping. */
  { name: "IR", bit: 3, width: 1 },
  /** Extended interrupt mode (x2APIC, 32-bit destination ids). */
  { name: "EIM", bit: 4, width: 1 },
  /** Pass-through. */
  { name: "PT", bit: 6, width: 1 },
  /** Snoop control (SNP in second-level leaf entries). */
  { name: "SC", bit: 7, width: 1 },
  /** IOTLB register block offset, in 16-byte units. */
  { name: "IRO", bit: 8, width: 10 },
  /** Maximum handle-mask value for index-selective IEC invalidation. */
  { name: "MHMV", bit: 20, width: 4 },
  { name: "MTS", bit: 25, width: 1 },
  { name: "NEST", bit: 26, width: 1 },
  /** Linux `ecap_dis` (deferred invalidate, a VT-d 2.x bit). */
  { name: "DIS", bit: 27, width: 1 },
  { name: "PRS", bit: 29, width: 1 },
  { name: "ERS", bit: 30, width: 1 },
  { name: "SRS", bit: 31, width: 1 },
  { name: "NWFS", bit: 33, width: 1 },
  { name: "EAFS", bit: 34, width: 1 },
  /** PASID size − 1. */
  { name: "PSS", bit: 35, width: 5 },
  { name: "PASID", bit: 40, width: 1 },
  { name: "DIT", bit: 41, width: 1 },
  { name: "PDS", bit: 42, width: 1 },
  /** Scalable-mode translation. */
  { name: "SMTS", bit: 43, width: 1 },
  { name: "VCS", bit: 44, width: 1 },
  /** Second-level accessed/dirty (newer specs: SSADS). */
  { name: "SLADS", bit: 45, width: 1 },
  /** Second-level translation (newer specs: SSTS). */
  { name: "SLTS", bit: 46, width: 1 },
  /** First-level translation (newer specs: FSTS). */
  { name: "FLTS", bit: 47, width: 1 },
  { name: "SMPWCS", bit: 48, width: 1 },
  { name: "RPS", bit: 49, width: 1 },
  /** Page-request message support (Linux `ecap_pms`). */
  { name: "PMS", bit: 51, width: 1 },
  /** Abort-DMA mode support (RTADDR.TTM = 3). */
  { name: "ADMS", bit: 52, width: 1 },
  /** RID_PRIV support in scalable-mode context entries. */
  { name: "RPRIVS", bit: 53, width: 1 },
] as const);

export type EcapFields = Fields<typeof ecapLayout>;

export function decodeEcap(raw: RawBits): EcapFields {
  return decodeLayout(ecapLayout, raw);
}

export function encodeEcap(fields: Partial<EcapFields>): RawBits {
  return encodeLayout(ecapLayout, fields);
}

/** Byte offset of the IVA register (ECAP.IRO × 16); the IOTLB register follows at +8. */
export function iotlbRegisterBlockOffset(iro: number): number {
  return iro * 16;
}
