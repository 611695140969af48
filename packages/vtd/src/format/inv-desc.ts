import {
  decodeLayout,
  defineLayout,
  encodeLayout,
  hasReservedBits,
  setBitsBig,
  type DecodedStructure,
  type Fields,
  type Layout,
  type RawBits,
} from "@viommu/core";
import { InvalidationQueueErrorInfo } from "./registers.js";
import { word64 } from "./layout-decoder.js";

/**
 * Invalidation-queue descriptors (Intel VT-d spec §6.5.2): 128 bits (IQA.DW = 0) or 256 bits (DW = 1; QW2 and
 * QW3 are reserved except for a page group response's private data). The 7-bit type is QW0[3:0] (low) and
 * QW0[11:9] (high). Field positions: ../shared/spec/x86.md A6 (Linux `QI_*`, QEMU `VTD_INV_DESC_*`),
 * checked against VirtualBox's spec-derived `VTD_BF_*_INV_DSC_*`. Type names are the spec's descriptor names
 * (cc_inv_dsc → CC_INV, …) as Linux's `linux_type` in the real-guest fixture also spells them.
 */
export const InvDescType = {
  /** Context-cache invalidate. */
  CC_INV: 0x1,
  /** IOTLB invalidate. */
  IOTLB_INV: 0x2,
  /** Device-TLB (ATS) invalidate. */
  DEV_TLB_INV: 0x3,
  /** Interrupt entry cache invalidate. */
  IEC_INV: 0x4,
  /** Invalidation wait. */
  INV_WAIT: 0x5,
  /** PASID-based IOTLB invalidate. */
  P_IOTLB_INV: 0x6,
  /** PASID-cache invalidate. */
  PC_INV: 0x7,
  /** PASID-based device-TLB invalidate. */
  P_DEV_TLB_INV: 0x8,
  /** Page group response. */
  PG_RESP: 0x9,
  /**
   * Page stream response (Linux QI_PSTRM_RESP_TYPE): a VT-d 2.x descriptor that VT-d 3.0 removed. Its fields
   * are not in the sources; it decodes as raw words and is an invalid type for a VT-d 3.x queue.
   */
  PSTRM_RESP: 0xa,
} as const;

export type InvDescName = keyof typeof InvDescType;

const TYPE_FIELDS = [
  { name: "TYPE_LO", bit: 0, width: 4 },
  { name: "TYPE_HI", bit: 9, width: 3 },
] as const;

/** cc_inv_dsc. G: ContextCacheGranularity; FM masks SID bits as in CCMD. */
export const ccInvLayout = defineLayout("cc_inv_dsc", 128, [
  ...TYPE_FIELDS,
  { name: "G", bit: 4, width: 2 },
  { name: "DID", bit: 16, width: 16 },
  { name: "SID", bit: 32, width: 16 },
  { name: "FM", bit: 48, width: 2 },
] as const);

/** iotlb_inv_dsc. G: IotlbGranularity; AM/IH/ADDR used for page-selective invalidation (2^AM pages at ADDR). */
export const iotlbInvLayout = defineLayout("iotlb_inv_dsc", 128, [
  ...TYPE_FIELDS,
  { name: "G", bit: 4, width: 2 },
  /** Drain writes. */
  { name: "DW", bit: 6, width: 1 },
  /** Drain reads. */
  { name: "DR", bit: 7, width: 1 },
  { name: "DID", bit: 16, width: 16 },
  { name: "AM", bit: 64, width: 6 },
  /** Invalidation hint: only leaf entries changed. */
  { name: "IH", bit: 70, width: 1 },
  { name: "ADDR", bit: 76, width: 52, shift: 12, big: true },
] as const);

/**
 * dev_tlb_inv_dsc. PFSID (physical-function source id, valid with ECAP.DIT) is split: [3:0] at QW0[15:12],
 * [15:4] at QW0[63:52]; decoding reports it whole. S = 1: the size is encoded in ADDR as in PCIe ATS
 * (see `deviceTlbInvalidationSize`).
 */
export const devTlbInvLayout = defineLayout("dev_tlb_inv_dsc", 128, [
  ...TYPE_FIELDS,
  { name: "PFSID_3_0", bit: 12, width: 4 },
  /** Max invalidations pending (the device's ATS queue depth; Linux QI_DEV_IOTLB_QDEP). */
  { name: "MIP", bit: 16, width: 5 },
  { name: "SID", bit: 32, width: 16 },
  { name: "PFSID_15_4", bit: 52, width: 12 },
  { name: "S", bit: 64, width: 1 },
  { name: "ADDR", bit: 76, width: 52, shift: 12, big: true },
] as const);

/** iec_inv_dsc. G = 0 global, 1 index-selective (2^IM entries from IIDX); see IecGranularity. */
export const iecInvLayout = defineLayout("iec_inv_dsc", 128, [
  ...TYPE_FIELDS,
  { name: "G", bit: 4, width: 1 },
  { name: "IM", bit: 27, width: 5 },
  { name: "IIDX", bit: 32, width: 16 },
] as const);

/** inv_wait_dsc. SW writes STATUS_DATA to STATUS_ADDR; IF raises the invalidation-completion event. */
export const invWaitLayout = defineLayout("inv_wait_dsc", 128, [
  ...TYPE_FIELDS,
  /** Interrupt flag. */
  { name: "IF", bit: 4, width: 1 },
  /** Status write. */
  { name: "SW", bit: 5, width: 1 },
  /** Fence: later descriptors wait for this one. */
  { name: "FN", bit: 6, width: 1 },
  /** Page-request drain. */
  { name: "PD", bit: 7, width: 1 },
  { name: "STATUS_DATA", bit: 32, width: 32 },
  /** Status address, dword aligned. */
  { name: "STATUS_ADDR", bit: 66, width: 62, shift: 2, big: true },
] as const);

/** p_iotlb_inv_dsc. G: PasidIotlbGranularity. */
export const pIotlbInvLayout = defineLayout("p_iotlb_inv_dsc", 128, [
  ...TYPE_FIELDS,
  { name: "G", bit: 4, width: 2 },
  { name: "DID", bit: 16, width: 16 },
  { name: "PASID", bit: 32, width: 20 },
  { name: "AM", bit: 64, width: 6 },
  { name: "IH", bit: 70, width: 1 },
  { name: "ADDR", bit: 76, width: 52, shift: 12, big: true },
] as const);

/** pc_inv_dsc. G: PasidCacheGranularity. */
export const pcInvLayout = defineLayout("pc_inv_dsc", 128, [
  ...TYPE_FIELDS,
  { name: "G", bit: 4, width: 2 },
  { name: "DID", bit: 16, width: 16 },
  { name: "PASID", bit: 32, width: 20 },
] as const);

/** p_dev_tlb_inv_dsc. G (QW1 bit 0) = 1: all PASIDs. S and ADDR as in dev_tlb_inv_dsc. */
export const pDevTlbInvLayout = defineLayout("p_dev_tlb_inv_dsc", 128, [
  ...TYPE_FIELDS,
  { name: "MIP", bit: 4, width: 5 },
  { name: "PFSID_3_0", bit: 12, width: 4 },
  { name: "SID", bit: 16, width: 16 },
  { name: "PASID", bit: 32, width: 20 },
  { name: "PFSID_15_4", bit: 52, width: 12 },
  { name: "G", bit: 64, width: 1 },
  { name: "S", bit: 75, width: 1 },
  { name: "ADDR", bit: 76, width: 52, shift: 12, big: true },
] as const);

/**
 * page_grp_resp_dsc (Linux QI_PGRP_*): the reply to a page request. PP: PASID present; PDP: private data
 * present (QW2/QW3 of a 256-bit descriptor); RESPONSE_CODE: PageResponseCode; RID: requester id; LPIG: last page
 * in group; PRGI: page request group index.
 */
export const pgRespLayout = defineLayout("page_grp_resp_dsc", 128, [
  ...TYPE_FIELDS,
  { name: "PP", bit: 4, width: 1 },
  { name: "PDP", bit: 5, width: 1 },
  { name: "RESPONSE_CODE", bit: 12, width: 4 },
  { name: "RID", bit: 16, width: 16 },
  { name: "PASID", bit: 32, width: 20 },
  { name: "LPIG", bit: 66, width: 1 },
  { name: "PRGI", bit: 67, width: 9 },
] as const);

/** Layout of each descriptor type with known fields (PSTRM_RESP has none). */
export const invDescLayouts = {
  CC_INV: ccInvLayout,
  IOTLB_INV: iotlbInvLayout,
  DEV_TLB_INV: devTlbInvLayout,
  IEC_INV: iecInvLayout,
  INV_WAIT: invWaitLayout,
  P_IOTLB_INV: pIotlbInvLayout,
  PC_INV: pcInvLayout,
  P_DEV_TLB_INV: pDevTlbInvLayout,
  PG_RESP: pgRespLayout,
} as const;

export type InvDescLayoutName = keyof typeof invDescLayouts;

/** Context-cache (CC_INV) G values. */
export const ContextCacheGranularity = { GLOBAL: 1, DOMAIN: 2, DEVICE: 3 } as const;
/** IOTLB_INV G values. */
export const IotlbGranularity = { GLOBAL: 1, DOMAIN: 2, PAGE: 3 } as const;
/** IEC_INV G values. QEMU's header comment calls G = 1 global; its code, Linux and the spec treat 1 as index-selective. */
export const IecGranularity = { GLOBAL: 0, INDEX: 1 } as const;
/** P_IOTLB_INV G values (0 and 1 are reserved). */
export const PasidIotlbGranularity = { NON_GLOBAL: 2, PAGE_IN_PASID: 3 } as const;
/** PC_INV G values (2 is reserved). */
export const PasidCacheGranularity = { DOMAIN: 0, PASID: 1, GLOBAL: 3 } as const;
/** PG_RESP response codes. */
export const PageResponseCode = { SUCCESS: 0x0, INVALID_REQUEST: 0x1, RESPONSE_FAILURE: 0xf } as const;

/** The 7-bit type of a descriptor from the low 32 bits of QW0. Hot path: no allocation. */
export function invDescType(qw0Lo: number): number {
  return (qw0Lo & 0xf) | ((qw0Lo >>> 5) & 0x70);
}

const NAME_BY_CODE = new Map<number, InvDescName>(Object.entries(InvDescType).map(([name, code]) => [code, name as InvDescName]));

/** The spec name of a descriptor type code, or UNKNOWN. */
export function invDescName(code: number): InvDescName | "UNKNOWN" {
  return NAME_BY_CODE.get(code) ?? "UNKNOWN";
}

export interface DecodedInvDesc extends DecodedStructure {
  readonly name: InvDescName | "UNKNOWN";
}

function checkWidth(raw: RawBits): void {
  if (raw.length !== 4 && raw.length !== 8) throw new RangeError(`an invalidation descriptor is 128 or 256 bits, got ${raw.length * 32}`);
}

/**
 * Decodes a 128- or 256-bit descriptor (2 or 4 64-bit words). Never throws for those widths: an unknown type
 * decodes as UNKNOWN with its code and raw words (QW0…), as does PSTRM_RESP, whose fields no source gives.
 * PFSID halves are reported joined as PFSID; a 256-bit PG_RESP adds PRIVATE_DATA0/1 (QW2, QW3).
 */
export function decodeInvDesc(raw: RawBits): DecodedInvDesc {
  checkWidth(raw);
  const code = invDescType(raw[0]!);
  const name = invDescName(code);
  const fields: Record<string, number | bigint> = {};
  const layout = name === "UNKNOWN" || name === "PSTRM_RESP" ? undefined : invDescLayouts[name];
  if (layout === undefined) {
    for (let i = 0; i < raw.length / 2; i++) fields[`QW${i}`] = word64(raw, i);
    return { name, code, fields };
  }
  const decoded = decodeLayout(layout as Layout, raw.subarray(0, 4)) as Record<string, number | bigint>;
  for (const [key, value] of Object.entries(decoded)) {
    if (key === "TYPE_LO" || key === "TYPE_HI" || key === "PFSID_3_0" || key === "PFSID_15_4") continue;
    fields[key] = value;
  }
  if ("PFSID_3_0" in decoded) {
    fields.PFSID = (decoded.PFSID_3_0 as number) | ((decoded.PFSID_15_4 as number) << 4);
  }
  if (name === "PG_RESP" && raw.length === 8) {
    fields.PRIVATE_DATA0 = word64(raw, 2);
    fields.PRIVATE_DATA1 = word64(raw, 3);
  }
  return { name, code, fields };
}

/** Fields an encoder takes for descriptor `N`: its layout fields, PFSID whole, and private data for PG_RESP. */
export type InvDescInput<N extends InvDescLayoutName> = Partial<Omit<Fields<(typeof invDescLayouts)[N]>, "TYPE_LO" | "TYPE_HI">> & {
  readonly PFSID?: number;
  readonly PRIVATE_DATA0?: bigint;
  readonly PRIVATE_DATA1?: bigint;
};

/**
 * Encodes a descriptor of type `name` as 128 or 256 bits. Throws RangeError for a value that does not fit
 * its field (encoders take trusted values).
 */
export function encodeInvDesc<N extends InvDescLayoutName>(name: N, input: InvDescInput<N>, width: 128 | 256 = 128): RawBits {
  const layout = invDescLayouts[name] as Layout;
  const code = InvDescType[name];
  const { PFSID, PRIVATE_DATA0, PRIVATE_DATA1, ...rest } = input;
  const values: Record<string, number | bigint> = { ...(rest as Record<string, number | bigint>), TYPE_LO: code & 0xf, TYPE_HI: code >>> 4 };
  if (PFSID !== undefined) {
    if (!layout.fields.some((f) => f.name === "PFSID_3_0")) throw new RangeError(`${name} has no PFSID`);
    values.PFSID_3_0 = PFSID & 0xf;
    values.PFSID_15_4 = (PFSID >>> 4) & 0xfff;
  }
  const raw = new Uint32Array(width / 32);
  // The generic layout type sees only number fields; writeField takes the bigint ones (ADDR) at run time.
  encodeLayout(layout, values as unknown as Partial<Fields<Layout>>, raw.subarray(0, 4));
  if (PRIVATE_DATA0 !== undefined || PRIVATE_DATA1 !== undefined) {
    if (name !== "PG_RESP" || width !== 256) throw new RangeError("private data exists only in a 256-bit PG_RESP");
    setBitsBig(raw, 128, 64, PRIVATE_DATA0 ?? 0n);
    setBitsBig(raw, 192, 64, PRIVATE_DATA1 ?? 0n);
  }
  return raw;
}

/** Why hardware would reject a descriptor, as the IQERCD.IQEI value it records (FSTS.IQE is set). */
export type InvDescProblem = (typeof InvalidationQueueErrorInfo)["INVALID_DESCRIPTOR_TYPE" | "RSVD_FIELD_VIOLATION"];

/**
 * Checks a descriptor against the spec's reserved fields: an unknown type (or the removed PSTRM_RESP) is
 * INVALID_DESCRIPTOR_TYPE; a set reserved bit, including QW2/QW3 of a 256-bit descriptor other than PG_RESP,
 * is RSVD_FIELD_VIOLATION. QEMU is stricter in places (it treats INV_WAIT.PD and, lacking DIT, PFSID as
 * reserved); that policy belongs to the device model, not to the format.
 */
export function invDescProblem(raw: RawBits): InvDescProblem | undefined {
  checkWidth(raw);
  const name = invDescName(invDescType(raw[0]!));
  if (name === "UNKNOWN" || name === "PSTRM_RESP") return InvalidationQueueErrorInfo.INVALID_DESCRIPTOR_TYPE;
  if (hasReservedBits(invDescLayouts[name] as Layout, raw.subarray(0, 4))) return InvalidationQueueErrorInfo.RSVD_FIELD_VIOLATION;
  if (raw.length === 8 && name !== "PG_RESP" && (raw[4]! | raw[5]! | raw[6]! | raw[7]!) !== 0) {
    return InvalidationQueueErrorInfo.RSVD_FIELD_VIOLATION;
  }
  return undefined;
}

/**
 * Bytes a device-TLB invalidation covers: 4 KiB with S = 0; with S = 1 the PCIe ATS size encoding, 8 KiB
 * shifted left once per consecutive 1 in ADDR starting at bit 12 (all ones in ADDR[63:12] means everything).
 * Returns undefined for "all addresses".
 */
export function deviceTlbInvalidationSize(s: number, addr: bigint): bigint | undefined {
  if (s === 0) return 4096n;
  let ones = 0n;
  for (let bit = 12n; bit < 64n; bit++) {
    if (((addr >> bit) & 1n) === 0n) return 8192n << ones;
    ones++;
  }
  return undefined;
}
