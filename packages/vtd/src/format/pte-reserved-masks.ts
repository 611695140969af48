import { address64, EntryKind, Perm, WalkFault, type EntryDecode, type PermBits } from "@viommu/core";
import { leafPageShift } from "./table-geometry.js";

/** Per-level reserved-bit masks of a page-table format, as 64-bit values (index = level, 1..5). */
export interface PteReservedMasks {
  /** Mask for an entry that is not a large leaf: level 1 is the 4 KiB leaf, higher levels are table entries. */
  readonly entry: readonly bigint[];
  /** Mask for a large leaf (PS = 1) at level 2 or 3; undefined where no large leaf is allowed (PS is then in `entry`). */
  readonly largeLeaf: readonly (bigint | undefined)[];
}

/** Bit 7 (PS) in both VT-d formats: a level-2/3 entry with it set is a 2 MiB / 1 GiB leaf where allowed. */
const PS = 0x80;

/**
 * A format's decoding once an entry is known present, driven by its per-level reserved masks: the reserved-bit
 * check (masks held as 32-bit halves, so decoding needs no BigInt), PS large leaves at levels 2 and 3 where the
 * masks allow them, and the leaf sizes an encoder may write. The format passes in its present test's outcome
 * and its permissions. (The second-level format uses it; first-level decoding is core's x86-64 paging, whose
 * reserved bits are the same as `flPteReservedMasks`.)
 */
export class PteMaskTable {
  private readonly entryLo = new Uint32Array(6);
  private readonly entryHi = new Uint32Array(6);
  private readonly largeLo = new Uint32Array(6);
  private readonly largeHi = new Uint32Array(6);
  private readonly largeAllowed: readonly boolean[];

  constructor(readonly masks: PteReservedMasks) {
    const allowed = [false];
    for (let level = 1; level <= 5; level++) {
      const e = masks.entry[level]!;
      this.entryLo[level] = Number(e & 0xffffffffn);
      this.entryHi[level] = Number(e >> 32n);
      const l = masks.largeLeaf[level];
      allowed.push(l !== undefined);
      if (l !== undefined) {
        this.largeLo[level] = Number(l & 0xffffffffn);
        this.largeHi[level] = Number(l >> 32n);
      }
    }
    this.largeAllowed = allowed;
  }

  /**
   * Decodes a present entry: a level outside 1..5 or a set reserved bit is `WalkFault.Reserved`; level 1 and a
   * PS entry where a large leaf is allowed are leaves; anything else points to the next table. No allocation.
   */
  decodePresent(lo: number, hi: number, level: number, perms: PermBits, out: EntryDecode): void {
    out.address = 0;
    out.pageShift = 0;
    out.nextLevel = 0;
    out.perms = Perm.None;
    if (!(level >= 1 && level <= 5)) {
      out.kind = EntryKind.Fault;
      out.fault = WalkFault.Reserved;
      return;
    }
    const large = (lo & PS) !== 0 && this.largeAllowed[level] === true;
    const maskLo = large ? this.largeLo[level]! : this.entryLo[level]!;
    const maskHi = large ? this.largeHi[level]! : this.entryHi[level]!;
    if (((lo & maskLo) | (hi & maskHi)) !== 0) {
      out.kind = EntryKind.Fault;
      out.fault = WalkFault.Reserved;
      return;
    }
    out.perms = perms;
    out.fault = WalkFault.None;
    if (level === 1 || large) {
      const shift = leafPageShift(level);
      out.kind = EntryKind.Leaf;
      out.pageShift = shift;
      out.address = address64(lo, hi, shift, 51);
    } else {
      out.kind = EntryKind.Table;
      out.nextLevel = level - 1;
      out.address = address64(lo, hi, 12, 51);
    }
  }

  /** A 4 KiB leaf at level 1, or a 2 MiB / 1 GiB leaf at level 2 / 3 where the masks allow one. */
  leafAllowed(pageShift: number, level: number): boolean {
    if (level === 1) return pageShift === 12;
    if (level === 2 || level === 3) return pageShift === leafPageShift(level) && this.largeAllowed[level] === true;
    return false;
  }
}

/** An entry that is not present: `WalkFault.Translation`. */
export function decodeNotPresent(out: EntryDecode): void {
  out.address = 0;
  out.pageShift = 0;
  out.nextLevel = 0;
  out.perms = Perm.None;
  out.kind = EntryKind.Invalid;
  out.fault = WalkFault.Translation;
}

/** Writes an entry's halves: the address with `lowFlags` in the low word and `highFlags` in the high word. */
export function writePte(address: number, lowFlags: number, highFlags: number, out: Uint32Array): void {
  out[0] = ((address % 0x1_0000_0000) | lowFlags) >>> 0;
  out[1] = (Math.floor(address / 0x1_0000_0000) | highFlags) >>> 0;
}
