import { PAGE_SHIFT, PAGE_SIZE, newFrame, pageNumber, type Frame } from "./page.js";
import type { Hpa } from "../address/addresses.js";

const RUN_CACHE = 64;
const FRAME_CACHE = 1024;

/** Who owns a host page: the host itself, or a VM by id. */
export type OwnerId = number;
export const HOST_OWNER: OwnerId = 0;

export interface HostMemoryOptions {
  /** Physical address space size in bytes (default 2^46). */
  readonly sizeBytes?: number;
  /** First page handed out (default 4 GiB), so that no HPA is mistaken for a small GPA. */
  readonly baseAddress?: number;
}

/** A DMA access blocked because it would have touched a page its device's VM does not own. */
export interface IsolationViolation {
  readonly owner: OwnerId;
  readonly hpa: number;
  readonly pageOwner: OwnerId | undefined;
  readonly write: boolean;
}

/**
 * Page-sized views of the buffer a device writes from, kept while the same buffer comes back (a driver's DMA
 * buffer is reused transfer after transfer), so a whole-page copy needs no new view each time.
 */
class PageViews {
  private buffer: Uint8Array | undefined;
  private views: (Uint8Array | undefined)[] = [];

  page(from: Uint8Array, at: number): Uint8Array {
    if (from !== this.buffer) {
      this.buffer = from;
      this.views = [];
    }
    if (at % PAGE_SIZE !== 0) return from.subarray(at, at + PAGE_SIZE);
    const i = at / PAGE_SIZE;
    let view = this.views[i];
    if (view === undefined) {
      view = from.subarray(at, at + PAGE_SIZE);
      this.views[i] = view;
    }
    return view;
  }
}

/** A run of physically contiguous pages with one owner. */
interface OwnedRun {
  start: number;
  pages: number;
  owner: OwnerId;
}

/**
 * Sparse host physical memory. Ownership is kept as sorted runs of pages (a VM's RAM is a handful of runs
 * however large it is), so isolation is checkable at the point of access: `dmaRead`/`dmaWrite` refuse, and
 * record, any access by a device of one VM to a page owned by anyone else. Page contents are materialised
 * on first write; unwritten pages read as zero.
 */
export class HostMemory {
  readonly sizeBytes: number;
  private readonly runs: OwnedRun[] = [];
  private readonly freeRuns: { start: number; pages: number }[] = [];
  private readonly frames = new Map<number, Frame>();
  private nextPage: number;
  private readonly endPage: number;
  /**
   * Runs recently hit, direct-mapped by page number: a nested walk touches a handful of host table pages (each
   * its own run) and guest pages in turn, and each is found again without a search.
   */
  private readonly runCache: (OwnedRun | undefined)[] = new Array<OwnedRun | undefined>(RUN_CACHE).fill(undefined);
  /** Frames recently read, direct-mapped by page number (page -1: empty): table pages stay hot across walks. */
  private readonly framePages = new Float64Array(FRAME_CACHE).fill(-1);
  private readonly frameCache: (Frame | undefined)[] = new Array<Frame | undefined>(FRAME_CACHE).fill(undefined);
  /**
   * The owner each cached frame's page was found to have by `readOwned64` (-1: not checked since the slot was
   * filled). Only `free` changes a page's owner, and it drops the page's frame, so a checked owner stays true.
   */
  private readonly frameOwners = new Float64Array(FRAME_CACHE).fill(-1);
  private ownedPages = 0;
  readonly violations: IsolationViolation[] = [];
  private readonly sourceViews = new PageViews();

  constructor(options: HostMemoryOptions = {}) {
    this.sizeBytes = options.sizeBytes ?? 2 ** 46;
    this.nextPage = pageNumber(options.baseAddress ?? 2 ** 32);
    this.endPage = pageNumber(this.sizeBytes);
  }

  /** Allocates `pages` physically contiguous pages for `owner`; undefined when memory is exhausted. */
  allocate(owner: OwnerId, pages = 1): Hpa | undefined {
    if (!Number.isSafeInteger(pages) || pages < 1) return undefined;
    // Runs are aligned to the largest power of two not above their size (up to 1 GiB), as a buddy allocator
    // would, so a 2 MiB backing page can be mapped with a 2 MiB leaf.
    const align = 2 ** Math.min(18, Math.floor(Math.log2(pages)));
    let start: number | undefined;
    const reuse = this.freeRuns.findIndex((r) => Math.ceil(r.start / align) * align + pages <= r.start + r.pages);
    if (reuse >= 0) {
      const r = this.freeRuns[reuse]!;
      start = Math.ceil(r.start / align) * align;
      this.freeRuns.splice(reuse, 1);
      if (start > r.start) this.freeRuns.push({ start: r.start, pages: start - r.start });
      if (start + pages < r.start + r.pages) this.freeRuns.push({ start: start + pages, pages: r.start + r.pages - start - pages });
    } else {
      const aligned = Math.ceil(this.nextPage / align) * align;
      if (aligned + pages > this.endPage) return undefined;
      if (aligned > this.nextPage) this.freeRuns.push({ start: this.nextPage, pages: aligned - this.nextPage });
      start = aligned;
      this.nextPage = aligned + pages;
    }
    this.insertRun({ start, pages, owner });
    this.ownedPages += pages;
    return (start * PAGE_SIZE) as Hpa;
  }

  private insertRun(run: OwnedRun): void {
    let lo = 0;
    let hi = this.runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.runs[mid]!.start < run.start) lo = mid + 1;
      else hi = mid;
    }
    this.runs.splice(lo, 0, run);
  }

  private runAt(page: number): OwnedRun | undefined {
    const slot = page & (RUN_CACHE - 1);
    const cached = this.runCache[slot];
    if (cached !== undefined && page >= cached.start && page < cached.start + cached.pages) return cached;
    let lo = 0;
    let hi = this.runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = this.runs[mid]!;
      if (page < r.start) hi = mid - 1;
      else if (page >= r.start + r.pages) lo = mid + 1;
      else {
        this.runCache[slot] = r;
        return r;
      }
    }
    return undefined;
  }

  /**
   * Returns pages to the allocator; their contents are scrubbed so no data leaks to the next owner. The
   * range may be part of an allocation (the rest stays owned).
   */
  free(address: Hpa, pages = 1): void {
    const first = pageNumber(address);
    const end = first + pages;
    let page = first;
    while (page < end) {
      const run = this.runAt(page);
      if (run === undefined) {
        page++;
        continue;
      }
      const runEnd = run.start + run.pages;
      const cutEnd = Math.min(end, runEnd);
      const index = this.runs.indexOf(run);
      const pieces: OwnedRun[] = [];
      if (run.start < page) pieces.push({ start: run.start, pages: page - run.start, owner: run.owner });
      if (cutEnd < runEnd) pieces.push({ start: cutEnd, pages: runEnd - cutEnd, owner: run.owner });
      this.runs.splice(index, 1, ...pieces);
      this.runCache.fill(undefined);
      for (let p = page; p < cutEnd; p++) this.dropFrame(p);
      this.freeRuns.push({ start: page, pages: cutEnd - page });
      this.ownedPages -= cutEnd - page;
      page = cutEnd;
    }
  }

  ownerOf(address: number): OwnerId | undefined {
    return this.runAt(pageNumber(address))?.owner;
  }

  get allocatedPages(): number {
    return this.ownedPages;
  }

  /** Byte ranges owned by `owner`, as [start, length] pairs (for isolation checks in tests). */
  rangesOf(owner: OwnerId): [number, number][] {
    return this.runs.filter((r) => r.owner === owner).map((r) => [r.start * PAGE_SIZE, r.pages * PAGE_SIZE]);
  }

  /** Page addresses in [address, address + length) that hold written data, ascending. */
  writtenPagesIn(address: number, length: number): number[] {
    const first = pageNumber(address);
    const end = pageNumber(address + length - 1);
    const out: number[] = [];
    if (this.frames.size < end - first + 1) {
      for (const page of this.frames.keys()) if (page >= first && page <= end) out.push(page * PAGE_SIZE);
      return out.sort((a, b) => a - b);
    }
    for (let page = first; page <= end; page++) if (this.frames.has(page)) out.push(page * PAGE_SIZE);
    return out;
  }

  /** Pages of `owner` that hold written data (materialised), ascending. */
  writtenPagesOf(owner: OwnerId): number[] {
    const out: number[] = [];
    for (const page of this.frames.keys()) if (this.runAt(page)?.owner === owner) out.push(page * PAGE_SIZE);
    return out.sort((a, b) => a - b);
  }

  /** The frame of a page, if materialised (through the frame cache). */
  private frameOf(page: number): Frame | undefined {
    const slot = page & (FRAME_CACHE - 1);
    if (this.framePages[slot] === page) return this.frameCache[slot];
    const frame = this.frames.get(page);
    if (frame !== undefined) {
      this.framePages[slot] = page;
      this.frameCache[slot] = frame;
      this.frameOwners[slot] = -1;
    }
    return frame;
  }

  private dropFrame(page: number): void {
    this.frames.delete(page);
    const slot = page & (FRAME_CACHE - 1);
    if (this.framePages[slot] === page) {
      this.framePages[slot] = -1;
      this.frameCache[slot] = undefined;
    }
  }

  private frameFor(address: number, create: boolean): Frame | undefined {
    const page = pageNumber(address);
    let frame = this.frameOf(page);
    if (frame === undefined && create) {
      if (this.runAt(page) === undefined) throw new RangeError(`host access to unallocated page 0x${address.toString(16)}`);
      frame = newFrame();
      this.frames.set(page, frame);
    }
    return frame;
  }

  /** Whether `address` lies in an allocated page (IOMMU table fetches check this before reading). */
  isAllocated(address: number): boolean {
    return this.runAt(pageNumber(address)) !== undefined;
  }

  /** 32-bit read at a 4-byte aligned host address; unwritten pages read zero. */
  read32(address: number): number {
    const frame = this.frameFor(address, false);
    if (frame === undefined) return 0;
    const offset = address & (PAGE_SIZE - 1);
    if ((offset & 3) === 0) return frame.words[offset >>> 2]!;
    throw new RangeError(`unaligned 32-bit host read at 0x${address.toString(16)}`);
  }

  write32(address: number, value: number): void {
    const offset = address & (PAGE_SIZE - 1);
    if ((offset & 3) !== 0) throw new RangeError(`unaligned 32-bit host write at 0x${address.toString(16)}`);
    this.frameFor(address, true)!.words[offset >>> 2] = value >>> 0;
  }

  /** Reads the 64-bit little-endian value at an 8-byte aligned address into out[0] (lo), out[1] (hi). */
  read64Halves(address: number, out: Uint32Array): void {
    const frame = this.frameFor(address, false);
    if (frame === undefined) {
      out[0] = 0;
      out[1] = 0;
      return;
    }
    const index = (address & (PAGE_SIZE - 1)) >>> 2;
    out[0] = frame.words[index]!;
    out[1] = frame.words[index + 1]!;
  }

  /**
   * The written frame holding [address, address + length) when that span lies in one page and the frame cache
   * already knows `owner` owns it; else undefined, and the caller takes the checked path (which records any
   * violation). The page-at-a-time DMA of a device finds its pages here after their first transfer.
   */
  private checkedFrame(owner: OwnerId, address: number, length: number): Frame | undefined {
    if ((address & (PAGE_SIZE - 1)) + length > PAGE_SIZE) return undefined;
    const page = Math.floor(address / PAGE_SIZE);
    const slot = page & (FRAME_CACHE - 1);
    if (this.framePages[slot] === page && this.frameOwners[slot] === owner) return this.frameCache[slot];
    if (this.runAt(page)?.owner !== owner) return undefined;
    const frame = this.frameOf(page);
    if (frame !== undefined) this.frameOwners[slot] = owner;
    return frame;
  }

  /**
   * A table walk's fetch: the 64-bit value at an 8-byte aligned `address` into out[0] (lo), out[1] (hi) when its
   * page belongs to `owner` (an unwritten page reads zero), else false with nothing read. The owner is checked
   * once per cached frame, not on every fetch.
   */
  readOwned64(owner: OwnerId, address: number, out: Uint32Array): boolean {
    const page = Math.floor(address / PAGE_SIZE);
    const slot = page & (FRAME_CACHE - 1);
    let frame: Frame | undefined;
    if (this.framePages[slot] === page && this.frameOwners[slot] === owner) frame = this.frameCache[slot];
    else {
      if (this.runAt(page)?.owner !== owner) return false;
      frame = this.frameOf(page);
      if (frame === undefined) {
        out[0] = 0;
        out[1] = 0;
        return true;
      }
      this.frameOwners[slot] = owner;
    }
    const index = (address & (PAGE_SIZE - 1)) >>> 2;
    out[0] = frame!.words[index]!;
    out[1] = frame!.words[index + 1]!;
    return true;
  }

  write64Halves(address: number, lo: number, hi: number): void {
    const frame = this.frameFor(address, true)!;
    const index = (address & (PAGE_SIZE - 1)) >>> 2;
    frame.words[index] = lo >>> 0;
    frame.words[index + 1] = hi >>> 0;
  }

  readBytes(address: number, length: number, into: Uint8Array = new Uint8Array(length), at = 0): Uint8Array {
    let done = 0;
    while (done < length) {
      const a = address + done;
      const offset = a & (PAGE_SIZE - 1);
      const n = Math.min(PAGE_SIZE - offset, length - done);
      const frame = this.frameFor(a, false);
      if (frame === undefined) into.fill(0, at + done, at + done + n);
      else into.set(frame.bytes.subarray(offset, offset + n), at + done);
      done += n;
    }
    return into;
  }

  writeBytes(address: number, bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.length) {
      const a = address + done;
      const offset = a & (PAGE_SIZE - 1);
      const n = Math.min(PAGE_SIZE - offset, bytes.length - done);
      this.frameFor(a, true)!.bytes.set(bytes.subarray(done, done + n), offset);
      done += n;
    }
  }

  /** Zeroes a page-aligned range (freshly allocated table pages). */
  zero(address: number, length: number): void {
    for (let a = address; a < address + length; a += PAGE_SIZE) this.dropFrame(pageNumber(a));
  }

  private ownedBy(owner: OwnerId, address: number, length: number, write: boolean): boolean {
    for (let page = pageNumber(address); page <= pageNumber(address + length - 1); page++) {
      const pageOwner = this.runAt(page)?.owner;
      if (pageOwner !== owner) {
        this.violations.push({ owner, hpa: page * PAGE_SIZE, pageOwner, write });
        return false;
      }
    }
    return true;
  }

  /**
   * A device DMA read on behalf of `owner`: refused (false) and recorded as an isolation violation when any
   * byte lies in a page `owner` does not own. The translation path is meant to make this impossible; this
   * check is the last line, and the tests assert it never fires.
   */
  dmaRead(owner: OwnerId, address: number, into: Uint8Array): boolean {
    if (into.length === 0) return true;
    if (!this.ownedBy(owner, address, into.length, false)) return false;
    this.readBytes(address, into.length, into);
    return true;
  }

  dmaWrite(owner: OwnerId, address: number, bytes: Uint8Array): boolean {
    if (bytes.length === 0) return true;
    if (!this.ownedBy(owner, address, bytes.length, true)) return false;
    this.writeBytes(address, bytes);
    return true;
  }

  /**
   * `dmaRead` into into[at, at + length), allocating nothing for whole pages: a device filling its driver's
   * buffer. Refused and recorded as `dmaRead` is.
   */
  dmaReadInto(owner: OwnerId, address: number, into: Uint8Array, at: number, length: number): boolean {
    if (length === 0) return true;
    const frame = this.checkedFrame(owner, address, length);
    if (frame !== undefined) {
      const offset = address & (PAGE_SIZE - 1);
      if (length === PAGE_SIZE) into.set(frame.bytes, at);
      else into.set(frame.bytes.subarray(offset, offset + length), at);
      return true;
    }
    if (!this.ownedBy(owner, address, length, false)) return false;
    let done = 0;
    while (done < length) {
      const a = address + done;
      const offset = a & (PAGE_SIZE - 1);
      const n = Math.min(PAGE_SIZE - offset, length - done);
      const frame = this.frameOf(pageNumber(a));
      if (frame === undefined) into.fill(0, at + done, at + done + n);
      else if (n === PAGE_SIZE) into.set(frame.bytes, at + done);
      else into.set(frame.bytes.subarray(offset, offset + n), at + done);
      done += n;
    }
    return true;
  }

  /** `dmaWrite` from from[at, at + length), allocating nothing for whole pages of a buffer written again. */
  dmaWriteFrom(owner: OwnerId, address: number, from: Uint8Array, at: number, length: number): boolean {
    if (length === 0) return true;
    const frame = this.checkedFrame(owner, address, length);
    if (frame !== undefined) {
      if (length === PAGE_SIZE) frame.bytes.set(this.sourceViews.page(from, at));
      else frame.bytes.set(from.subarray(at, at + length), address & (PAGE_SIZE - 1));
      return true;
    }
    if (!this.ownedBy(owner, address, length, true)) return false;
    let done = 0;
    while (done < length) {
      const a = address + done;
      const offset = a & (PAGE_SIZE - 1);
      const n = Math.min(PAGE_SIZE - offset, length - done);
      const frame = this.frameFor(a, true)!;
      if (n === PAGE_SIZE) frame.bytes.set(this.sourceViews.page(from, at + done));
      else frame.bytes.set(from.subarray(at + done, at + done + n), offset);
      done += n;
    }
    return true;
  }
}

export { PAGE_SHIFT, PAGE_SIZE };
