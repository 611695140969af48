import { type RawBits } from "@viommu/core";
import { encodeTlbiNhVa } from "./tlbi-encode.js";

/** Linux's CMDQ_TLBI_RANGE_NUM_MAX: NUM is 5 bits, so one range command covers up to 32 × 2^SCALE pages. */
const RANGE_NUM_MAX = 31;
/** SCALE is dw0[24:20]: at most 2^31 pages per NUM step. */
const RANGE_SCALE_MAX = 31;
/** Above this many commands a driver invalidates the whole ASID instead (Linux io-pgtable's flush-all fallback). */
export const MAX_RANGE_COMMANDS = 64;

function trailingZeros(n: number): number {
  let z = 0;
  while (n > 0 && n % 2 === 0) {
    n /= 2;
    z++;
  }
  return z;
}

/**
 * The CMD_TLBI_NH_VA commands Linux's `arm_smmu_tlb_inv_range_cmd` issues to invalidate [iova, iova + size) of
 * an ASID whose leaves are 2^`leafShift` bytes (undefined: mixed sizes, TTL 0) in a table of granule `granuleShift`. With range invalidation
 * (IDR3.RIL): TG from the granule, TTL from the leaf level, and per command the largest aligned run of
 * NUM + 1 ≤ 32 chunks of 2^SCALE pages; without it, one command per leaf. Undefined when more than
 * MAX_RANGE_COMMANDS would be needed (invalidate the ASID instead). With the leaf size unknown the commands are
 * non-leaf with TTL 0, and, as Linux does, a run that would start with a single page is widened to two: NUM 0,
 * SCALE 0 with TTL 0 is a Reserved encoding (IHI0070 §4.4.1) that raises CERROR_ILL. `leaf` false asks for
 * non-leaf commands whatever the leaf size (the SVA MMU notifier's `arm_smmu_tlb_inv_range_asid(…, leaf = false)`,
 * whose granule is only nominal): Leaf 0 and TTL 0, per page without range invalidation. `maxCommands` raises the
 * MAX_RANGE_COMMANDS cap for a caller that bounds the range itself.
 */
export function tlbiRangeCommands(asid: number, iova: number, size: number, granuleShift: number, leafShift: number | undefined, rangeInvalidation: boolean, leaf = true, maxCommands = MAX_RANGE_COMMANDS): RawBits[] | undefined {
  const out: RawBits[] = [];
  const end = iova + size;
  if (!rangeInvalidation) {
    const step = 2 ** (leafShift ?? granuleShift);
    for (let at = iova - (iova % step); at < end; at += step) {
      if (out.length >= maxCommands) return undefined;
      out.push(encodeTlbiNhVa(asid, at, leaf ? 1 : 0));
    }
    return out;
  }
  const tg = (granuleShift - 10) / 2;
  const known = leaf && leafShift !== undefined;
  const leafBit = known ? 1 : 0;
  const ttl = known ? 4 - Math.floor((leafShift - 3) / (granuleShift - 3)) : 0;
  let pages = Math.ceil(size / 2 ** granuleShift);
  if (ttl === 0 && pages % (RANGE_NUM_MAX + 1) === 1) pages++;
  let at = iova;
  while (at < end && pages > 0) {
    if (out.length >= maxCommands) return undefined;
    const scale = trailingZeros(pages);
    // SCALE is 5 bits: a run of more than 2^31 pages cannot be named, so the caller invalidates the ASID.
    if (scale > RANGE_SCALE_MAX) return undefined;
    const num = Math.floor(pages / 2 ** scale) % (RANGE_NUM_MAX + 1);
    out.push(encodeTlbiNhVa(asid, at, leafBit, num - 1, scale, ttl, tg));
    at += num * 2 ** (scale + granuleShift);
    pages -= num * 2 ** scale;
  }
  return out;
}
