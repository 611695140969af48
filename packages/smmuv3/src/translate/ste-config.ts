import type { PageTableFormat, TableGeometry } from "@viommu/core";
import { EventType } from "../format/event-record.js";
import { effectiveOutputBits } from "../format/id-registers.js";
import { decodeSte, SteConfig, SteEats, SteS1Fmt, steStage1Enabled, steStage2Enabled, SteStrw } from "../format/stream-table-entry.js";
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
}

/** A legal STE, decoded into what translation needs. */
export interface SteSettings {
  readonly config: number;
  readonly stage1: SteStage1 | undefined;
  readonly stage2: SteStage2 | undefined;
  readonly eats: number;
}

/**
 * Decodes and checks an STE (16 halves) against the SMMU's features (IHI0070 §5.2, "STE validity"; spec §1.6,
 * §1.13 step 4). Returns the settings, or C_BAD_STE for an ILLEGAL entry: V = 0; a reserved Config; a stage the
 * SMMU lacks; a reserved or unsupported S1Fmt, S1CDMax beyond SSIDSIZE, a context pointer beyond the output
 * size; STRW EL2 without IDR0.HYP; EATS without ATS; and for stage 2 a reserved or unsupported granule, an
 * S2T0SZ/S2SL0 the geometry rejects, AArch32 or big-endian tables, stalls on a terminate-only SMMU, hardware
 * updates without HTTU, or an S2TTB beyond the effective S2PS. Abort and bypass entries need nothing else.
 * Reads nothing but `words`; never throws.
 */
export function decodeSteSettings(words: Uint32Array, f: SmmuFeatures): SteSettings | number {
  const ste = decodeSte(words);
  if (ste.V === 0) return EventType.C_BAD_STE;
  const config = ste.Config;
  if (config !== SteConfig.Abort && (config & 0b100) === 0) return EventType.C_BAD_STE;
  if (config === SteConfig.Abort || config === SteConfig.Bypass) return { config, stage1: undefined, stage2: undefined, eats: 0 };
  const s1 = steStage1Enabled(config);
  const s2 = steStage2Enabled(config);
  if ((s1 && !f.stage1) || (s2 && !f.stage2)) return EventType.C_BAD_STE;
  if (ste.STRW !== SteStrw.NsEl1 && !(ste.STRW === SteStrw.El2 && f.hyp)) return EventType.C_BAD_STE;
  if (ste.EATS !== SteEats.Abort && (!f.ats || ste.EATS === 3 || (ste.EATS === SteEats.S1Check && !s2))) return EventType.C_BAD_STE;
  let stage2: SteStage2 | undefined;
  if (s2) {
    const granuleShift = granuleFromTg0(ste.S2TG);
    if (granuleShift === undefined || !granuleSupported(f, granuleShift)) return EventType.C_BAD_STE;
    if (ste.S2AA64 !== 1 || (ste.S2ENDI === 1 && f.littleEndianOnly) || (ste.S2S === 1 && f.terminateOnly)) return EventType.C_BAD_STE;
    if ((ste.S2HA === 1 && f.httu < 1) || (ste.S2HD === 1 && f.httu < 2)) return EventType.C_BAD_STE;
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
    if (ste.S1Fmt === 3 || (ste.S1Fmt !== SteS1Fmt.Linear && !f.twoLevelCd)) return EventType.C_BAD_STE;
    if (ste.S1CDMax > f.ssidBits || (ste.S1CDMax !== 0 && ste.S1DSS === 3)) return EventType.C_BAD_STE;
    // The CD table pointer is an IPA when stage 2 translates, a PA otherwise: bounded by the same output size.
    const limit = stage2 !== undefined ? 2 ** stage2.geometry.inputBits : 2 ** f.oasBits;
    if (ste.S1ContextPtr >= limit) return EventType.C_BAD_STE;
    stage1 = { fmt: ste.S1Fmt, contextPtr: ste.S1ContextPtr, cdMax: ste.S1CDMax, dss: ste.S1DSS };
  }
  return { config, stage1, stage2, eats: ste.EATS };
}
