import type { PageTableFormat, TableGeometry } from "@viommu/core";
import { EventType } from "../format/event-record.js";
import { effectiveOutputBits } from "../format/id-registers.js";
import { decodeSte, SteConfig, SteEats, SteS1Dss, SteS1Fmt, steStage1Enabled, steStage2Enabled, SteStrw } from "../format/stream-table-entry.js";
import { granuleFromTg0, stage2Geometry, type GranuleShift } from "../format/vmsa-geometry.js";
import { vmsaStage2Format } from "../format/vmsa-stage2.js";
import { granuleSupported, type SmmuFeatures } from "./smmu-features.js";

/** Stage-2 translation an STE selects. */
export interface SteStage2 {
  readonly vmid: number;
  readonly granuleShift: GranuleShift;
  readonly geometry: TableGeometry;
  readonly format: PageTableFormat;
  readonly ttb: number;
  readonly outputBits: number;
  /** STE.S2R: stage-2 translation faults are recorded. */
  readonly record: boolean;
}

/** Stage-1 context an STE points to. */
export interface SteStage1 {
  readonly fmt: number;
  readonly contextPtr: number;
  readonly cdMax: number;
  readonly dss: number;
  /** STE.S1STALLD: stage-1 faults never stall (a CD with S = 1 is then ILLEGAL). */
  readonly stallDisabled: boolean;
}

/** A legal STE, decoded into what translation needs. */
export interface SteSettings {
  readonly config: number;
  readonly stage1: SteStage1 | undefined;
  readonly stage2: SteStage2 | undefined;
  readonly eats: number;
}

/**
 * Decodes and checks an STE (16 halves) against the SMMU's features, as the architecture's SteIllegal() does
 * (IHI0070 §5.2, "STE validity"; spec §1.6, §1.13 step 4). Returns the settings, or C_BAD_STE for an ILLEGAL
 * entry: V = 0; a stage the SMMU lacks; STRW EL2 without IDR0.HYP on a stage-1-only entry; split-stage ATS
 * outside a nested entry (or with S2S, or with NS1ATS); full ATS with stage-2 stalls; S1STALLD on an SMMU that
 * cannot stall; S1CDMax beyond SSIDSIZE; a 2-level S1Fmt without IDR0.CD2L; a context pointer beyond the output
 * size; and for stage 2 a reserved or unsupported granule, an S2T0SZ/S2SL0 the geometry rejects, AArch32 or
 * big-endian tables, stalls on a terminate-only SMMU (or no stalls where the SMMU forces them), hardware updates
 * without HTTU, or an S2TTB beyond the effective S2PS.
 *
 * Values the architecture reserves but defines a behaviour for are that behaviour, not ILLEGAL: Config 0b001–0b011
 * abort without an event like 0b000; S1Fmt 0b11 is linear; S1DSS 0b11 terminates; EATS 0b11 is 0b00 without
 * DPT. Fields the architecture IGNOREs are ignored: S1Fmt and S1DSS without substreams (S1CDMax 0 or SSIDSIZE 0),
 * S1CDMax without SSIDSIZE, EATS without IDR0.ATS or on a bypass entry, STRW when stage 2 translates.
 * Reads nothing but `words`; never throws.
 */
export function decodeSteSettings(words: Uint32Array, f: SmmuFeatures): SteSettings | number {
  const ste = decodeSte(words);
  if (ste.V === 0) return EventType.C_BAD_STE;
  const config = ste.Config;
  if ((config & 0b100) === 0) return { config: SteConfig.Abort, stage1: undefined, stage2: undefined, eats: 0 };
  if (config === SteConfig.Bypass) return { config, stage1: undefined, stage2: undefined, eats: 0 };
  const s1 = steStage1Enabled(config);
  const s2 = steStage2Enabled(config);
  if ((s1 && !f.stage1) || (s2 && !f.stage2)) return EventType.C_BAD_STE;
  if (!s2 && ste.STRW !== SteStrw.NsEl1 && !(ste.STRW === SteStrw.El2 && f.hyp)) return EventType.C_BAD_STE;
  let eats = f.ats ? ste.EATS : SteEats.Abort;
  if (eats === 3) eats = SteEats.Abort;
  if (eats === SteEats.S1Check && (config !== SteConfig.Nested || ste.S2S === 1 || f.ns1ats)) return EventType.C_BAD_STE;
  if (eats === SteEats.Translate && s2 && ste.S2S === 1) return EventType.C_BAD_STE;
  let stage2: SteStage2 | undefined;
  if (s2) {
    const granuleShift = granuleFromTg0(ste.S2TG);
    if (granuleShift === undefined || !granuleSupported(f, granuleShift)) return EventType.C_BAD_STE;
    if (ste.S2AA64 !== 1 || (ste.S2ENDI === 1 && f.littleEndianOnly) || (ste.S2S === 1 && f.terminateOnly)) return EventType.C_BAD_STE;
    if ((ste.S2HA === 1 && f.httu < 1) || (ste.S2HD === 1 && f.httu < 2)) return EventType.C_BAD_STE;
    // Stage-2 faults must stall when the SMMU forces stalls (IHI0070 §5.5).
    if (ste.S2S === 0 && f.stallForced) return EventType.C_BAD_STE;
    const outputBits = effectiveOutputBits(ste.S2PS, f.oasCode, granuleShift);
    const geometry = stage2Geometry(granuleShift, ste.S2T0SZ, ste.S2SL0, { outputBits, stt: f.smallTables, ias: f.oasBits });
    if (!geometry.ok) return EventType.C_BAD_STE;
    if (ste.S2TTB >= 2 ** outputBits) return EventType.C_BAD_STE;
    const format = vmsaStage2Format({
      granuleShift,
      outputBits,
      oa52: f.oasBits === 52,
      accessFlagFaultDisabled: ste.S2AFFD === 1 || ste.S2HA === 1,
      hardwareDirty: ste.S2HD === 1,
      xnx: f.xnx,
    });
    const startBytes = Math.max(8, 2 ** (geometry.geometry.indexBits[geometry.geometry.startLevel]! + 3));
    stage2 = { vmid: f.vmid16 ? ste.S2VMID : ste.S2VMID & 0xff, granuleShift, geometry: geometry.geometry, format, ttb: ste.S2TTB - (ste.S2TTB % startBytes), outputBits, record: ste.S2R === 1 };
  }
  let stage1: SteStage1 | undefined;
  if (s1) {
    if (ste.S1STALLD === 1 && !f.stallAndTerminate) return EventType.C_BAD_STE;
    const cdMax = f.ssidBits === 0 ? 0 : ste.S1CDMax;
    if (cdMax > f.ssidBits) return EventType.C_BAD_STE;
    const fmt = cdMax === 0 || ste.S1Fmt === 3 ? SteS1Fmt.Linear : ste.S1Fmt;
    if (fmt !== SteS1Fmt.Linear && !f.twoLevelCd) return EventType.C_BAD_STE;
    // The CD table pointer is an IPA when stage 2 translates, a PA otherwise: bounded by the same output size.
    const limit = stage2 !== undefined ? 2 ** stage2.geometry.inputBits : 2 ** f.oasBits;
    if (ste.S1ContextPtr >= limit) return EventType.C_BAD_STE;
    stage1 = { fmt, contextPtr: ste.S1ContextPtr, cdMax, dss: cdMax === 0 ? SteS1Dss.Ssid0 : ste.S1DSS === 3 ? SteS1Dss.Terminate : ste.S1DSS, stallDisabled: ste.S1STALLD === 1 };
  }
  return { config, stage1, stage2, eats };
}
