import { POW2 } from "../bits/bit-ops.js";
import type { PermBits } from "./access.js";

/** Matches every address-space id of a VMID in range invalidations (ASIDs are -1 … 2^36 − 2). */
export const ANY_ASID = -1;

/** What a hit returns, filled in place. */
export interface IotlbHit {
  /** Output address of the page base. */
  pageBase: number;
  pageShift: number;
  perms: PermBits;
  /** Opaque per-entry value the vendor stored (a domain id to report, for example). */
  payload: number;
}

export function newIotlbHit(): IotlbHit {
  return { pageBase: 0, pageShift: 0, perms: 0, payload: 0 };
}

/** The entries of one (VMID, ASID) tag, grouped by page size so a lookup probes one map per size present. */
class TagEntries {
  readonly shifts: number[] = [];
  readonly divisors: number[] = [];
  readonly maps: Map<number, number>[] = [];
  count = 0;

  mapFor(shift: number, create: boolean): Map<number, number> | undefined {
    for (let i = 0; i < this.shifts.length; i++) if (this.shifts[i] === shift) return this.maps[i];
    if (!create) return undefined;
    const m = new Map<number, number>();
    this.shifts.push(shift);
    this.divisors.push(2 ** shift);
    this.maps.push(m);
    return m;
  }

  dropEmpty(shift: number): void {
    for (let i = 0; i < this.shifts.length; i++) {
      if (this.shifts[i] === shift && this.maps[i]!.size === 0) {
        this.shifts.splice(i, 1);
        this.divisors.splice(i, 1);
        this.maps.splice(i, 1);
        return;
      }
    }
  }
}

/**
 * A translation cache tagged by VMID and address-space id (ASID, PASID, domain id: whatever the vendor tags
 * with), holding pages of every power-of-two size. Entries live in typed arrays indexed by slot; per-tag maps
 * key page numbers to slots. A hit allocates nothing; invalidation by tag, by range and globally costs in
 * proportion to the entries removed (or the pages in the range, whichever is fewer), never the cache size.
 * When full, a clock hand evicts.
 */
export class Iotlb {
  /** Entries by tag key (VMID and ASID combined into one number), and the tag keys of each VMID. */
  private readonly tags = new Map<number, TagEntries>();
  private readonly tagsOfVmid = new Map<number, Set<number>>();
  /** The last tag looked up: translations come in runs from one device. */
  private lastKey = -1;
  private lastEntries: TagEntries | undefined;
  private readonly slotVmid: Float64Array;
  private readonly slotAsid: Float64Array;
  private readonly slotPage: Float64Array;
  private readonly slotShift: Uint8Array;
  private readonly slotBase: Float64Array;
  private readonly slotPerms: Uint8Array;
  private readonly slotPayload: Float64Array;
  private readonly freeSlots: Int32Array;
  private freeTop = 0;
  private neverUsed = 0;
  private hand = 0;
  private live = 0;
  hits = 0;
  misses = 0;

  constructor(readonly capacity = 4096) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`IOTLB capacity must be positive (${capacity})`);
    this.slotVmid = new Float64Array(capacity);
    this.slotAsid = new Float64Array(capacity);
    this.slotPage = new Float64Array(capacity);
    this.slotShift = new Uint8Array(capacity);
    this.slotBase = new Float64Array(capacity);
    this.slotPerms = new Uint8Array(capacity);
    this.slotPayload = new Float64Array(capacity);
    this.freeSlots = new Int32Array(capacity);
  }

  get size(): number {
    return this.live;
  }

  /** VMIDs below 2^16 and ASIDs below 2^36 (or ANY_ASID's siblings) combine into one exact key. */
  private static key(vmid: number, asid: number): number {
    return vmid * 68_719_476_736 + (asid + 1);
  }

  lookup(vmid: number, asid: number, address: number, out: IotlbHit): boolean {
    const key = vmid * 68_719_476_736 + (asid + 1);
    let entries: TagEntries | undefined;
    if (key === this.lastKey) entries = this.lastEntries;
    else {
      entries = this.tags.get(key);
      this.lastKey = key;
      this.lastEntries = entries;
    }
    if (entries !== undefined) {
      for (let i = 0; i < entries.shifts.length; i++) {
        const slot = entries.maps[i]!.get(Math.floor(address / entries.divisors[i]!));
        if (slot !== undefined) {
          out.pageBase = this.slotBase[slot]!;
          out.pageShift = this.slotShift[slot]!;
          out.perms = this.slotPerms[slot]!;
          out.payload = this.slotPayload[slot]!;
          this.hits++;
          return true;
        }
      }
    }
    this.misses++;
    return false;
  }

  private entriesFor(vmid: number, asid: number): TagEntries {
    const key = Iotlb.key(vmid, asid);
    let entries = this.tags.get(key);
    if (entries === undefined) {
      entries = new TagEntries();
      this.tags.set(key, entries);
      let keys = this.tagsOfVmid.get(vmid);
      if (keys === undefined) {
        keys = new Set();
        this.tagsOfVmid.set(vmid, keys);
      }
      keys.add(key);
      this.lastKey = -1;
    }
    return entries;
  }

  private dropTag(vmid: number, key: number): void {
    this.tags.delete(key);
    const keys = this.tagsOfVmid.get(vmid);
    keys?.delete(key);
    if (keys !== undefined && keys.size === 0) this.tagsOfVmid.delete(vmid);
    this.lastKey = -1;
    this.lastEntries = undefined;
  }

  /** Caches the page of 2^pageShift bytes containing `address`, translated to `pageBase`. */
  insert(vmid: number, asid: number, address: number, pageShift: number, pageBase: number, perms: PermBits, payload = 0): void {
    const page = Math.floor(address / POW2[pageShift]!);
    let slot = this.entriesFor(vmid, asid).mapFor(pageShift, false)?.get(page);
    if (slot === undefined) {
      slot = this.takeSlot();
      // Eviction may have emptied and dropped this very tag: fetch the containers after it.
      const entries = this.entriesFor(vmid, asid);
      entries.mapFor(pageShift, true)!.set(page, slot);
      entries.count++;
      this.live++;
      this.slotVmid[slot] = vmid;
      this.slotAsid[slot] = asid;
      this.slotPage[slot] = page;
      this.slotShift[slot] = pageShift;
    }
    this.slotBase[slot] = pageBase;
    this.slotPerms[slot] = perms;
    this.slotPayload[slot] = payload;
  }

  private takeSlot(): number {
    if (this.freeTop > 0) return this.freeSlots[--this.freeTop]!;
    if (this.neverUsed < this.capacity) return this.neverUsed++;
    const victim = this.hand;
    this.hand = (this.hand + 1) % this.capacity;
    this.removeSlot(victim);
    return this.freeSlots[--this.freeTop]!;
  }

  private releaseSlot(slot: number): void {
    this.freeSlots[this.freeTop++] = slot;
    this.live--;
  }

  /** Removes one slot from its tag's map, dropping containers that become empty. */
  private removeSlot(slot: number): void {
    const vmid = this.slotVmid[slot]!;
    const key = Iotlb.key(vmid, this.slotAsid[slot]!);
    const shift = this.slotShift[slot]!;
    const entries = this.tags.get(key)!;
    const map = entries.mapFor(shift, false)!;
    map.delete(this.slotPage[slot]!);
    entries.count--;
    if (map.size === 0) entries.dropEmpty(shift);
    if (entries.count === 0) this.dropTag(vmid, key);
    this.releaseSlot(slot);
  }

  private releaseTag(entries: TagEntries): number {
    for (const map of entries.maps) for (const slot of map.values()) this.releaseSlot(slot);
    return entries.count;
  }

  /** Drops every entry. Returns how many were removed. */
  invalidateAll(): number {
    let removed = 0;
    for (const entries of this.tags.values()) removed += this.releaseTag(entries);
    this.tags.clear();
    this.tagsOfVmid.clear();
    this.lastKey = -1;
    this.lastEntries = undefined;
    return removed;
  }

  /** Drops every entry of a VMID (all its address spaces). */
  invalidateVmid(vmid: number): number {
    const keys = this.tagsOfVmid.get(vmid);
    if (keys === undefined) return 0;
    let removed = 0;
    for (const key of [...keys]) {
      removed += this.releaseTag(this.tags.get(key)!);
      this.dropTag(vmid, key);
    }
    return removed;
  }

  /** Drops every entry of one (VMID, ASID) tag. */
  invalidateAsid(vmid: number, asid: number): number {
    const key = Iotlb.key(vmid, asid);
    const entries = this.tags.get(key);
    if (entries === undefined) return 0;
    const removed = this.releaseTag(entries);
    this.dropTag(vmid, key);
    return removed;
  }

  /**
   * Drops the entries of a tag (or of every ASID of the VMID with `ANY_ASID`) whose pages overlap
   * [address, address + length).
   */
  invalidateRange(vmid: number, asid: number, address: number, length: number): number {
    if (length <= 0) return 0;
    if (asid !== ANY_ASID) {
      const entries = this.tags.get(Iotlb.key(vmid, asid));
      return entries === undefined ? 0 : this.removeRange(entries, address, length);
    }
    const keys = this.tagsOfVmid.get(vmid);
    if (keys === undefined) return 0;
    let removed = 0;
    for (const key of [...keys]) {
      const entries = this.tags.get(key);
      if (entries !== undefined) removed += this.removeRange(entries, address, length);
    }
    return removed;
  }

  private removeRange(entries: TagEntries, address: number, length: number): number {
    let removed = 0;
    const last = address + length - 1;
    for (let i = entries.shifts.length - 1; i >= 0; i--) {
      const map = entries.maps[i]!;
      const divisor = entries.divisors[i]!;
      const first = Math.floor(address / divisor);
      const end = Math.floor(last / divisor);
      const victims: number[] = [];
      if (end - first + 1 <= map.size) {
        for (let page = first; page <= end; page++) {
          const slot = map.get(page);
          if (slot !== undefined) victims.push(slot);
        }
      } else {
        for (const [page, slot] of map) if (page >= first && page <= end) victims.push(slot);
      }
      for (const slot of victims) this.removeSlot(slot);
      removed += victims.length;
    }
    return removed;
  }
}
