import type { Gpa, Hpa } from "../address/addresses.js";
import { HostMemory, type OwnerId } from "./host-memory.js";
import { PAGE_SIZE, pageNumber } from "./page.js";

export interface GuestMemoryOptions {
  /** Guest physical address space size in bytes; a VM may claim terabytes and touch megabytes. */
  readonly sizeBytes: number;
  /** First guest physical address of RAM (arm64 guests usually start at 0x40000000). */
  readonly base?: number;
  /** A confidential (SEV-SNP-like) guest: pages are private (encrypted) unless made shared. */
  readonly confidential?: boolean;
  /**
   * Size of the host pages backing guest RAM, as log2: 21 (2 MiB, transparent huge pages; the default),
   * 30 (1 GiB huge pages) or 12 (4 KiB pages, allocated as touched, so rarely contiguous).
   */
  readonly backingPageShift?: number;
  /**
   * Where RAM's contents come from when it does not start empty (a memory dump): read a backing page at a time
   * on first access, so a 16 GiB dump costs only the pages a walk touches. Pages reading all zero stay unbacked.
   */
  readonly image?: PhysicalImage;
}

/** A guest-physical image read lazily (a raw dump, an ELF core's PT_LOAD segments, several files). */
export interface PhysicalImage {
  /** Fills `into` with the bytes at guest-physical `address` onwards (zeros where the image holds none). */
  read(address: number, into: Uint8Array): void;
}

/**
 * A VM's guest-physical memory: sparse and page-granular, each touched page backed by a host page the VM
 * owns. The guest reads and writes it freely; the VMM and IOMMU models reach it only at checked addresses
 * (`contains`), and for a confidential guest only where the guest has shared it (`hostReadable`).
 */
export class GuestMemory {
  readonly base: number;
  readonly sizeBytes: number;
  readonly confidential: boolean;
  readonly backingPageShift: number;
  private readonly chunkSize: number;
  /** Chunks backed one at a time (touched, or read from the image): guest chunk index → host address. */
  private readonly backing = new Map<number, number>();
  /** The same chunks by host chunk index → guest chunk index (the host's reverse map). */
  private readonly backingByHost = new Map<number, number>();
  /**
   * Runs of chunks backed by one host allocation (a range pinned at once, as mapping RAM into an IOAS does), sorted
   * by first chunk: a 1 TiB claim is one entry, not half a million.
   */
  private readonly runs: BackedRun[] = [];
  /** The same runs sorted by host address. */
  private readonly runsByHost: BackedRun[] = [];
  private lastRun: BackedRun | undefined;
  private backedChunks = 0;
  /** Pages whose sharing state differs from the default (shared for a confidential guest, private otherwise). */
  private readonly flipped = new Set<number>();
  /** Pages the CPUs or the VMM wrote since the log was last taken (KVM's dirty log), while logging is on. */
  private dirtyLog: Set<number> | undefined;
  private readonly image: PhysicalImage | undefined;
  /** Chunks of the image already read (backed, or found all zero and left unbacked). */
  private readonly imageRead = new Set<number>();

  constructor(
    readonly host: HostMemory,
    readonly owner: OwnerId,
    options: GuestMemoryOptions,
  ) {
    this.base = options.base ?? 0;
    this.sizeBytes = options.sizeBytes;
    this.confidential = options.confidential ?? false;
    this.backingPageShift = options.backingPageShift ?? 21;
    this.chunkSize = 2 ** this.backingPageShift;
    this.image = options.image;
    if (this.backingPageShift < 12 || this.backingPageShift > 30) throw new RangeError("backing page size must be 4 KiB to 1 GiB");
    if (this.base % PAGE_SIZE !== 0 || this.sizeBytes % PAGE_SIZE !== 0 || this.sizeBytes <= 0) {
      throw new RangeError("guest memory base and size must be whole pages");
    }
  }

  get end(): number {
    return this.base + this.sizeBytes;
  }

  /** Whether [address, address + length) lies inside guest RAM. Every guest-supplied address goes through this. */
  contains(address: number, length = 1): boolean {
    return Number.isSafeInteger(address) && length >= 0 && address >= this.base && address + length <= this.end;
  }

  /** The host address of a chunk's first byte, if it is backed (without reading the image). */
  private hostOfChunk(chunk: number): number | undefined {
    const single = this.backing.get(chunk);
    if (single !== undefined) return single;
    const run = this.runOf(chunk);
    return run === undefined ? undefined : run.host + slotOf(run, chunk - run.firstChunk) * this.chunkSize;
  }

  /** The run holding `chunk`, by binary search (the last one found is tried first). */
  private runOf(chunk: number): BackedRun | undefined {
    const last = this.lastRun;
    if (last !== undefined && chunk >= last.firstChunk && chunk < last.firstChunk + last.chunks) return last;
    const runs = this.runs;
    let lo = 0;
    let hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = runs[mid]!;
      if (chunk < r.firstChunk) hi = mid - 1;
      else if (chunk >= r.firstChunk + r.chunks) lo = mid + 1;
      else {
        this.lastRun = r;
        return r;
      }
    }
    return undefined;
  }

  /** The first backed chunk at or after `chunk` and before `limit` (limit when none): a run may extend up to it. */
  private nextBacked(chunk: number, limit: number): number {
    let next = limit;
    // Whichever is fewer: the singly backed chunks, or the chunks up to the limit.
    if (this.backing.size < limit - chunk) {
      for (const c of this.backing.keys()) if (c >= chunk && c < next) next = c;
    } else {
      for (let c = chunk; c < next; c++) if (this.backing.has(c)) next = c;
    }
    for (const r of this.runs) {
      if (r.firstChunk >= chunk && r.firstChunk < next) {
        next = r.firstChunk;
        break;
      }
    }
    return next;
  }

  private addRun(firstChunk: number, chunks: number, host: number, slots: number): BackedRun {
    const run: BackedRun = { firstChunk, chunks, host, slots, stride: slots === 1 ? 1 : slots / 2 + 1 };
    insertSorted(this.runs, run, (r) => r.firstChunk);
    insertSorted(this.runsByHost, run, (r) => r.host);
    this.backedChunks += chunks;
    return run;
  }

  private addContiguousRun(firstChunk: number, chunks: number, host: number): void {
    const run: BackedRun = { firstChunk, chunks, host, slots: chunks, stride: 1 };
    insertSorted(this.runs, run, (r) => r.firstChunk);
    insertSorted(this.runsByHost, run, (r) => r.host);
    this.backedChunks += chunks;
  }

  private addSingle(chunk: number, host: number): void {
    this.backing.set(chunk, host);
    this.backingByHost.set(Math.floor(host / this.chunkSize), chunk);
    this.backedChunks++;
  }

  /** The guest address a host address backs, if it backs this guest's RAM (the reverse map). */
  guestAddressOf(hpa: number): number | undefined {
    const hostChunk = Math.floor(hpa / this.chunkSize);
    const offset = hpa - hostChunk * this.chunkSize;
    const single = this.backingByHost.get(hostChunk);
    if (single !== undefined) return single * this.chunkSize + offset;
    const runs = this.runsByHost;
    let lo = 0;
    let hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = runs[mid]!;
      if (hpa < r.host) hi = mid - 1;
      else if (hpa >= r.host + r.slots * this.chunkSize) lo = mid + 1;
      else {
        const slot = Math.floor((hpa - r.host) / this.chunkSize);
        const index = slotOf(r, slot); // the scramble is its own inverse
        return index < r.chunks ? (r.firstChunk + index) * this.chunkSize + (hpa - r.host - slot * this.chunkSize) : undefined;
      }
    }
    return undefined;
  }

  /** The host address backing `address`, if its backing page exists. */
  backingOf(address: number): Hpa | undefined {
    const chunk = Math.floor(address / this.chunkSize);
    const hostBase = this.hostOfChunk(chunk) ?? (this.image === undefined ? undefined : this.readImage(chunk));
    return hostBase === undefined ? undefined : ((hostBase + (address - chunk * this.chunkSize)) as Hpa);
  }

  /** First access to a chunk of an image-backed memory: back it with the image's bytes unless they are all zero. */
  private readImage(chunk: number): number | undefined {
    if (this.imageRead.has(chunk) || !this.contains(chunk * this.chunkSize)) return undefined;
    this.imageRead.add(chunk);
    const bytes = new Uint8Array(this.chunkSize);
    this.image!.read(chunk * this.chunkSize, bytes);
    if (!regionNonZero(bytes, new Uint32Array(bytes.buffer), 0, bytes.length)) return undefined;
    const hostBase = this.host.allocate(this.owner, this.chunkSize / PAGE_SIZE);
    if (hostBase === undefined) return undefined;
    this.addSingle(chunk, hostBase);
    this.host.writeBytes(hostBase, bytes);
    return hostBase;
  }

  /**
   * The host address backing `address`, allocating its backing page if needed (what pinning does). Undefined
   * outside RAM or when the host is out of memory.
   */
  pin(address: number): Hpa | undefined {
    if (!this.contains(address)) return undefined;
    const chunk = Math.floor(address / this.chunkSize);
    let hostBase = this.hostOfChunk(chunk) ?? (this.image === undefined ? undefined : this.readImage(chunk));
    if (hostBase === undefined) {
      hostBase = this.host.allocate(this.owner, this.chunkSize / PAGE_SIZE);
      if (hostBase === undefined) return undefined;
      this.addSingle(chunk, hostBase);
    }
    return (hostBase + (address - chunk * this.chunkSize)) as Hpa;
  }

  /**
   * Pins the backing page holding `address` and returns the host address with how many bytes from there are
   * host-contiguous within that backing page (at most `maxLength`). Undefined outside RAM or out of memory.
   * `out`, when given, is filled and returned instead of a new object (mapping a terabyte pins half a million
   * backing pages).
   */
  pinRun(address: number, maxLength: number, out?: { hpa: Hpa; length: number }): { hpa: Hpa; length: number } | undefined {
    if (!this.contains(address)) return undefined;
    const chunk = Math.floor(address / this.chunkSize);
    const inChunk = address - chunk * this.chunkSize;
    const limit = Math.max(0, Math.min(maxLength, this.end - address));
    let run = this.runOf(chunk);
    if (run === undefined && !this.backing.has(chunk) && this.image === undefined && this.backingPageShift > 12) {
      // Unbacked huge pages: back every unbacked chunk the request covers with one host run. 4 KiB pages stay
      // one allocation each (as touched, so rarely contiguous: their stage-2 leaves stay 4 KiB); an image's
      // chunks are read one by one.
      const wanted = Math.max(1, Math.ceil((inChunk + limit) / this.chunkSize));
      const count = this.nextBacked(chunk, chunk + wanted) - chunk;
      const slots = count === 1 ? 1 : Math.max(4, 2 ** Math.ceil(Math.log2(count)));
      const host = this.host.allocate(this.owner, (slots * this.chunkSize) / PAGE_SIZE);
      if (host === undefined) return undefined;
      run = this.addRun(chunk, count, host, slots);
    }
    if (run !== undefined) {
      const hpa = run.host + slotOf(run, chunk - run.firstChunk) * this.chunkSize + inChunk;
      // Host-contiguous to the run's end only when unscrambled (backContiguous); else to the chunk's end.
      const end = run.stride === 1 ? (run.firstChunk + run.chunks) * this.chunkSize : (chunk + 1) * this.chunkSize;
      return pinned(hpa as Hpa, Math.min(end - address, limit), out);
    }
    const hpa = this.pin(address);
    if (hpa === undefined) return undefined;
    return pinned(hpa, Math.min(this.chunkSize - inChunk, limit), out);
  }

  /** Pins every backing page of [address, address + length); false when the host runs out. */
  pinRange(address: number, length: number): boolean {
    if (!this.contains(address, length)) return false;
    for (let done = 0; done < length; ) {
      const r = this.pinRun(address + done, length - done);
      if (r === undefined) return false;
      done += r.length;
    }
    return true;
  }

  /**
   * Backs an unbacked range with physically contiguous host memory (as a VMM backs a queue with one huge
   * page). The range is widened to whole backing pages; false when any of them is already backed or the
   * host cannot supply the run.
   */
  backContiguous(address: Gpa, length: number): boolean {
    if (length <= 0 || !this.contains(address, length)) return false;
    const first = Math.floor(address / this.chunkSize);
    const last = Math.floor((address + length - 1) / this.chunkSize);
    if (this.nextBacked(first, last + 1) !== last + 1) return false;
    const run = this.host.allocate(this.owner, ((last - first + 1) * this.chunkSize) / PAGE_SIZE);
    if (run === undefined) return false;
    this.addContiguousRun(first, last - first + 1, run);
    return true;
  }

  /** Bytes of host memory backing this guest. */
  get backedBytes(): number {
    return this.backedChunks * this.chunkSize;
  }

  /** Guest addresses of pages holding written data, ascending (for save/restore and images). */
  writtenPages(): number[] {
    const out: number[] = [];
    for (const [chunk, hostBase] of this.backing) {
      for (const hostPage of this.host.writtenPagesIn(hostBase, this.chunkSize)) out.push(chunk * this.chunkSize + (hostPage - hostBase));
    }
    for (const r of this.runs) {
      for (const hostPage of this.host.writtenPagesIn(r.host, r.slots * this.chunkSize)) {
        const gpa = this.guestAddressOf(hostPage);
        if (gpa !== undefined) out.push(gpa);
      }
    }
    return out.sort((a, b) => a - b);
  }

  // ---- sharing (confidential guests) ----

  setShared(address: number, length: number, shared: boolean): void {
    for (let p = pageNumber(address); p <= pageNumber(address + length - 1); p++) {
      if (shared !== this.confidential) this.flipped.delete(p);
      else this.flipped.add(p);
    }
  }

  isShared(address: number): boolean {
    const flipped = this.flipped.has(pageNumber(address));
    return this.confidential ? flipped : !flipped;
  }

  /**
   * Whether the host (VMM, IOMMU) can read [address, address + length) as plaintext: inside RAM and, for a
   * confidential guest, every page shared. A private page would read as ciphertext.
   */
  hostReadable(address: number, length: number): boolean {
    if (!this.contains(address, length)) return false;
    if (!this.confidential && this.flipped.size === 0) return true;
    for (let p = pageNumber(address); p <= pageNumber(address + length - 1); p++) if (!this.isShared(p * PAGE_SIZE)) return false;
    return true;
  }

  // ---- typed access (callers check `contains` for guest-supplied addresses) ----

  private check(address: number, length: number): void {
    if (!this.contains(address, length)) {
      throw new RangeError(`guest access [0x${address.toString(16)}, +${length}) outside guest RAM`);
    }
  }

  read8(address: number): number {
    this.check(address, 1);
    const h = this.backingOf(address);
    return h === undefined ? 0 : this.host.readBytes(h, 1)[0]!;
  }

  read16(address: number): number {
    const b = this.readBytes(address, 2);
    return b[0]! | (b[1]! << 8);
  }

  read32(address: number): number {
    this.check(address, 4);
    if ((address & 3) === 0) {
      const h = this.backingOf(address);
      return h === undefined ? 0 : this.host.read32(h);
    }
    const b = this.readBytes(address, 4);
    return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  }

  /** 64-bit read as bigint (edges only; hot paths use `read64Halves`). */
  read64(address: number): bigint {
    return (BigInt(this.read32(address + 4)) << 32n) | BigInt(this.read32(address));
  }

  /** 64-bit read of an 8-byte aligned value into out[0] (lo), out[1] (hi), without allocating. */
  read64Halves(address: number, out: Uint32Array): void {
    this.check(address, 8);
    const h = this.backingOf(address);
    if (h === undefined) {
      out[0] = 0;
      out[1] = 0;
    } else this.host.read64Halves(h, out);
  }

  /** Reads `out.length` 32-bit words starting at a 4-byte aligned address (descriptors, records). */
  readWords(address: number, out: Uint32Array): Uint32Array {
    this.check(address, out.length * 4);
    for (let i = 0; i < out.length; i++) {
      const a = address + i * 4;
      const h = this.backingOf(a);
      out[i] = h === undefined ? 0 : this.host.read32(h);
    }
    return out;
  }

  readBytes(address: number, length: number, into: Uint8Array = new Uint8Array(length)): Uint8Array {
    this.check(address, length);
    let done = 0;
    while (done < length) {
      const a = address + done;
      const n = Math.min(PAGE_SIZE - (a % PAGE_SIZE), length - done);
      const h = this.backingOf(a);
      if (h === undefined) into.fill(0, done, done + n);
      else this.host.readBytes(h, n, into, done);
      done += n;
    }
    return into;
  }

  // ---- the CPU/VMM dirty log (device DMA goes to host memory directly and is tracked by the IOMMU) ----

  /** Starts logging the pages CPU and VMM writes touch (KVM_MEM_LOG_DIRTY_PAGES); the log starts empty. */
  startDirtyLog(): void {
    this.dirtyLog = new Set();
  }

  /** The pages written since the last take (ascending guest addresses), and a fresh, empty log. */
  takeDirtyLog(): number[] {
    if (this.dirtyLog === undefined) return [];
    const pages = [...this.dirtyLog].sort((a, b) => a - b);
    this.dirtyLog.clear();
    return pages;
  }

  stopDirtyLog(): void {
    this.dirtyLog = undefined;
  }

  write8(address: number, value: number): void {
    this.writeBytes(address, Uint8Array.of(value & 0xff));
  }

  write16(address: number, value: number): void {
    this.writeBytes(address, Uint8Array.of(value & 0xff, (value >>> 8) & 0xff));
  }

  write32(address: number, value: number): void {
    this.check(address, 4);
    if ((address & 3) === 0) {
      const h = this.pin(address);
      if (h === undefined) throw new RangeError("host out of memory backing guest RAM");
      this.host.write32(h, value);
      this.dirtyLog?.add(address - (address % PAGE_SIZE));
      return;
    }
    this.writeBytes(address, Uint8Array.of(value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff));
  }

  write64(address: number, value: bigint | number): void {
    const v = BigInt(value);
    this.write32(address, Number(v & 0xffffffffn));
    this.write32(address + 4, Number((v >> 32n) & 0xffffffffn));
  }

  write64Halves(address: number, lo: number, hi: number): void {
    this.write32(address, lo);
    this.write32(address + 4, hi);
  }

  writeWords(address: number, words: Uint32Array): void {
    for (let i = 0; i < words.length; i++) this.write32(address + i * 4, words[i]!);
  }

  writeBytes(address: number, bytes: Uint8Array): void {
    this.check(address, bytes.length);
    let done = 0;
    while (done < bytes.length) {
      const a = address + done;
      const n = Math.min(PAGE_SIZE - (a % PAGE_SIZE), bytes.length - done);
      const h = this.pin(a);
      if (h === undefined) throw new RangeError("host out of memory backing guest RAM");
      this.host.writeBytes(h, bytes.subarray(done, done + n));
      this.dirtyLog?.add(a - (a % PAGE_SIZE));
      done += n;
    }
  }

  fill(address: number, length: number, value = 0): void {
    this.writeBytes(address, new Uint8Array(length).fill(value));
  }

  /**
   * Loads a raw guest-physical image starting at `base`: only pages holding a nonzero byte are backed, so a
   * 256 MiB dump of a few IOMMU structures costs a few megabytes.
   */
  loadImage(image: Uint8Array, base = this.base): number {
    let loaded = 0;
    const aligned = image.byteOffset % 4 === 0 ? new Uint32Array(image.buffer, image.byteOffset, image.length >>> 2) : undefined;
    for (let offset = 0; offset < image.length; offset += PAGE_SIZE) {
      const end = Math.min(offset + PAGE_SIZE, image.length);
      if (!regionNonZero(image, aligned, offset, end)) continue;
      this.writeBytes(base + offset, image.subarray(offset, end));
      loaded++;
    }
    return loaded;
  }
}

/**
 * Chunks backed by one host allocation of `slots` chunks (a power of two). Chunk i of the run sits in slot
 * (i × stride) mod slots: with an odd stride of slots/2 + 1 neighbouring chunks are never host neighbours, as
 * separately allocated huge pages are not (so stage 2 maps each with its own leaf), and the stride is its own
 * inverse modulo slots, so the reverse map is the same product. Stride 1: one contiguous run (a queue's memory).
 */
interface BackedRun {
  readonly firstChunk: number;
  readonly chunks: number;
  /** Host address of slot 0. */
  readonly host: number;
  readonly slots: number;
  readonly stride: number;
}

/** The host slot of a run's chunk `index` (and, the stride being self-inverse, the chunk index of a slot). */
function slotOf(run: BackedRun, index: number): number {
  return run.stride === 1 ? index : Math.imul(index, run.stride) & (run.slots - 1);
}

function insertSorted<T>(list: T[], item: T, key: (x: T) => number): void {
  let lo = 0;
  let hi = list.length;
  const k = key(item);
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (key(list[mid]!) < k) lo = mid + 1;
    else hi = mid;
  }
  list.splice(lo, 0, item);
}

function regionNonZero(bytes: Uint8Array, words: Uint32Array | undefined, start: number, end: number): boolean {
  let i = start;
  if (words !== undefined) {
    for (; i + 4 <= end; i += 4) if (words[i >>> 2] !== 0) return true;
  }
  for (; i < end; i++) if (bytes[i] !== 0) return true;
  return false;
}

function pinned(hpa: Hpa, length: number, out: { hpa: Hpa; length: number } | undefined): { hpa: Hpa; length: number } {
  if (out === undefined) return { hpa, length };
  out.hpa = hpa;
  out.length = length;
  return out;
}
