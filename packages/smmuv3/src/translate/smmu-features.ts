import { decodeLayout } from "@viommu/core";
import { addressSizeBits, idr0Layout, idr1Layout, idr3Layout, idr5Layout, IdrStallModel } from "../format/id-registers.js";

/**
 * What an SMMU implements, read from its ID registers (IHI0070 §6.3.1–6.3.6): the facts the architectural
 * lookup needs to decide whether a stream table entry or context descriptor is legal. Every consumer (the
 * physical unit, the emulated device, the walk tool) derives its features from IDR values, so a structure is
 * judged against exactly what the SMMU advertises.
 */
export interface SmmuFeatures {
  readonly stage1: boolean;
  readonly stage2: boolean;
  readonly aarch64Tables: boolean;
  readonly coherent: boolean;
  /** IDR0.HTTU: 0 none, 1 access flag, 2 access and dirty. */
  readonly httu: number;
  readonly hyp: boolean;
  readonly ats: boolean;
  readonly asid16: boolean;
  readonly msi: boolean;
  readonly sev: boolean;
  readonly pri: boolean;
  readonly vmid16: boolean;
  readonly twoLevelCd: boolean;
  /** Little-endian translation tables only (TTENDIAN = 2). */
  readonly littleEndianOnly: boolean;
  /** Stalling faults are never possible (STALL_MODEL = 1). */
  readonly terminateOnly: boolean;
  /** STALL_MODEL = 0: stalling and terminating faults both possible (STE.S1STALLD legal). */
  readonly stallAndTerminate: boolean;
  /** STALL_MODEL = 2: every translation-related fault stalls (CD.S and STE.S2S must be 1). */
  readonly stallForced: boolean;
  /** IDR0.NS1ATS: split-stage ATS is not supported. */
  readonly ns1ats: boolean;
  /** TERM_MODEL: terminated transactions always abort, so CD.A must be 1. */
  readonly termModel: boolean;
  readonly twoLevelStrtab: boolean;
  readonly sidBits: number;
  readonly ssidBits: number;
  readonly cmdqLog2: number;
  readonly evtqLog2: number;
  /** IDR1.PRIQS (capped at 19). */
  readonly priqLog2: number;
  readonly hierarchicalAttributesDisable: boolean;
  readonly xnx: boolean;
  readonly smallTables: boolean;
  readonly rangeInvalidation: boolean;
  readonly forcedWriteBack: boolean;
  /** IDR5.OAS as its 3-bit code and in bits. */
  readonly oasCode: number;
  readonly oasBits: number;
  readonly granule4K: boolean;
  readonly granule16K: boolean;
  readonly granule64K: boolean;
  readonly vax52: boolean;
}

function reg(value: number | undefined): Uint32Array {
  return Uint32Array.of((value ?? 0) >>> 0);
}

/** Features from IDR0..IDR5 (missing registers read as zero). */
export function smmuFeatures(idr: readonly number[]): SmmuFeatures {
  const i0 = decodeLayout(idr0Layout, reg(idr[0]));
  const i1 = decodeLayout(idr1Layout, reg(idr[1]));
  const i3 = decodeLayout(idr3Layout, reg(idr[3]));
  const i5 = decodeLayout(idr5Layout, reg(idr[5]));
  return {
    stage1: i0.S1P === 1,
    stage2: i0.S2P === 1,
    aarch64Tables: (i0.TTF & 2) !== 0,
    coherent: i0.COHACC === 1,
    httu: i0.HTTU,
    hyp: i0.HYP === 1,
    ats: i0.ATS === 1,
    asid16: i0.ASID16 === 1,
    msi: i0.MSI === 1,
    sev: i0.SEV === 1,
    pri: i0.PRI === 1,
    vmid16: i0.VMID16 === 1,
    twoLevelCd: i0.CD2L === 1,
    littleEndianOnly: i0.TTENDIAN === 2,
    terminateOnly: i0.STALL_MODEL === IdrStallModel.TerminateOnly,
    stallAndTerminate: i0.STALL_MODEL === IdrStallModel.StallAndTerminate,
    stallForced: i0.STALL_MODEL === IdrStallModel.StallForced,
    ns1ats: i0.NS1ATS === 1,
    termModel: i0.TERM_MODEL === 1,
    twoLevelStrtab: i0.ST_LEVEL === 1,
    sidBits: i1.SIDSIZE,
    ssidBits: i1.SSIDSIZE,
    cmdqLog2: Math.min(i1.CMDQS, 19),
    evtqLog2: Math.min(i1.EVENTQS, 19),
    priqLog2: Math.min(i1.PRIQS, 19),
    hierarchicalAttributesDisable: i3.HAD === 1,
    xnx: i3.XNX === 1,
    smallTables: i3.STT === 1,
    rangeInvalidation: i3.RIL === 1,
    forcedWriteBack: i3.FWB === 1,
    oasCode: i5.OAS,
    oasBits: addressSizeBits(i5.OAS) ?? 48,
    granule4K: i5.GRAN4K === 1,
    granule16K: i5.GRAN16K === 1,
    granule64K: i5.GRAN64K === 1,
    vax52: i5.VAX === 1,
  };
}

/** Whether the SMMU implements a translation granule (log2 12, 14 or 16). */
export function granuleSupported(f: SmmuFeatures, granuleShift: number): boolean {
  return granuleShift === 12 ? f.granule4K : granuleShift === 14 ? f.granule16K : granuleShift === 16 ? f.granule64K : false;
}
