import { POW2 } from "../bits/bit-ops.js";
import { Perm, type PermBits } from "./access.js";
import type { Iotlb, IotlbHit } from "./iotlb.js";
import { WalkFault } from "./page-table-format.js";
import type { WalkResult } from "./walk-result.js";

/**
 * The IOTLB in front of a walk, as every unit uses it: a hit fills `out` as a walk would (permission fault
 * included) and returns true; a miss returns false and leaves `out` alone. No allocation.
 */
export function translateFromIotlb(iotlb: Iotlb, vmid: number, asid: number, iova: number, access: PermBits, hit: IotlbHit, out: WalkResult): boolean {
  if (!iotlb.lookup(vmid, asid, iova, hit)) return false;
  // A write through an entry cached while its leaf was clean walks again, so the hardware marks it dirty.
  if ((access & Perm.Write) !== 0 && (hit.perms & CLEAN_WRITE) !== 0) return false;
  out.ok = (access & hit.perms) === access;
  out.mapped = true;
  out.output = hit.pageBase + (iova - hit.inputBase);
  out.pageShift = hit.pageShift;
  out.perms = hit.perms & ~CLEAN_WRITE;
  out.fault = out.ok ? WalkFault.None : WalkFault.Permission;
  out.stage = 1;
  out.level = 0;
  out.faultInput = iova;
  out.tableFetch = false;
  out.fetches = 0;
  return true;
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

/** An IOTLB permission bit of the model's own: writable, but the leaf's dirty bit is not set yet. */
export const CLEAN_WRITE = 0x80;
