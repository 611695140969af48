import { POW2 } from "../bits/bit-ops.js";
import { Perm, type PermBits } from "./access.js";
import { EntryKind, WalkFault, newEntryDecode, type PageTableFormat, type RadixLayout, type TableGeometry } from "./page-table-format.js";
import { resetWalkResult, type WalkResult } from "./walk-result.js";

/** Where a walk reads table entries from: host memory, guest memory, or guest memory through stage 2. */
export interface EntryReader {
  /**
   * Reads the 64-bit entry at `address` into out[0] (lo) and out[1] (hi). Returns false when the fetch
   * itself fails (outside memory, or a stage-2 fault on a nested fetch); the reader keeps the details.
   */
  readEntry(address: number, out: Uint32Array): boolean;
}

/**
 * Bits [shift, shift + bits) of a 64-bit input given as halves (and as a number, for the rare wide field that
 * no 32-bit operation holds).
 */
export function indexBitsOf(lo: number, hi: number, input: number, shift: number, bits: number): number {
  if (bits <= 30) {
    const mask = (1 << bits) - 1;
    if (shift + bits <= 32) return (lo >>> shift) & mask;
    if (shift >= 32) return (hi >>> (shift - 32)) & mask;
    return ((lo >>> shift) | (hi << (32 - shift))) & mask;
  }
  return Math.floor(input / POW2[shift]!) % POW2[bits]!;
}

/**
 * The generic radix walker, driven by a vendor's `PageTableFormat` and a `TableGeometry`. One instance
 * owns its scratch state, so a walk allocates nothing; an instance is not re-entrant (nested translation
 * uses one walker per stage).
 */
export class PageWalker {
  private readonly entry = new Uint32Array(2);
  private readonly decoded = newEntryDecode();

  /**
   * Translates `input` through the table at `root`, checking `access` (Perm bits) against the permissions
   * accumulated over every level. Fills `out`; never throws for any table contents.
   */
  walk(format: PageTableFormat, geometry: TableGeometry, root: number, input: number, access: PermBits, reader: EntryReader, out: WalkResult): void {
    if (format.layout !== undefined) {
      this.walkLayout(format.layout, geometry, root, input, access, reader, out);
      return;
    }
    resetWalkResult(out);
    out.faultInput = input;
    let level = geometry.startLevel;
    out.level = level;
    if (!(input >= 0) || input >= POW2[geometry.inputBits]!) {
      out.fault = WalkFault.AddressSize;
      return;
    }
    const outputLimit = geometry.outputBits === undefined ? Number.MAX_SAFE_INTEGER : POW2[geometry.outputBits]!;
    if (root >= outputLimit) {
      out.fault = WalkFault.AddressSize;
      return;
    }
    let table = root;
    let perms: PermBits = Perm.All;
    const d = this.decoded;
    // The input as two 32-bit halves: level indices come out of shifts and masks, not floating-point division.
    const inLo = input >>> 0;
    const inHi = Math.floor(input / 4_294_967_296) >>> 0;
    for (let steps = 0; steps <= geometry.startLevel; steps++) {
      const shift = geometry.levelShift[level];
      const bits = geometry.indexBits[level];
      if (shift === undefined || bits === undefined || bits <= 0) {
        out.fault = WalkFault.Reserved;
        return;
      }
      const index = indexBitsOf(inLo, inHi, input, shift, bits);
      const address = table + index * 8;
      out.entryAddress = address;
      out.fetches++;
      if (!reader.readEntry(address, this.entry)) {
        out.fault = WalkFault.External;
        return;
      }
      const lo = this.entry[0]!;
      const hi = this.entry[1]!;
      out.entryLo = lo;
      out.entryHi = hi;
      format.decodeEntry(lo, hi, level, d);
      if (d.kind === EntryKind.Invalid) {
        out.fault = WalkFault.Translation;
        return;
      }
      if (d.kind === EntryKind.Fault) {
        out.fault = d.fault === WalkFault.None ? WalkFault.Reserved : d.fault;
        return;
      }
      if (d.address >= outputLimit) {
        out.fault = WalkFault.AddressSize;
        return;
      }
      perms &= d.perms;
      if (d.kind === EntryKind.Leaf) {
        const size = POW2[d.pageShift]!;
        out.mapped = true;
        out.pageShift = d.pageShift;
        out.perms = perms;
        out.output = d.address + (input - Math.floor(input / size) * size);
        if ((access & perms) !== access) {
          out.fault = WalkFault.Permission;
          return;
        }
        out.ok = true;
        return;
      }
      const next = d.nextLevel;
      if (!(next >= 1 && next < level)) {
        out.fault = WalkFault.Reserved;
        return;
      }
      if (next < level - 1 && format.skippedLevelBitsMustBeZero) {
        const low = geometry.levelShift[next]! + geometry.indexBits[next]!;
        if (Math.floor(input / POW2[low]!) % POW2[shift - low]! !== 0) {
          out.fault = WalkFault.Translation;
          return;
        }
      }
      table = d.address;
      level = next;
      out.level = level;
    }
    out.fault = WalkFault.Reserved;
  }

  /** `walk` for a format given as a `RadixLayout`: the same result, each entry decoded by masks in place. */
  private walkLayout(l: RadixLayout, geometry: TableGeometry, root: number, input: number, access: PermBits, reader: EntryReader, out: WalkResult): void {
    resetWalkResult(out);
    out.faultInput = input;
    let level = geometry.startLevel;
    out.level = level;
    if (!(input >= 0) || input >= POW2[geometry.inputBits]!) {
      out.fault = WalkFault.AddressSize;
      return;
    }
    const outputLimit = geometry.outputBits === undefined ? Number.MAX_SAFE_INTEGER : POW2[geometry.outputBits]!;
    if (root >= outputLimit) {
      out.fault = WalkFault.AddressSize;
      return;
    }
    const entry = this.entry;
    const inLo = input >>> 0;
    const inHi = Math.floor(input / 4_294_967_296) >>> 0;
    let table = root;
    let perms: PermBits = Perm.All;
    for (let steps = 0; steps <= geometry.startLevel; steps++) {
      const shift = geometry.levelShift[level];
      const bits = geometry.indexBits[level];
      if (shift === undefined || bits === undefined || bits <= 0) {
        out.fault = WalkFault.Reserved;
        return;
      }
      const address = table + indexBitsOf(inLo, inHi, input, shift, bits) * 8;
      out.entryAddress = address;
      out.fetches++;
      if (!reader.readEntry(address, entry)) {
        out.fault = WalkFault.External;
        return;
      }
      const lo = entry[0]!;
      const hi = entry[1]!;
      out.entryLo = lo;
      out.entryHi = hi;
      if ((lo & l.presentLo) === 0) {
        out.fault = WalkFault.Translation;
        return;
      }
      if ((lo & l.reservedLo) !== 0 || (hi & l.reservedHi) !== 0) {
        out.fault = WalkFault.Reserved;
        return;
      }
      const addrLo = (lo & l.addressLo) >>> 0;
      const addrHi = (hi & l.addressHi) >>> 0;
      const next = addrHi * 4_294_967_296 + addrLo;
      const levelBit = 1 << level;
      const leaf = (l.alwaysLeafLevels & levelBit) !== 0 || (lo & l.leafFlagLo) !== 0;
      if (leaf) {
        if ((l.alwaysLeafLevels & levelBit) === 0 && (l.leafLevels & levelBit) === 0) {
          out.fault = WalkFault.Reserved;
          return;
        }
        if (l.leafAlignment && !alignedTo(addrLo, addrHi, shift)) {
          out.fault = WalkFault.Reserved;
          return;
        }
      } else if ((lo & l.tableReservedLo) !== 0) {
        out.fault = WalkFault.Reserved;
        return;
      }
      if (next >= outputLimit) {
        out.fault = WalkFault.AddressSize;
        return;
      }
      perms &= ((lo & l.readLo) !== 0 ? Perm.Read : 0) | ((lo & l.writeLo) !== 0 ? Perm.Write : 0) | (leaf ? l.leafPerms : l.tablePerms);
      if (leaf) {
        out.mapped = true;
        out.pageShift = shift;
        out.perms = perms;
        out.output = next + (shift < 32 ? (inLo & ((1 << shift) - 1)) >>> 0 : input - Math.floor(input / POW2[shift]!) * POW2[shift]!);
        if ((access & perms) !== access) {
          out.fault = WalkFault.Permission;
          return;
        }
        out.ok = true;
        return;
      }
      if (level <= 1) {
        out.fault = WalkFault.Reserved;
        return;
      }
      table = next;
      level--;
      out.level = level;
    }
    out.fault = WalkFault.Reserved;
  }
}

/** Whether the address held as halves is a multiple of 2^shift ((1 << n) − 1 is the low-n-bit mask for n < 32, as int32). */
function alignedTo(lo: number, hi: number, shift: number): boolean {
  if (shift < 32) return (lo & ((1 << shift) - 1)) === 0;
  return lo === 0 && (shift >= 64 || (hi & ((1 << (shift - 32)) - 1)) === 0);
}
