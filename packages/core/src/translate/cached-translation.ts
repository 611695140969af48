import { POW2 } from "../bits/bit-ops.js";
import { Perm, type PermBits } from "./access.js";
import { CLEAN_WRITE, type Iotlb, type IotlbHit } from "./iotlb.js";
import type { WalkResult } from "./walk-result.js";

/** The request `translateFromIotlb` hands the IOTLB (one at a time: nothing re-enters it). */
const asked = { iova: 0.5, access: 0 };

/**
 * The IOTLB in front of a walk, as every unit uses it: a hit fills `out` as a walk would (permission fault
 * included) and returns true; a miss returns false and leaves `out` alone. No allocation. `Iotlb.hitInto` is the
 * same taking the request itself (the form to use where the address comes in a request object); `_hit` is no
 * longer filled (the parameter stays so units' calls do not change).
 */
export function translateFromIotlb(iotlb: Iotlb, vmid: number, asid: number, iova: number, access: PermBits, _hit: IotlbHit, out: WalkResult): boolean {
  asked.iova = iova;
  asked.access = access;
  return iotlb.hitInto(vmid, asid, asked, out);
}

/**
 * Caches a completed translation (only successful walks: a failed one may not have reached its last stage).
 * `cleanWrite`: the leaf is writable but not yet dirty while its domain tracks dirty pages (a read walked it):
 * the entry is cached so that a later write misses and walks, as hardware that caches the D bit does.
 */
export function cacheTranslation(iotlb: Iotlb, vmid: number, asid: number, iova: number, out: WalkResult, payload = 0, cleanWrite = false): void {
  if (!out.ok) return;
  const size = POW2[out.pageShift]!;
  const perms = cleanWrite && (out.perms & Perm.Write) !== 0 ? out.perms | CLEAN_WRITE : out.perms;
  // The output page base: the output less the input's offset in the page (no floating-point modulo).
  iotlb.insert(vmid, asid, iova, out.pageShift, out.output - (iova - Math.floor(iova / size) * size), perms, payload);
}
