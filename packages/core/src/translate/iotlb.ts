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
  /** Input address of the page base (the looked-up address less its offset in the page). */
  inputBase: number;
}

export function newIotlbHit(): IotlbHit {
  return { pageBase: 0, pageShift: 0, perms: 0, payload: 0, inputBase: 0 };
}

/** One (VMID, ASID) tag: its entries as a list through the slots, and the page sizes it holds. */
class Tag {
  /** First slot of the tag's entry list (-1: none). */
  head = -1;
  count = 0;
  /** Page shifts present, so a lookup probes only the sizes this tag holds. */
  readonly shifts: number[] = [];
  /** Entries per page shift. */
  readonly perShift = new Int32Array(64);

  constructor(
    readonly key: number,
    readonly vmid: number,
    /** A 32-bit mix of the key, folded into every bucket hash of this tag. */
    readonly hash: number,
  ) {}
}

/** Mixes two 32-bit halves and a shift into a bucket hash (murmur3's finaliser over a multiplicative mix). */
function mix(seed: number, lo: number, hi: number): number {
  let h = Math.imul(lo ^ seed, 0x9e3779b1) ^ Math.imul(hi + seed, 0x85ebca6b);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return h ^ (h >>> 12);
}

/**
 * A translation cache tagged by VMID and address-space id (ASID, PASID, domain id: whatever the vendor tags
 * with), holding pages of every power-of-two size. Entries live in typed arrays indexed by slot, found through
 * one open-addressed hash table (linear probing, backward-shift deletion: no tombstones, so no rehash however
 * long entries churn) keyed by tag, page size and page number; each tag also threads its entries on a list.
 * A hit allocates nothing; invalidation by tag, by range and globally costs in proportion to the entries
 * removed (or the pages in the range, whichever is fewer), never the cache size. When full, a clock hand evicts.
 */
export class Iotlb {
  private readonly tags = new Map<number, Tag>();
  private readonly tagsOfVmid = new Map<number, Set<Tag>>();
  /** The last tag looked up: translations come in runs from one device. */
  private lastKey = -1;
  private lastTag: Tag | undefined;
  private readonly buckets: Int32Array;
  private readonly mask: number;
  private readonly slotTag: (Tag | undefined)[];
  private readonly slotPage: Float64Array;
  private readonly slotShift: Uint8Array;
  private readonly slotBase: Float64Array;
  private readonly slotPerms: Uint8Array;
  private readonly slotPayload: Float64Array;
  /** The bucket a slot hashes to (its probe sequence starts there). */
  private readonly slotHome: Int32Array;
  private readonly slotNext: Int32Array;
  private readonly slotPrev: Int32Array;
  private readonly freeSlots: Int32Array;
  private freeTop = 0;
  private neverUsed = 0;
  private hand = 0;
  private live = 0;
  hits = 0;
  misses = 0;

  constructor(readonly capacity = 4096) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`IOTLB capacity must be positive (${capacity})`);
    let buckets = 16;
    while (buckets < capacity * 2) buckets *= 2;
    this.buckets = new Int32Array(buckets);
    this.mask = buckets - 1;
    this.slotTag = new Array<Tag | undefined>(capacity).fill(undefined);
    this.slotPage = new Float64Array(capacity);
    this.slotShift = new Uint8Array(capacity);
    this.slotBase = new Float64Array(capacity);
    this.slotPerms = new Uint8Array(capacity);
    this.slotPayload = new Float64Array(capacity);
    this.slotHome = new Int32Array(capacity);
    this.slotNext = new Int32Array(capacity);
    this.slotPrev = new Int32Array(capacity);
    this.freeSlots = new Int32Array(capacity);
  }

  get size(): number {
    return this.live;
  }

  /** VMIDs below 2^16 and ASIDs below 2^36 (or ANY_ASID's siblings) combine into one exact key. */
  private static key(vmid: number, asid: number): number {
    return vmid * 68_719_476_736 + (asid + 1);
  }

  private home(tag: Tag, page: number, shift: number): number {
    return mix(tag.hash ^ shift, page >>> 0, (page / 4_294_967_296) | 0) & this.mask;
  }

  /** The slot caching `page` of 2^shift bytes in `tag`, or -1. */
  private find(tag: Tag, page: number, shift: number): number {
    const buckets = this.buckets;
    const mask = this.mask;
    for (let b = this.home(tag, page, shift); ; b = (b + 1) & mask) {
      const v = buckets[b]!;
      if (v === 0) return -1;
      const slot = v - 1;
      if (this.slotPage[slot] === page && this.slotTag[slot] === tag && this.slotShift[slot] === shift) return slot;
    }
  }

  lookup(vmid: number, asid: number, address: number, out: IotlbHit): boolean {
    const key = vmid * 68_719_476_736 + (asid + 1);
    let tag: Tag | undefined;
    if (key === this.lastKey) tag = this.lastTag;
    else {
      tag = this.tags.get(key);
      this.lastKey = key;
      this.lastTag = tag;
    }
    if (tag !== undefined) {
      const shifts = tag.shifts;
      for (let i = 0; i < shifts.length; i++) {
        const shift = shifts[i]!;
        const size = POW2[shift]!;
        const page = Math.floor(address / size);
        const slot = this.find(tag, page, shift);
        if (slot >= 0) {
          out.inputBase = page * size;
          out.pageBase = this.slotBase[slot]!;
          out.pageShift = shift;
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

  private tagFor(vmid: number, asid: number): Tag {
    const key = Iotlb.key(vmid, asid);
    let tag = this.tags.get(key);
    if (tag === undefined) {
      tag = new Tag(key, vmid, mix(0x5bd1e995, key >>> 0, (key / 4_294_967_296) | 0));
      this.tags.set(key, tag);
      let set = this.tagsOfVmid.get(vmid);
      if (set === undefined) {
        set = new Set();
        this.tagsOfVmid.set(vmid, set);
      }
      set.add(tag);
      this.lastKey = -1;
      this.lastTag = undefined;
    }
    return tag;
  }

  private dropTag(tag: Tag): void {
    this.tags.delete(tag.key);
    const set = this.tagsOfVmid.get(tag.vmid);
    set?.delete(tag);
    if (set !== undefined && set.size === 0) this.tagsOfVmid.delete(tag.vmid);
    this.lastKey = -1;
    this.lastTag = undefined;
  }

  /** Caches the page of 2^pageShift bytes containing `address`, translated to `pageBase`. */
  insert(vmid: number, asid: number, address: number, pageShift: number, pageBase: number, perms: PermBits, payload = 0): void {
    const page = Math.floor(address / POW2[pageShift]!);
    let tag = this.tagFor(vmid, asid);
    let slot = tag.perShift[pageShift]! > 0 ? this.find(tag, page, pageShift) : -1;
    if (slot < 0) {
      slot = this.takeSlot();
      // Eviction may have emptied and dropped this very tag: fetch it again after.
      tag = this.tagFor(vmid, asid);
      this.place(tag, slot, page, pageShift);
    }
    this.slotBase[slot] = pageBase;
    this.slotPerms[slot] = perms;
    this.slotPayload[slot] = payload;
  }

  /** Hashes a fresh slot in and links it on its tag's list. */
  private place(tag: Tag, slot: number, page: number, shift: number): void {
    const home = this.home(tag, page, shift);
    let b = home;
    while (this.buckets[b] !== 0) b = (b + 1) & this.mask;
    this.buckets[b] = slot + 1;
    this.slotHome[slot] = home;
    this.slotTag[slot] = tag;
    this.slotPage[slot] = page;
    this.slotShift[slot] = shift;
    this.slotPrev[slot] = -1;
    this.slotNext[slot] = tag.head;
    if (tag.head >= 0) this.slotPrev[tag.head] = slot;
    tag.head = slot;
    tag.count++;
    if (tag.perShift[shift]!++ === 0) tag.shifts.push(shift);
    this.live++;
  }

  private takeSlot(): number {
    if (this.freeTop > 0) return this.freeSlots[--this.freeTop]!;
    if (this.neverUsed < this.capacity) return this.neverUsed++;
    const victim = this.hand;
    this.hand = (this.hand + 1) % this.capacity;
    this.removeSlot(victim);
    return this.freeSlots[--this.freeTop]!;
  }

  /** Unhashes a slot (backward-shift deletion), unlinks it from its tag and frees it. */
  private removeSlot(slot: number): void {
    const buckets = this.buckets;
    const mask = this.mask;
    let hole = this.slotHome[slot]!;
    while (buckets[hole] !== slot + 1) hole = (hole + 1) & mask;
    // Move back every later entry of the cluster whose home does not lie cyclically in (hole, j].
    for (let j = (hole + 1) & mask; ; j = (j + 1) & mask) {
      const v = buckets[j]!;
      if (v === 0) break;
      const home = this.slotHome[v - 1]!;
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      buckets[hole] = v;
      hole = j;
    }
    buckets[hole] = 0;
    const tag = this.slotTag[slot]!;
    const prev = this.slotPrev[slot]!;
    const next = this.slotNext[slot]!;
    if (prev >= 0) this.slotNext[prev] = next;
    else tag.head = next;
    if (next >= 0) this.slotPrev[next] = prev;
    this.slotTag[slot] = undefined;
    tag.count--;
    const shift = this.slotShift[slot]!;
    if (--tag.perShift[shift]! === 0) tag.shifts.splice(tag.shifts.indexOf(shift), 1);
    if (tag.count === 0) this.dropTag(tag);
    this.freeSlots[this.freeTop++] = slot;
    this.live--;
  }

  /** Removes every entry of a tag; returns how many. */
  private removeTag(tag: Tag): number {
    let removed = 0;
    while (tag.head >= 0) {
      this.removeSlot(tag.head);
      removed++;
    }
    return removed;
  }

  /** Drops every entry. Returns how many were removed. */
  invalidateAll(): number {
    let removed = 0;
    for (const tag of [...this.tags.values()]) removed += this.removeTag(tag);
    return removed;
  }

  /** Drops every entry of a VMID (all its address spaces). */
  invalidateVmid(vmid: number): number {
    const set = this.tagsOfVmid.get(vmid);
    if (set === undefined) return 0;
    let removed = 0;
    for (const tag of [...set]) removed += this.removeTag(tag);
    return removed;
  }

  /** Drops every entry of one (VMID, ASID) tag. */
  invalidateAsid(vmid: number, asid: number): number {
    const tag = this.tags.get(Iotlb.key(vmid, asid));
    return tag === undefined ? 0 : this.removeTag(tag);
  }

  /**
   * Drops the entries of a tag (or of every ASID of the VMID with `ANY_ASID`) whose pages overlap
   * [address, address + length).
   */
  invalidateRange(vmid: number, asid: number, address: number, length: number): number {
    if (length <= 0) return 0;
    if (asid !== ANY_ASID) {
      const tag = this.tags.get(Iotlb.key(vmid, asid));
      return tag === undefined ? 0 : this.removeRange(tag, address, length);
    }
    const set = this.tagsOfVmid.get(vmid);
    if (set === undefined) return 0;
    let removed = 0;
    for (const tag of [...set]) removed += this.removeRange(tag, address, length);
    return removed;
  }

  /** Probes each page of the range when that is fewer than the tag's entries of the size, else walks the tag's list. */
  private removeRange(tag: Tag, address: number, length: number): number {
    let removed = 0;
    const last = address + length - 1;
    for (let i = tag.shifts.length - 1; i >= 0 && tag.count > 0; i--) {
      const shift = tag.shifts[i];
      if (shift === undefined) continue;
      const divisor = POW2[shift]!;
      const first = Math.floor(address / divisor);
      const end = Math.floor(last / divisor);
      if (end - first + 1 <= tag.perShift[shift]!) {
        for (let page = first; page <= end; page++) {
          const slot = this.find(tag, page, shift);
          if (slot >= 0) {
            this.removeSlot(slot);
            removed++;
            if (tag.count === 0) return removed;
          }
        }
      } else {
        for (let slot = tag.head; slot >= 0; ) {
          const next = this.slotNext[slot]!;
          const page = this.slotPage[slot]!;
          if (this.slotShift[slot] === shift && page >= first && page <= end) {
            this.removeSlot(slot);
            removed++;
          }
          slot = next;
        }
      }
    }
    return removed;
  }
}
