import { InvDescType } from "./inv-desc.js";

const TWO_32 = 2 ** 32;

/*
 * The descriptors the reference driver issues on every flush, encoded with 32-bit operations into a caller's
 * buffer (VT-d §6.5.2; positions as in `invDescLayouts`): no field record, no BigInt, addresses as numbers (below
 * 2^53). `out` holds 4 words (128 bits) or 8 (256 bits: the upper half is zeroed). Bits outside a field's width are dropped,
 * and a misaligned address loses its low bits, where `encodeInvDesc` would throw: callers pass trusted values.
 */

/** ADDR[63:12] at bits [127:76] with AM [69:64] and IH [70]: QW1 of IOTLB_INV and P_IOTLB_INV. */
function pageQw1(out: Uint32Array, am: number, ih: number, address: number): void {
  const hi = Math.floor(address / TWO_32);
  out[2] = (((address - hi * TWO_32) & 0xfffff000) | (am & 0x3f) | ((ih & 1) << 6)) >>> 0;
  out[3] = hi >>> 0;
  if (out.length > 4) out.fill(0, 4);
}

/** P_IOTLB_INV: G [5:4], DID [31:16], PASID [51:32], AM, IH, ADDR. */
export function encodePIotlbInvInto(out: Uint32Array, g: number, did: number, pasid: number, am = 0, ih = 0, address = 0): Uint32Array {
  out[0] = (InvDescType.P_IOTLB_INV | ((g & 3) << 4) | ((did & 0xffff) << 16)) >>> 0;
  out[1] = pasid & 0xfffff;
  pageQw1(out, am, ih, address);
  return out;
}

/** IOTLB_INV: G [5:4], DW [6], DR [7], DID [31:16], AM, IH, ADDR. */
export function encodeIotlbInvInto(out: Uint32Array, g: number, did: number, dw: number, dr: number, am = 0, ih = 0, address = 0): Uint32Array {
  out[0] = (InvDescType.IOTLB_INV | ((g & 3) << 4) | ((dw & 1) << 6) | ((dr & 1) << 7) | ((did & 0xffff) << 16)) >>> 0;
  out[1] = 0;
  pageQw1(out, am, ih, address);
  return out;
}

/** INV_WAIT: IF [4], SW [5], FN [6], PD [7], STATUS_DATA [63:32], STATUS_ADDR[63:2] at [127:66]. */
export function encodeInvWaitInto(out: Uint32Array, flags: { IF?: number; SW?: number; FN?: number; PD?: number }, statusData: number, statusAddress: number): Uint32Array {
  const hi = Math.floor(statusAddress / TWO_32);
  out[0] = (InvDescType.INV_WAIT | (((flags.IF ?? 0) & 1) << 4) | (((flags.SW ?? 0) & 1) << 5) | (((flags.FN ?? 0) & 1) << 6) | (((flags.PD ?? 0) & 1) << 7)) >>> 0;
  out[1] = statusData >>> 0;
  out[2] = ((statusAddress - hi * TWO_32) & 0xfffffffc) >>> 0;
  out[3] = hi >>> 0;
  if (out.length > 4) out.fill(0, 4);
  return out;
}
