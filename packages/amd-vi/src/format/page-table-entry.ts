import { EntryKind, WalkFault, type EntryDecode, type PermBits } from "@viommu/core";

/*
 * The v1 (host) page-table format's entry plumbing: 4 KiB tables, entry addresses below 2^52, and the decode
 * outcomes, written in place for the walker (no allocation). The v2 (guest) format is core's x86-64 paging.
 */

/** Both formats' tables: 512 eight-byte entries. */
export const PAGE_TABLE_BYTES = 4096;

function noEntry(out: EntryDecode, kind: EntryKind, fault: WalkFault): void {
  out.kind = kind;
  out.fault = fault;
  out.address = 0;
  out.pageShift = 0;
  out.nextLevel = 0;
  out.perms = 0;
}

/** Not present: an IO_PAGE_FAULT. */
export function decodeNotPresent(out: EntryDecode): void {
  noEntry(out, EntryKind.Invalid, WalkFault.Translation);
}

/** A reserved bit set or an invalid level encoding (the event log's RZ flag covers both). */
export function decodeReserved(out: EntryDecode): void {
  noEntry(out, EntryKind.Fault, WalkFault.Reserved);
}

export function decodeLeaf(out: EntryDecode, address: number, pageShift: number, perms: PermBits): void {
  out.kind = EntryKind.Leaf;
  out.fault = WalkFault.None;
  out.address = address;
  out.pageShift = pageShift;
  out.nextLevel = 0;
  out.perms = perms;
}

export function decodeTable(out: EntryDecode, address: number, nextLevel: number, perms: PermBits): void {
  out.kind = EntryKind.Table;
  out.fault = WalkFault.None;
  out.address = address;
  out.pageShift = 0;
  out.nextLevel = nextLevel;
  out.perms = perms;
}

/** Throws RangeError for an address an encoder must not write (encoders take trusted input: this catches bugs). */
export function assertEntryAddress(address: number, alignShift: number, what: string): void {
  if (!Number.isSafeInteger(address) || address < 0 || address >= 2 ** 52 || address % 2 ** alignShift !== 0) {
    throw new RangeError(`${what} 0x${address.toString(16)} is not a 2^${alignShift}-aligned address below 2^52`);
  }
}

/** Writes an entry's halves: the address with `lowFlags` in the low word and `highFlags` in the high word. */
export function writeEntry(address: number, lowFlags: number, highFlags: number, out: Uint32Array): void {
  out[0] = ((address % 0x1_0000_0000) | lowFlags) >>> 0;
  out[1] = (Math.floor(address / 0x1_0000_0000) | highFlags) >>> 0;
}
