import { NO_PASID, type EntryReader, type PageTableFormat, type TableGeometry } from "@viommu/core";
import { CD_BYTES, cdTableSlot, decodeCd, L1CD_BYTES } from "../format/context-descriptor.js";
import { EventType } from "../format/event-record.js";
import { effectiveOutputBits } from "../format/id-registers.js";
import { SteS1Dss, SteS1Fmt } from "../format/stream-table-entry.js";
import { granuleFromTg0, granuleFromTg1, stage1Geometry, type GranuleShift } from "../format/vmsa-geometry.js";
import { vmsaStage1Format } from "../format/vmsa-stage1.js";
import { granuleSupported, type SmmuFeatures } from "./smmu-features.js";
import type { SteStage1 } from "./ste-config.js";
import type { SmmuWalkInfo } from "./walk-info.js";

/** `readCd` found that stage 1 is bypassed for this transaction (STE.S1DSS = bypass, no SubstreamID). */
export const CD_BYPASS = -1;

const entry = new Uint32Array(2);

/**
 * Reads the CD a transaction uses into `out` (16 halves), following STE.S1Fmt (IHI0070 §3.4.2, §5.4; spec
 * §1.7). Returns 0, CD_BYPASS, or the event recorded instead: F_STREAM_DISABLED (no SubstreamID with S1DSS
 * terminate, or SubstreamID 0 with S1DSS = SSID0), C_BAD_SUBSTREAMID (a SubstreamID with S1CDMax = 0, beyond
 * 2^S1CDMax, or an invalid level-1 CD descriptor), F_CD_FETCH when the memory cannot be read. `reader` reads by the
 * address kind the STE holds (a PA, or an IPA translated through stage 2 by the reader).
 */
export function readCd(s1: SteStage1, ssid: number, reader: EntryReader, out: Uint32Array, info: SmmuWalkInfo): number {
  let index: number;
  if (ssid === NO_PASID) {
    if (s1.cdMax === 0 || s1.dss === SteS1Dss.Ssid0) index = 0;
    else if (s1.dss === SteS1Dss.Bypass) return CD_BYPASS;
    else return EventType.F_STREAM_DISABLED;
  } else {
    if (s1.cdMax === 0 || !Number.isInteger(ssid) || ssid < 0 || ssid >= 2 ** s1.cdMax) return EventType.C_BAD_SUBSTREAMID;
    // S1DSS = SSID0 gives substream 0 to untagged traffic: tagged traffic selecting it is F_STREAM_DISABLED (§5.2).
    if (ssid === 0 && s1.dss === SteS1Dss.Ssid0) return EventType.F_STREAM_DISABLED;
    index = ssid;
  }
  let cdAddress: number;
  if (s1.fmt === SteS1Fmt.Linear || s1.cdMax === 0) {
    cdAddress = s1.contextPtr - (s1.contextPtr % CD_BYTES) + index * CD_BYTES;
  } else {
    const slot = cdTableSlot(s1.fmt, index);
    if (!slot.twoLevel) return EventType.C_BAD_SUBSTREAMID;
    const l1 = s1.contextPtr - (s1.contextPtr % L1CD_BYTES) + slot.l1Index * L1CD_BYTES;
    if (!reader.readEntry(l1, entry)) {
      info.fetchAddress = l1;
      return EventType.F_CD_FETCH;
    }
    if ((entry[0]! & 1) === 0) return EventType.C_BAD_SUBSTREAMID;
    const l2Ptr = ((entry[0]! & 0xfffff000) >>> 0) + (entry[1]! & 0xfffff) * 2 ** 32;
    cdAddress = l2Ptr + slot.cdIndex * CD_BYTES;
  }
  for (let i = 0; i < 8; i++) {
    if (!reader.readEntry(cdAddress + i * 8, entry)) {
      info.fetchAddress = cdAddress + i * 8;
      return EventType.F_CD_FETCH;
    }
    out[2 * i] = entry[0]!;
    out[2 * i + 1] = entry[1]!;
  }
  return 0;
}

/** A legal CD, decoded into what a stage-1 walk needs (TTB0's half of the address space). */
export interface CdSettings {
  readonly asid: number;
  /** CD.S: translation-related faults stall (and are always recorded) instead of terminating. */
  readonly stall: boolean;
  /** CD.HA, CD.HD: the SMMU sets AF, and marks writable-clean leaves dirty, in the stage-1 descriptors (HTTU). */
  readonly hardwareAccess: boolean;
  readonly hardwareDirty: boolean;
  /** CD.R: translation-walk faults are recorded. */
  readonly record: boolean;
  /** EPD0: walks through TTB0 are disabled (every TTB0 address faults). */
  readonly epd0: boolean;
  readonly granuleShift: GranuleShift;
  readonly geometry: TableGeometry;
  readonly format: PageTableFormat;
  readonly ttb0: number;
  /** 2^geometry.inputBits: TTB0's addresses are below it. */
  readonly inputLimit: number;
  readonly outputBits: number;
  /** CD.TBI: bit 0 for TTB0's half, bit 1 for TTB1's; a set bit makes the SMMU ignore address bits [63:56]. */
  readonly tbi: number;
  /** TTB1's half (addresses with bit 55 set), absent when EPD1 disables it. */
  readonly ttb1: Ttb1Settings | undefined;
}

/** The upper half of the stage-1 address space (IHI0070 §5.4 TTB1/T1SZ/TG1): addresses 2^64 − 2^inputBits up. */
export interface Ttb1Settings {
  readonly geometry: TableGeometry;
  readonly format: PageTableFormat;
  readonly ttb1: number;
}

interface TtbCheck {
  readonly ok: true;
  readonly granuleShift: GranuleShift;
  readonly geometry: TableGeometry;
  readonly ttb: number;
}

function checkTtb(granuleShift: GranuleShift | undefined, txsz: number, ttb: number, ips: number, f: SmmuFeatures): TtbCheck | undefined {
  if (granuleShift === undefined || !granuleSupported(f, granuleShift)) return undefined;
  const outputBits = effectiveOutputBits(ips, f.oasCode, granuleShift);
  const g = stage1Geometry(granuleShift, txsz, { outputBits, stt: f.smallTables, vax52: f.vax52 });
  if (!g.ok || ttb >= 2 ** outputBits) return undefined;
  const startBytes = Math.max(8, 2 ** (g.geometry.indexBits[g.geometry.startLevel]! + 3));
  return { ok: true, granuleShift, geometry: g.geometry, ttb: ttb - (ttb % startBytes) };
}

/**
 * Decodes and checks a CD (16 halves) against the SMMU's features (IHI0070 §5.4, "CD validity"; spec §1.7):
 * C_BAD_CD for V = 0, AArch32 tables, big-endian tables on a little-endian-only SMMU, HA/HD without HTTU,
 * A = 0 under TERM_MODEL, a 16-bit ASID without ASID16, and for each enabled TTBx a reserved or unsupported
 * granule, a TxSZ out of range or a TTB beyond the effective IPS; and the stall rules of §5.5: S = 1 on a
 * terminate-only SMMU or reached through an STE with S1STALLD (`stallDisabled`), S = 0 where the SMMU forces
 * stalls. Never throws.
 */
export function decodeCdSettings(words: Uint32Array, f: SmmuFeatures, stallDisabled = false): CdSettings | number {
  const cd = decodeCd(words);
  if (cd.V === 0 || cd.AA64 === 0) return EventType.C_BAD_CD;
  if ((cd.ENDI === 1 && f.littleEndianOnly) || (cd.A === 0 && f.termModel)) return EventType.C_BAD_CD;
  if (cd.S === 1 ? f.terminateOnly || stallDisabled : f.stallForced) return EventType.C_BAD_CD;
  if ((cd.HA === 1 && f.httu < 1) || (cd.HD === 1 && f.httu < 2)) return EventType.C_BAD_CD;
  if (!f.asid16 && cd.ASID > 0xff) return EventType.C_BAD_CD;
  if (cd.EPD1 === 0 && checkTtb(granuleFromTg1(cd.TG1), cd.T1SZ, cd.TTB1, cd.IPS, f) === undefined) return EventType.C_BAD_CD;
  const epd0 = cd.EPD0 === 1;
  const t0 = checkTtb(granuleFromTg0(cd.TG0), cd.T0SZ, cd.TTB0, cd.IPS, f);
  if (!epd0 && t0 === undefined) return EventType.C_BAD_CD;
  // With TTB0 disabled its fields are ignored: any legal shape serves, since every address faults before the walk.
  const granuleShift = t0?.granuleShift ?? 12;
  const outputBits = effectiveOutputBits(cd.IPS, f.oasCode, granuleShift);
  let geometry = t0?.geometry;
  if (geometry === undefined) {
    const fallback = stage1Geometry(12, 16, { outputBits });
    if (!fallback.ok) return EventType.C_BAD_CD;
    geometry = fallback.geometry;
  }
  const format = vmsaStage1Format({
    granuleShift,
    outputBits,
    oa52: f.oasBits === 52,
    accessFlagFaultDisabled: cd.AFFD === 1 || cd.HA === 1,
    hierarchicalAttributesDisabled: cd.HAD0 === 1 && f.hierarchicalAttributesDisable,
    hardwareDirty: cd.HD === 1,
  });
  const t1 = cd.EPD1 === 0 ? checkTtb(granuleFromTg1(cd.TG1), cd.T1SZ, cd.TTB1, cd.IPS, f) : undefined;
  const ttb1: Ttb1Settings | undefined =
    t1 === undefined
      ? undefined
      : {
          geometry: t1.geometry,
          ttb1: t1.ttb,
          format: vmsaStage1Format({
            granuleShift: t1.granuleShift,
            outputBits: effectiveOutputBits(cd.IPS, f.oasCode, t1.granuleShift),
            oa52: f.oasBits === 52,
            accessFlagFaultDisabled: cd.AFFD === 1 || cd.HA === 1,
            hierarchicalAttributesDisabled: cd.HAD1 === 1 && f.hierarchicalAttributesDisable,
            hardwareDirty: cd.HD === 1,
          }),
        };
  return { asid: cd.ASID, stall: cd.S === 1, hardwareAccess: cd.HA === 1, hardwareDirty: cd.HD === 1, record: cd.R === 1, epd0, granuleShift, geometry, format, ttb0: t0?.ttb ?? 0, inputLimit: 2 ** geometry.inputBits, outputBits, tbi: cd.TBI, ttb1 };
}
