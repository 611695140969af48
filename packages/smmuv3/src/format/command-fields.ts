import type { RawBits } from "@viommu/core";
import { granuleFromTlbiTg } from "./vmsa-geometry.js";

/**
 * The command fields queue processing reads, straight from the 128-bit command's four 32-bit halves
 * (positions as in `commandLayouts`, IHI0070 §4): plain number arithmetic, no record and no BigInt per command,
 * for the command-queue hot path. `decodeCommand` remains the complete decoder.
 */

export function cmdOpcode(raw: RawBits): number {
  return raw[0]! & 0xff;
}

/** StreamID, dw0[63:32] (PREFETCH, CFGI_*, ATC_INV, PRI_RESP, RESUME, STALL_TERM). */
export function cmdSid(raw: RawBits): number {
  return raw[1]! >>> 0;
}

/** SubstreamID, dw0[31:12] (PREFETCH, CFGI_CD, ATC_INV, PRI_RESP). */
export function cmdSsid(raw: RawBits): number {
  return raw[0]! >>> 12;
}

/** SSV, dw0[11] (PREFETCH, ATC_INV, PRI_RESP). */
export function cmdSsv(raw: RawBits): boolean {
  return (raw[0]! & (1 << 11)) !== 0;
}

/** Leaf, dw1[0] (CFGI_STE, CFGI_CD, TLBI by address). */
export function cmdLeaf(raw: RawBits): boolean {
  return (raw[2]! & 1) !== 0;
}

/** CMD_PRI_RESP.PRGIndex, dw1[8:0]. */
export function cmdPrgIndex(raw: RawBits): number {
  return raw[2]! & 0x1ff;
}

/** CMD_PRI_RESP.Resp, dw1[13:12]. */
export function cmdPriResp(raw: RawBits): number {
  return (raw[2]! >>> 12) & 0b11;
}

/** CMD_RESUME.Action (Ac bit 12, Ab bit 13), dw0[13:12]. */
export function cmdResumeAction(raw: RawBits): number {
  return (raw[0]! >>> 12) & 0b11;
}

/** CMD_RESUME.STAG, dw1[15:0]. */
export function cmdStag(raw: RawBits): number {
  return raw[2]! & 0xffff;
}

/** VMID, dw0[47:32] (TLBI_NH_*, TLBI_S12_VMALL, TLBI_S2_IPA). */
export function cmdVmid(raw: RawBits): number {
  return raw[1]! & 0xffff;
}

/** ASID, dw0[63:48] (TLBI_NH_ASID, TLBI_NH_VA, TLBI_EL2_ASID/VA). */
export function cmdAsid(raw: RawBits): number {
  return raw[1]! >>> 16;
}

/** CFGI_STE_RANGE.Range, dw1[4:0]. */
export function cmdRange(raw: RawBits): number {
  return raw[2]! & 0x1f;
}

/** CMD_SYNC.CS, dw0[13:12]. */
export function cmdSyncCs(raw: RawBits): number {
  return (raw[0]! >>> 12) & 0b11;
}

/** CMD_SYNC.MSIData, dw0[63:32]. */
export function cmdSyncMsiData(raw: RawBits): number {
  return raw[1]! >>> 0;
}

/** CMD_SYNC.MSIAddress, dw1[51:2]. */
export function cmdSyncMsiAddress(raw: RawBits): number {
  return ((raw[2]! & 0xffff_fffc) >>> 0) + (raw[3]! & 0xfffff) * 2 ** 32;
}

/** ATC_INV.Size, dw1[5:0]. */
export function cmdAtcSize(raw: RawBits): number {
  return raw[2]! & 0x3f;
}

/** SSec, dw0[10]. */
export function cmdSsec(raw: RawBits): boolean {
  return (raw[0]! & (1 << 10)) !== 0;
}

/** An address range as numbers: [first, first + length). Addresses at or above 2^53 are clipped there. */
export interface NumberRange {
  first: number;
  length: number;
}

const LIMIT = Number.MAX_SAFE_INTEGER + 1;

/**
 * The range a TLBI_NH_VA / NH_VAA / EL2_VA / S2_IPA invalidates (same rules as `tlbiAddressRange`): with TG = 0
 * the 4 KiB page of Addr; otherwise (NUM + 1) × 2^SCALE granules from Addr. Addr is dw1[63:12] (an IPA for
 * S2_IPA, whose bits above 51 are RES0 and checked elsewhere). Fills `out`, allocates nothing.
 */
export function tlbiRange(raw: RawBits, out: NumberRange): void {
  const addr = ((raw[2]! & 0xffff_f000) >>> 0) + (raw[3]! >>> 0) * 2 ** 32;
  const tg = (raw[2]! >>> 10) & 0b11;
  const granule = granuleFromTlbiTg(tg);
  let bytes = 4096;
  if (granule !== undefined) {
    const num = (raw[0]! >>> 12) & 0x1f;
    const scale = (raw[0]! >>> 20) & 0x1f;
    bytes = (num + 1) * 2 ** (scale + granule);
  }
  const first = Math.min(addr, LIMIT);
  out.first = first;
  out.length = Math.max(0, Math.min(first + bytes, LIMIT) - first);
}
