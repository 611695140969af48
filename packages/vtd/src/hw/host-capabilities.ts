import { toWords64 } from "@viommu/core";
import { decodeCap, encodeCap, sagawFor, SLLPS_1G, SLLPS_2M } from "../format/cap.js";
import { decodeEcap, encodeEcap } from "../format/ecap.js";

/**
 * The physical VT-d unit this model presents: a scalable-mode, nesting-capable unit of the VT-d 3.x/4.x
 * generation (first-level 4- and 5-level, second-level 4- and 5-level, 2 MiB and 1 GiB pages at both levels,
 * 20-bit PASIDs, second-level A/D for dirty tracking, posted interrupts). GET_HW_INFO reports these registers; the
 * host driver checks configurations against them.
 */
export const HOST_HAW = 52;

/** Second-level table depth of the host's paging (stage-2) domains. */
export const HOST_SL_LEVELS = 4;

export const HOST_CAP = encodeCap({
  ND: 6,
  SAGAW: sagawFor([4, 5]),
  MGAW: 56,
  FRO: 0x22,
  SLLPS: SLLPS_2M | SLLPS_1G,
  PSI: 1,
  NFR: 7,
  MAMV: 18,
  DWD: 1,
  DRD: 1,
  FL1GP: 1,
  PI: 1,
  FL5LP: 1,
  ESIRTPS: 1,
  ESRTPS: 1,
});

export const HOST_ECAP = encodeEcap({
  C: 1,
  QI: 1,
  DT: 1,
  IR: 1,
  EIM: 1,
  PT: 1,
  SC: 1,
  IRO: 0xf,
  MHMV: 0xf,
  NEST: 1,
  PRS: 1,
  SRS: 1,
  EAFS: 1,
  PSS: 19,
  PASID: 1,
  SMTS: 1,
  SLADS: 1,
  SLTS: 1,
  FLTS: 1,
  SMPWCS: 1,
  RPS: 1,
});

/** The 64-bit register values, for hw_info. */
export function hostRegister(raw: Uint32Array): bigint {
  return toWords64(raw)[0]!;
}

/**
 * What the host driver derives from a unit's registers, as Linux's iommu.h macros do (with scalable mode on):
 * `sm_supported` (ECAP.SMTS), `ssads_supported` (scalable mode and ECAP.SLADS), `nested_supported` (scalable
 * mode and ECAP.NEST), `pasid_supported` (scalable mode and ECAP.PASID), second-level tables (ECAP.SLTS) and
 * posted interrupts (CAP.PI, Linux `cap_pi_support`).
 */
export interface HostFeatures {
  readonly sm: boolean;
  readonly ssads: boolean;
  readonly nested: boolean;
  readonly pasid: boolean;
  readonly slts: boolean;
  readonly postedInterrupts: boolean;
}

export function hostFeatures(cap: Uint32Array, ecap: Uint32Array): HostFeatures {
  const c = decodeCap(cap);
  const e = decodeEcap(ecap);
  const sm = e.SMTS === 1;
  return { sm, ssads: sm && e.SLADS === 1, nested: sm && e.NEST === 1, pasid: sm && e.PASID === 1, slts: e.SLTS === 1, postedInterrupts: c.PI === 1 };
}
