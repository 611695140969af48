import { POW2 } from "../bits/bit-ops.js";
import { Perm, type PermBits } from "./access.js";
import { EntryKind, WalkFault, newEntryDecode, type PageTableFormat, type RadixLayout, type TableGeometry } from "./page-table-format.js";
import type { WalkResult } from "./walk-result.js";

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
    // As `walkLayout`: the walk's progress in locals, `out` written once when it stops.
    const levelShift = geometry.levelShift;
    const indexBits = geometry.indexBits;
    const entry = this.entry;
    const d = this.decoded;
    let level = geometry.startLevel;
    // Where the walk stopped and why: Reserved unless a step says otherwise.
    let fault: WalkFault = WalkFault.Reserved;
    let entryAddress = 0;
    let entryLo = 0;
    let entryHi = 0;
    let fetches = 0;
    let mapped = false;
    let pageShift = 0;
    let leafPerms: PermBits = 0;
    let output = 0;
    const outputLimit = geometry.outputBits === undefined ? Number.MAX_SAFE_INTEGER : POW2[geometry.outputBits]!;
    if (!(input >= 0) || input >= POW2[geometry.inputBits]! || root >= outputLimit) fault = WalkFault.AddressSize;
    else {
      // The input as two 32-bit halves: level indices come out of shifts and masks, not floating-point division.
      const inLo = input >>> 0;
      const inHi = Math.floor(input / 4_294_967_296) >>> 0;
      let table = root;
      let perms: PermBits = Perm.All;
      for (let steps = 0; steps <= geometry.startLevel; steps++) {
        const shift = levelShift[level];
        const bits = indexBits[level];
        if (shift === undefined || bits === undefined || bits <= 0) break;
        entryAddress = table + indexBitsOf(inLo, inHi, input, shift, bits) * 8;
        fetches++;
        if (!reader.readEntry(entryAddress, entry)) {
          fault = WalkFault.External;
          break;
        }
        const lo = entry[0]!;
        const hi = entry[1]!;
        entryLo = lo;
        entryHi = hi;
        format.decodeEntry(lo, hi, level, d);
        if (d.kind === EntryKind.Invalid) {
          fault = WalkFault.Translation;
          break;
        }
        if (d.kind === EntryKind.Fault) {
          fault = d.fault === WalkFault.None ? WalkFault.Reserved : d.fault;
          break;
        }
        if (d.address >= outputLimit) {
          fault = WalkFault.AddressSize;
          break;
        }
        perms &= d.perms;
        if (d.kind === EntryKind.Leaf) {
          const size = POW2[d.pageShift]!;
          mapped = true;
          pageShift = d.pageShift;
          leafPerms = perms;
          output = d.address + (input - Math.floor(input / size) * size);
          fault = (access & perms) !== access ? WalkFault.Permission : WalkFault.None;
          break;
        }
        const next = d.nextLevel;
        if (!(next >= 1 && next < level)) break;
        if (next < level - 1 && format.skippedLevelBitsMustBeZero) {
          const low = levelShift[next]! + indexBits[next]!;
          if (Math.floor(input / POW2[low]!) % POW2[shift - low]! !== 0) {
            fault = WalkFault.Translation;
            break;
          }
        }
        table = d.address;
        level = next;
      }
    }
    out.ok = fault === WalkFault.None;
    out.output = output;
    out.pageShift = pageShift;
    out.perms = leafPerms;
    out.fault = fault;
    out.level = level;
    out.stage = 1;
    out.faultInput = input;
    out.tableFetch = false;
    out.mapped = mapped;
    out.entryAddress = entryAddress;
    out.entryLo = entryLo;
    out.entryHi = entryHi;
    out.fetches = fetches;
    out.pageRequest = -1;
  }

  /**
   * `walk` for a format given as a `RadixLayout`: the same result, each entry decoded by masks in place. The
   * layout's masks and the walk's progress live in locals; `out` is written once, when the walk stops.
   */
  private walkLayout(l: RadixLayout, geometry: TableGeometry, root: number, input: number, access: PermBits, reader: EntryReader, out: WalkResult): void {
    const presentLo = l.presentLo;
    const reservedLo = l.reservedLo;
    const reservedHi = l.reservedHi;
    const tableReservedLo = l.tableReservedLo;
    const leafFlagLo = l.leafFlagLo;
    const alwaysLeafLevels = l.alwaysLeafLevels;
    const leafLevels = l.leafLevels;
    const addressLo = l.addressLo;
    const addressHi = l.addressHi;
    const readLo = l.readLo;
    const writeLo = l.writeLo;
    const levelShift = geometry.levelShift;
    const indexBits = geometry.indexBits;
    const entry = this.entry;
    let level = geometry.startLevel;
    // Where the walk stopped and why: Reserved unless a step says otherwise.
    let fault: WalkFault = WalkFault.Reserved;
    let entryAddress = 0;
    let entryLo = 0;
    let entryHi = 0;
    let fetches = 0;
    let mapped = false;
    let pageShift = 0;
    let leafPerms: PermBits = 0;
    let output = 0;
    const outputLimit = geometry.outputBits === undefined ? Number.MAX_SAFE_INTEGER : POW2[geometry.outputBits]!;
    if (!(input >= 0) || input >= POW2[geometry.inputBits]! || root >= outputLimit) fault = WalkFault.AddressSize;
    else {
      const inLo = input >>> 0;
      const inHi = Math.floor(input / 4_294_967_296) >>> 0;
      let table = root;
      let perms: PermBits = Perm.All;
      for (let steps = 0; steps <= geometry.startLevel; steps++) {
        const shift = levelShift[level];
        const bits = indexBits[level];
        if (shift === undefined || bits === undefined || bits <= 0) break;
        entryAddress = table + indexBitsOf(inLo, inHi, input, shift, bits) * 8;
        fetches++;
        if (!reader.readEntry(entryAddress, entry)) {
          fault = WalkFault.External;
          break;
        }
        const lo = entry[0]!;
        const hi = entry[1]!;
        entryLo = lo;
        entryHi = hi;
        if ((lo & presentLo) === 0) {
          fault = WalkFault.Translation;
          break;
        }
        if ((lo & reservedLo) !== 0 || (hi & reservedHi) !== 0) break;
        const addrLo = (lo & addressLo) >>> 0;
        const addrHi = (hi & addressHi) >>> 0;
        const next = addrHi * 4_294_967_296 + addrLo;
        const levelBit = 1 << level;
        const leaf = (alwaysLeafLevels & levelBit) !== 0 || (lo & leafFlagLo) !== 0;
        if (leaf) {
          if ((alwaysLeafLevels & levelBit) === 0 && (leafLevels & levelBit) === 0) break;
          if (l.leafAlignment && !alignedTo(addrLo, addrHi, shift)) break;
        } else if ((lo & tableReservedLo) !== 0) break;
        if (next >= outputLimit) {
          fault = WalkFault.AddressSize;
          break;
        }
        perms &= ((lo & readLo) !== 0 ? Perm.Read : 0) | ((lo & writeLo) !== 0 ? Perm.Write : 0) | (leaf ? l.leafPerms : l.tablePerms);
        if (leaf) {
          mapped = true;
          pageShift = shift;
          leafPerms = perms;
          output = next + (shift < 32 ? (inLo & ((1 << shift) - 1)) >>> 0 : input - Math.floor(input / POW2[shift]!) * POW2[shift]!);
          fault = (access & perms) !== access ? WalkFault.Permission : WalkFault.None;
          break;
        }
        if (level <= 1) break;
        table = next;
        level--;
      }
    }
    out.ok = fault === WalkFault.None;
    out.output = output;
    out.pageShift = pageShift;
    out.perms = leafPerms;
    out.fault = fault;
    out.level = level;
    out.stage = 1;
    out.faultInput = input;
    out.tableFetch = false;
    out.mapped = mapped;
    out.entryAddress = entryAddress;
    out.entryLo = entryLo;
    out.entryHi = entryHi;
    out.fetches = fetches;
    out.pageRequest = -1;
  }
}

/** Whether the address held as halves is a multiple of 2^shift ((1 << n) − 1 is the low-n-bit mask for n < 32, as int32). */
function alignedTo(lo: number, hi: number, shift: number): boolean {
  if (shift < 32) return (lo & ((1 << shift) - 1)) === 0;
  return lo === 0 && (shift >= 64 || (hi & ((1 << (shift - 32)) - 1)) === 0);
}
