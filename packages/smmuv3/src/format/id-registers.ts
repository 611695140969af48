import { defineLayout } from "@viommu/core";

/**
 * SMMU_IDR0..IDR5, IIDR and AIDR (IHI0070 §6.3; spec §1.1–§1.2). All 32-bit, read-only.
 * Field names are the architecture's.
 */

export const idr0Layout = defineLayout("SMMU_IDR0", 32, [
  { name: "S2P", bit: 0, width: 1 },
  { name: "S1P", bit: 1, width: 1 },
  { name: "TTF", bit: 2, width: 2 },
  { name: "COHACC", bit: 4, width: 1 },
  { name: "BTM", bit: 5, width: 1 },
  { name: "HTTU", bit: 6, width: 2 },
  { name: "DORMHINT", bit: 8, width: 1 },
  { name: "HYP", bit: 9, width: 1 },
  { name: "ATS", bit: 10, width: 1 },
  { name: "NS1ATS", bit: 11, width: 1 },
  { name: "ASID16", bit: 12, width: 1 },
  { name: "MSI", bit: 13, width: 1 },
  { name: "SEV", bit: 14, width: 1 },
  { name: "ATOS", bit: 15, width: 1 },
  { name: "PRI", bit: 16, width: 1 },
  { name: "VMW", bit: 17, width: 1 },
  { name: "VMID16", bit: 18, width: 1 },
  { name: "CD2L", bit: 19, width: 1 },
  { name: "VATOS", bit: 20, width: 1 },
  { name: "TTENDIAN", bit: 21, width: 2 },
  { name: "ATSRECERR", bit: 23, width: 1 },
  { name: "STALL_MODEL", bit: 24, width: 2 },
  { name: "TERM_MODEL", bit: 26, width: 1 },
  { name: "ST_LEVEL", bit: 27, width: 2 },
  { name: "RME_IMPL", bit: 30, width: 1 },
] as const);

/** IDR0.TTF encodings. */
export const IdrTtf = { AArch32: 1, AArch64: 2, Both: 3 } as const;
/** IDR0.TTENDIAN encodings (1 is reserved). */
export const IdrTtEndian = { Mixed: 0, LittleOnly: 2, BigOnly: 3 } as const;
/** IDR0.STALL_MODEL encodings. */
export const IdrStallModel = { StallAndTerminate: 0, TerminateOnly: 1, StallForced: 2 } as const;
/** IDR0.HTTU encodings. */
export const IdrHttu = { None: 0, AccessFlag: 1, AccessAndDirty: 2 } as const;

export const idr1Layout = defineLayout("SMMU_IDR1", 32, [
  { name: "SIDSIZE", bit: 0, width: 6 },
  { name: "SSIDSIZE", bit: 6, width: 5 },
  { name: "PRIQS", bit: 11, width: 5 },
  { name: "EVENTQS", bit: 16, width: 5 },
  { name: "CMDQS", bit: 21, width: 5 },
  { name: "ATTR_PERMS_OVR", bit: 26, width: 1 },
  { name: "ATTR_TYPES_OVR", bit: 27, width: 1 },
  { name: "REL", bit: 28, width: 1 },
  { name: "QUEUES_PRESET", bit: 29, width: 1 },
  { name: "TABLES_PRESET", bit: 30, width: 1 },
  { name: "ECMDQ", bit: 31, width: 1 },
] as const);

export const idr2Layout = defineLayout("SMMU_IDR2", 32, [{ name: "BA_VATOS", bit: 0, width: 10 }] as const);

export const idr3Layout = defineLayout("SMMU_IDR3", 32, [
  { name: "HAD", bit: 2, width: 1 },
  { name: "PBHA", bit: 3, width: 1 },
  { name: "XNX", bit: 4, width: 1 },
  { name: "PPS", bit: 5, width: 1 },
  { name: "MPAM", bit: 7, width: 1 },
  { name: "FWB", bit: 8, width: 1 },
  { name: "STT", bit: 9, width: 1 },
  { name: "RIL", bit: 10, width: 1 },
  { name: "BBML", bit: 11, width: 2 },
  { name: "E0PD", bit: 13, width: 1 },
  { name: "PTWNNC", bit: 14, width: 1 },
  { name: "DPT", bit: 15, width: 1 },
] as const);

/** IDR4 is IMPLEMENTATION DEFINED as a whole. */
export const idr4Layout = defineLayout("SMMU_IDR4", 32, [{ name: "IMPDEF", bit: 0, width: 32 }] as const);

export const idr5Layout = defineLayout("SMMU_IDR5", 32, [
  { name: "OAS", bit: 0, width: 3 },
  { name: "GRAN4K", bit: 4, width: 1 },
  { name: "GRAN16K", bit: 5, width: 1 },
  { name: "GRAN64K", bit: 6, width: 1 },
  { name: "VAX", bit: 10, width: 2 },
  { name: "STALL_MAX", bit: 16, width: 16 },
] as const);

export const iidrLayout = defineLayout("SMMU_IIDR", 32, [
  { name: "Implementer", bit: 0, width: 12 },
  { name: "Revision", bit: 12, width: 4 },
  { name: "Variant", bit: 16, width: 4 },
  { name: "ProductID", bit: 20, width: 12 },
] as const);

export const aidrLayout = defineLayout("SMMU_AIDR", 32, [
  { name: "ArchMinorRev", bit: 0, width: 4 },
  { name: "ArchMajorRev", bit: 4, width: 4 },
] as const);

/**
 * The 3-bit address-size encoding shared by IDR5.OAS, CD.IPS and STE.S2PS: 0→32, 1→36, 2→40, 3→42, 4→44,
 * 5→48, 6→52 bits. 7 is reserved.
 */
const ADDRESS_SIZE_BITS = [32, 36, 40, 42, 44, 48, 52] as const;

/** Bits of an OAS/IPS/PS encoding, or undefined for the reserved value 7 (and anything out of range). */
export function addressSizeBits(code: number): number | undefined {
  return ADDRESS_SIZE_BITS[code];
}

/** The encoding of an address size in bits, or undefined when the size has no encoding. */
export function addressSizeCode(bits: number): number | undefined {
  const code = ADDRESS_SIZE_BITS.indexOf(bits as (typeof ADDRESS_SIZE_BITS)[number]);
  return code < 0 ? undefined : code;
}

/**
 * The output-address size a stage actually uses (IHI0070 CD.IPS / STE.S2PS): the programmed size capped at the
 * SMMU's IDR5.OAS; a reserved encoding is taken as OAS. Without a 64 KiB granule a 52-bit size is treated as
 * 48 bits (52-bit output needs the 64 KiB granule, or LPA2 which this model does not implement).
 */
export function effectiveOutputBits(psCode: number, oasCode: number, granuleShift: number): number {
  const oas = addressSizeBits(oasCode) ?? 48;
  const requested = addressSizeBits(psCode) ?? oas;
  const bits = Math.min(requested, oas);
  return granuleShift !== 16 && bits > 48 ? 48 : bits;
}
