import { POW2 } from "../bits/bit-ops.js";
import { Perm, type PermBits } from "./access.js";
import { WalkFault } from "./page-table-format.js";
import type { WalkResult } from "./walk-result.js";

/** An IOTLB permission bit of the model's own: writable, but the leaf's dirty bit is not set yet. */
export const CLEAN_WRITE = 0x80;

/** What a translation is looked up for: the input address and the access (a `DmaRequest` is one). */
export interface IotlbAccess {
  readonly iova: number;
  readonly access: PermBits;
}

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
    /** A small integer naming the tag in the slots (recycled when the tag is dropped). */
    readonly id: number,
    /** A 32-bit mix of the key, folded into every bucket hash of this tag. */
    readonly hash: number,
  ) {}
}

/** Mixes two 32-bit halves with a seed (murmur3's finaliser over a multiplicative mix): a tag's hash. */
function mix(seed: number, lo: number, hi: number): number {
  let h = Math.imul(lo ^ seed, 0x9e3779b1) ^ Math.imul(hi + seed, 0x85ebca6b);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return h ^ (h >>> 12);
}

/** 2^-i for i in 0..63: a page number is the address times this (exact: a power of two), not a division. */
const INV_POW2: Float64Array = Float64Array.from({ length: 64 }, (_, i) => 2 ** -i);
const INV_2_32 = 2 ** -32;
/**
 * Doubles per slot in `slotData`: page number, output less input (so a hit adds it to the address: exact, every
 * value an integer below 2^53), payload, key (tag id × 64 + page shift).
 */
const STRIDE = 4;
/** Tag ids stay below this, so a slot key (id × 64 + shift) is a 31-bit integer. */
const MAX_TAGS = 2 ** 25;

/**
 * The home bucket of a page number under a seed (the tag's hash and the page shift): Fibonacci hashing, the top
 * bits of one multiply, over the page number's two 32-bit halves.
 */
function bucketOf(seed: number, page: number, hashShift: number): number {
  return Math.imul(((page >>> 0) ^ seed) + Math.imul((page * INV_2_32) | 0, 0x85ebca6b), 0x9e3779b1) >>> hashShift;
}

/**
 * A translation cache tagged by VMID and address-space id (ASID, PASID, domain id: whatever the vendor tags
 * with), holding pages of every power-of-two size. Entries live in typed arrays indexed by slot (what a lookup
 * compares and returns side by side in one array), found through one open-addressed hash table (Fibonacci
 * hashing, linear probing, backward-shift deletion: no tombstones, so no rehash however long entries churn)
 * keyed by tag, page size and page number; each tag also threads its entries on a list. A hit allocates
 * nothing; invalidation by tag, by range and globally costs in proportion to the entries removed (or the pages
 * in the range, whichever is fewer), never the cache size. When full, a clock hand evicts.
 */
export class Iotlb {
  private readonly tags = new Map<number, Tag>();
  private readonly tagsOfVmid = new Map<number, Set<Tag>>();
  /** Live tags by id, and the ids free for reuse. */
  private readonly tagById: (Tag | undefined)[] = [];
  private readonly freeTagIds: number[] = [];
  /** The last tag looked up: translations come in runs from one device. */
  private lastKey = -1;
  private lastTag: Tag | undefined;
  /** Slot + 1 per bucket (0: empty). */
  private readonly buckets: Int32Array;
  private readonly mask: number;
  /** 32 − log2(buckets): a bucket is the top bits of the multiplicative hash. */
  private readonly hashShift: number;
  /** Per slot, STRIDE doubles: page number, output − input, payload, key. */
  private readonly slotData: Float64Array;
  private readonly slotPerms: Uint8Array;
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
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_TAGS / 2) throw new RangeError(`IOTLB capacity must be between 1 and ${MAX_TAGS / 2} (${capacity})`);
    let buckets = 16;
    let bits = 4;
    while (buckets < capacity * 2) {
      buckets *= 2;
      bits++;
    }
    this.buckets = new Int32Array(buckets);
    this.mask = buckets - 1;
    this.hashShift = 32 - bits;
    this.slotData = new Float64Array(capacity * STRIDE);
    this.slotPerms = new Uint8Array(capacity);
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

  /** The slot caching `page` of 2^shift bytes in `tag`, or -1. */
  private find(tag: Tag, page: number, shift: number): number {
    const buckets = this.buckets;
    const data = this.slotData;
    const mask = this.mask;
    const key = tag.id * 64 + shift;
    // Linear probing from the home bucket; slots are STRIDE = 4 doubles.
    for (let b = bucketOf(tag.hash ^ shift, page, this.hashShift); ; b = (b + 1) & mask) {
      const v = buckets[b]!;
      if (v === 0) return -1;
      const at = (v - 1) << 2;
      if (data[at] === page && data[at + 3] === key) return v - 1;
    }
  }

  /** Looks `address` up under (vmid, asid); a hit fills `out`. */
  lookup(vmid: number, asid: number, address: number, out: IotlbHit): boolean {
    const slot = this.probe(vmid, asid, address);
    if (slot < 0) return false;
    out.inputBase = this.inputBaseOf(slot);
    out.pageBase = this.pageBaseOf(slot);
    out.pageShift = this.pageShiftOf(slot);
    out.perms = this.permsOf(slot);
    out.payload = this.payloadOf(slot);
    return true;
  }

  /**
   * The slot caching the page that holds `address` under (vmid, asid), or -1; counts the hit or miss. The caller
   * reads what it needs of the slot with the `…Of` getters (valid until the next insert or invalidation).
   */
  probe(vmid: number, asid: number, address: number): number {
    const at = this.probed;
    at.iova = address;
    return this.probeAt(vmid, asid, at);
  }

  /** A holder for `probe`'s address: `probeAt` takes an object, so no address crosses a call as a number. */
  private readonly probed = { iova: 0.5, access: 0 };

  /**
   * `probe` of `request.iova`. Its arguments and result are objects and small integers: an address above 2^30
   * passed to (or returned from) a call the compiler does not inline is boxed, an allocation per lookup.
   */
  probeAt(vmid: number, asid: number, request: { readonly iova: number }): number {
    const address = request.iova;
    const key = vmid * 68_719_476_736 + (asid + 1);
    const tag = key === this.lastKey ? this.lastTag : this.tagOfKey(key);
    if (tag !== undefined) {
      const shifts = tag.shifts;
      const buckets = this.buckets;
      const data = this.slotData;
      for (let i = 0; i < shifts.length; i++) {
        const shift = shifts[i]!;
        const page = Math.floor(address * INV_POW2[shift]!);
        const want = tag.id * 64 + shift;
        // `find` and `bucketOf`, written out: this is the hit path, and a call would box the page number.
        for (let b: number = Math.imul(((page >>> 0) ^ tag.hash ^ shift) + Math.imul((page * INV_2_32) | 0, 0x85ebca6b), 0x9e3779b1) >>> this.hashShift; ; b = (b + 1) & this.mask) {
          const v = buckets[b]!;
          if (v === 0) break;
          const at = (v - 1) << 2;
          if (data[at] === page && data[at + 3] === want) {
            this.hits++;
            return v - 1;
          }
        }
      }
    }
    this.misses++;
    return -1;
  }

  /** The tag of `key` (undefined: nothing cached under it), remembered for the next probe. */
  private tagOfKey(key: number): Tag | undefined {
    const tag = this.tags.get(key);
    this.lastKey = key;
    this.lastTag = tag;
    return tag;
  }

  /** Output address of the cached page's base. */
  pageBaseOf(slot: number): number {
    return this.inputBaseOf(slot) + this.slotData[slot * STRIDE + 1]!;
  }

  /** Input address of the cached page's base. */
  inputBaseOf(slot: number): number {
    return this.slotData[slot * STRIDE]! * POW2[this.slotData[slot * STRIDE + 3]! & 63]!;
  }

  pageShiftOf(slot: number): number {
    return this.slotData[slot * STRIDE + 3]! & 63;
  }

  permsOf(slot: number): PermBits {
    return this.slotPerms[slot]!;
  }

  payloadOf(slot: number): number {
    return this.slotData[slot * STRIDE + 2]!;
  }

  /**
   * The IOTLB in front of a walk (a unit's hit path): a hit fills `out` as a walk would (permission fault
   * included) and returns true; a miss returns false and leaves `out` alone, as does a write through an entry
   * cached while its leaf was clean (the unit walks again, so the hardware marks the leaf dirty). Objects and
   * small integers in, a boolean out: nothing is allocated whether or not the compiler inlines it.
   */
  hitInto(vmid: number, asid: number, request: IotlbAccess, out: WalkResult): boolean {
    const slot = this.probeAt(vmid, asid, request);
    if (slot < 0) return false;
    const perms = this.slotPerms[slot]!;
    const access = request.access;
    if ((access & Perm.Write) !== 0 && (perms & CLEAN_WRITE) !== 0) return false;
    const ok = (access & perms) === access;
    const iova = request.iova;
    const at = slot << 2;
    out.ok = ok;
    out.mapped = true;
    out.output = iova + this.slotData[at + 1]!;
    out.pageShift = this.slotData[at + 3]! & 63;
    out.perms = perms & ~CLEAN_WRITE;
    out.fault = ok ? WalkFault.None : WalkFault.Permission;
    out.stage = 1;
    out.level = 0;
    out.faultInput = iova;
    out.tableFetch = false;
    out.fetches = 0;
    return true;
  }

  /** The tag of (vmid, asid), created when absent; remembered as the last tag looked up. */
  private tagFor(vmid: number, asid: number): Tag {
    const key = Iotlb.key(vmid, asid);
    if (key === this.lastKey && this.lastTag !== undefined) return this.lastTag;
    let tag = this.tags.get(key);
    if (tag === undefined) {
      const id = this.freeTagIds.length > 0 ? this.freeTagIds.pop()! : this.tagById.length;
      tag = new Tag(key, vmid, id, mix(0x5bd1e995, key >>> 0, (key / 4_294_967_296) | 0));
      this.tagById[id] = tag;
      this.tags.set(key, tag);
      let set = this.tagsOfVmid.get(vmid);
      if (set === undefined) {
        set = new Set();
        this.tagsOfVmid.set(vmid, set);
      }
      set.add(tag);
    }
    this.lastKey = key;
    this.lastTag = tag;
    return tag;
  }

  private dropTag(tag: Tag): void {
    this.tags.delete(tag.key);
    this.tagById[tag.id] = undefined;
    this.freeTagIds.push(tag.id);
    const set = this.tagsOfVmid.get(tag.vmid);
    set?.delete(tag);
    if (set !== undefined && set.size === 0) this.tagsOfVmid.delete(tag.vmid);
    this.lastKey = -1;
    this.lastTag = undefined;
  }

  /** Caches the page of 2^pageShift bytes containing `address`, translated to `pageBase`. */
  insert(vmid: number, asid: number, address: number, pageShift: number, pageBase: number, perms: PermBits, payload = 0): void {
    const page = Math.floor(address * INV_POW2[pageShift]!);
    let tag = this.tagFor(vmid, asid);
    let slot = tag.perShift[pageShift]! > 0 ? this.find(tag, page, pageShift) : -1;
    if (slot < 0) {
      slot = this.takeSlot();
      // Eviction may have emptied and dropped this very tag: fetch it again after.
      tag = this.tagFor(vmid, asid);
      this.place(tag, slot, page, pageShift);
    }
    this.slotData[slot * STRIDE + 1] = pageBase - page * POW2[pageShift]!;
    this.slotData[slot * STRIDE + 2] = payload;
    this.slotPerms[slot] = perms;
  }

  /** Hashes a fresh slot in and links it on its tag's list. */
  private place(tag: Tag, slot: number, page: number, shift: number): void {
    const home = bucketOf(tag.hash ^ shift, page, this.hashShift);
    let b = home;
    while (this.buckets[b] !== 0) b = (b + 1) & this.mask;
    this.buckets[b] = slot + 1;
    this.slotHome[slot] = home;
    this.slotData[slot * STRIDE] = page;
    this.slotData[slot * STRIDE + 3] = tag.id * 64 + shift;
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
    const key = this.slotData[slot * STRIDE + 3]!;
    const tag = this.tagById[key >> 6]!;
    const prev = this.slotPrev[slot]!;
    const next = this.slotNext[slot]!;
    if (prev >= 0) this.slotNext[prev] = next;
    else tag.head = next;
    if (next >= 0) this.slotPrev[next] = prev;
    tag.count--;
    const shift = key & 63;
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
          const page = this.slotData[slot * STRIDE]!;
          if ((this.slotData[slot * STRIDE + 3]! & 63) === shift && page >= first && page <= end) {
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
