import { CommandOpcode } from "./command.js";

const TWO_32 = 2 ** 32;

/*
 * The commands the reference driver issues on every flush, encoded with 32-bit operations into a caller's 4-word
 * buffer (AMD IOMMU spec §2.4; positions as in `commandLayouts`, values as Linux's builders give them): no field
 * record, no BigInt, addresses and sizes as numbers below 2^53. They write the same words as
 * `buildInvalidateIommuPages` and `buildCompletionWait` for those inputs.
 */

/**
 * INVALIDATE_IOMMU_PAGES (Linux build_inv_iommu_pages with build_inv_address) for [address, address + size), size
 * ≥ 1: DomainID [47:32], S [64], PDE [65] (when `pde`), PASID [19:0] with GN [66] for a guest table, and the address
 * word: one page → its address with S = 0; more → every bit below the highest bit that differs between start and
 * end set, S = 1 (past bit 51: 0x7FFF_FFFF_FFFF_F000, everything).
 */
export function encodeInvalidateIommuPagesInto(out: Uint32Array, domainId: number, address: number, size: number, pasid?: number, pde = true): Uint32Array {
  const end = address + size - 1;
  const aHi = Math.floor(address / TWO_32);
  const aLo = (address - aHi * TWO_32) >>> 0;
  const eHi = Math.floor(end / TWO_32);
  const eLo = (end - eHi * TWO_32) >>> 0;
  let lo: number;
  let hi: number;
  let s = 0;
  if (aHi === eHi && ((aLo ^ eLo) & 0xfffff000) === 0) {
    lo = aLo & 0xfffff000;
    hi = aHi;
  } else {
    s = 1;
    const diffHi = (aHi ^ eHi) >>> 0;
    const msb = diffHi !== 0 ? 63 - Math.clz32(diffHi) : 31 - Math.clz32((aLo ^ eLo) >>> 0);
    if (msb > 51) {
      lo = 0xfffff000;
      hi = 0x7fffffff;
    } else if (msb >= 32) {
      lo = 0xfffff000;
      hi = (aHi | ((1 << (msb - 32)) - 1)) >>> 0;
    } else {
      lo = (aLo | ((2 ** msb - 1) >>> 0)) & 0xfffff000;
      hi = aHi;
    }
  }
  out[0] = pasid === undefined ? 0 : pasid & 0xfffff;
  out[1] = ((CommandOpcode.INVALIDATE_IOMMU_PAGES << 28) | (domainId & 0xffff)) >>> 0;
  out[2] = (lo | s | (pde ? 2 : 0) | (pasid === undefined ? 0 : 4)) >>> 0;
  out[3] = hi >>> 0;
  return out;
}

/** COMPLETION_WAIT as Linux's build_completion_wait writes it: S [0], StoreAddress[51:3] at [51:3], StoreData [127:64]. */
export function encodeCompletionWaitInto(out: Uint32Array, storeAddress: number, storeData: number): Uint32Array {
  const hi = Math.floor(storeAddress / TWO_32);
  out[0] = (((storeAddress - hi * TWO_32) & 0xfffffff8) | 1) >>> 0;
  out[1] = ((CommandOpcode.COMPLETION_WAIT << 28) | (hi & 0xfffff)) >>> 0;
  const dHi = Math.floor(storeData / TWO_32);
  out[2] = (storeData - dHi * TWO_32) >>> 0;
  out[3] = dHi >>> 0;
  return out;
}

