import type { Hpa } from "../address/addresses.js";
import { err, ok, type Result } from "../errors/errno.js";
import type { HostMemory, OwnerId } from "../memory/host-memory.js";
import { PAGE_SIZE } from "../memory/page.js";
import type { PermBits } from "./access.js";
import { HostTableReader } from "./entry-readers.js";
import { EntryKind, newEntryDecode, type PageTableEncoder, type PageTableFormat, type TableGeometry } from "./page-table-format.js";
import { indexBitsOf, PageWalker } from "./page-walker.js";
import { POW2 } from "../bits/bit-ops.js";
import type { WalkResult } from "./walk-result.js";

export type WritableFormat = PageTableFormat & PageTableEncoder;

/** Anything that holds a page-table tree in some memory the builder can allocate, read and write. */
export interface TableStore {
  /** A zeroed, naturally aligned table of `bytes` bytes, or undefined when out of memory. */
  allocateTable(bytes: number): number | undefined;
  freeTable(address: number, bytes: number): void;
  read64Halves(address: number, out: Uint32Array): void;
  write64Halves(address: number, lo: number, hi: number): void;
}

/** Host-owned table pages (a host stage-2 or paging domain). */
export class HostTableStore implements TableStore {
  constructor(
    private readonly host: HostMemory,
    private readonly owner: OwnerId,
  ) {}

  allocateTable(bytes: number): number | undefined {
    const pages = Math.max(1, Math.ceil(bytes / PAGE_SIZE));
    const at = this.host.allocate(this.owner, pages);
    if (at === undefined) return undefined;
    this.host.zero(at, pages * PAGE_SIZE);
    return at;
  }

  freeTable(address: number, bytes: number): void {
    this.host.free(address as Hpa, Math.max(1, Math.ceil(bytes / PAGE_SIZE)));
  }

  read64Halves(address: number, out: Uint32Array): void {
    this.host.read64Halves(address, out);
  }

  write64Halves(address: number, lo: number, hi: number): void {
    this.host.write64Halves(address, lo, hi);
  }
}

/**
 * Builds and edits a radix table tree in any writable format: the host's stage-2 / paging domains, and the
 * reference guest drivers' own tables. Maps use the largest leaf the format allows where alignment and
 * length permit; unmap removes whole leaves only (callers unmap what they mapped) and frees tables that
 * become empty.
 */
export class PageTableBuilder {
  readonly root: number;
  private readonly entry = new Uint32Array(2);
  private readonly decoded = newEntryDecode();
  /** Live entries per table, so empty tables are freed. */
  private readonly population = new Map<number, number>();
  private readonly tableSizes = new Map<number, number>();
  private mappedBytes = 0;
  /**
   * The table the last leaf was written into, its level and the inputs it covers: a long range maps leaf after
   * leaf into one table, found once from the root instead of once per leaf. Level 0: none; reset whenever a
   * table is freed. Kept only for a tree no one else writes (`soleWriter`): a guest's tables may change under it.
   */
  private cursorTable = 0;
  private cursorLevel = 0;
  private cursorBase = 0;
  private cursorEnd = 0;
  /** Leaves written into the cursor's table and not yet counted in `population` (see `settleCursor`). */
  private cursorAdded = 0;

  private constructor(
    readonly format: WritableFormat,
    readonly geometry: TableGeometry,
    private readonly store: TableStore,
    root: number,
    private readonly allowLargePages: boolean,
    private readonly soleWriter: boolean,
  ) {
    this.root = root;
    this.population.set(root, 0);
    this.tableSizes.set(root, format.tableBytes(geometry.startLevel));
  }

  /**
   * `soleWriter`: only this builder writes the tree's entries (a host-owned table; dirty bits aside), so it may
   * remember the table it last wrote into.
   */
  static create(format: WritableFormat, geometry: TableGeometry, store: TableStore, options: { largePages?: boolean; soleWriter?: boolean } = {}): PageTableBuilder | undefined {
    const root = store.allocateTable(format.tableBytes(geometry.startLevel));
    if (root === undefined) return undefined;
    return new PageTableBuilder(format, geometry, store, root, options.largePages ?? true, options.soleWriter ?? false);
  }

  get bytesMapped(): number {
    return this.mappedBytes;
  }

  get tableCount(): number {
    return this.population.size;
  }

  private indexAddress(table: number, level: number, address: number): number {
    const index = indexBitsOf(address >>> 0, Math.floor(address / 4_294_967_296) >>> 0, address, this.geometry.levelShift[level]!, this.geometry.indexBits[level]!);
    return table + index * 8;
  }

  /** The largest leaf level usable for [address, address+length) → output, or undefined. */
  private leafLevelFor(address: number, output: number, length: number): number | undefined {
    for (let level = this.allowLargePages ? this.geometry.startLevel : 1; level >= 1; level--) {
      const shift = this.geometry.levelShift[level]!;
      const size = POW2[shift]!;
      if (length >= size && Math.floor(address / size) * size === address && Math.floor(output / size) * size === output && this.format.leafAllowed(shift, level)) return level;
    }
    return undefined;
  }

  /**
   * Maps [address, address + length) to [output, output + length) with `perms`. EEXIST when any page is
   * already mapped, EINVAL for misaligned or out-of-range input, ENOMEM when a table cannot be allocated;
   * on failure what this call mapped is rolled back.
   */
  map(address: number, output: number, length: number, perms: PermBits): Result<void> {
    // Low 12 bits by 32-bit masks (exact for any integer address), not floating-point modulo.
    if (length <= 0 || !Number.isInteger(address) || !Number.isInteger(output) || (address & (PAGE_SIZE - 1)) !== 0 || (output & (PAGE_SIZE - 1)) !== 0 || (length & (PAGE_SIZE - 1)) !== 0) {
      return err("EINVAL", "map: address, output and length must be whole pages");
    }
    if (address + length > POW2[this.geometry.inputBits]!) return err("EINVAL", "map: range beyond the table's input width");
    let done = 0;
    while (done < length) {
      const level = this.leafLevelFor(address + done, output + done, length - done);
      const status = level === undefined ? "EINVAL" : this.setLeaf(address + done, output + done, level, perms);
      if (status !== undefined) {
        this.unmapRange(address, done);
        return err(status, `map: ${status === "EEXIST" ? `0x${(address + done).toString(16)} already mapped` : status === "ENOMEM" ? "out of memory for page tables" : "no leaf size fits"}`);
      }
      done += POW2[this.geometry.levelShift[level!]!]!;
    }
    this.mappedBytes += length;
    return ok();
  }

  /** Writes one leaf, creating tables on the way; the errno when the slot is taken or memory runs out. */
  private setLeaf(address: number, output: number, leafLevel: number, perms: PermBits): "EEXIST" | "ENOMEM" | undefined {
    if (leafLevel === this.cursorLevel && address >= this.cursorBase && address < this.cursorEnd) return this.setLeafIn(this.cursorTable, address, output, leafLevel, perms);
    this.settleCursor();
    let table = this.root;
    for (let level = this.geometry.startLevel; level > leafLevel; level--) {
      const at = this.indexAddress(table, level, address);
      this.store.read64Halves(at, this.entry);
      this.format.decodeEntry(this.entry[0]!, this.entry[1]!, level, this.decoded);
      if (this.decoded.kind === EntryKind.Table) {
        table = this.decoded.address;
        continue;
      }
      if (this.decoded.kind !== EntryKind.Invalid) return "EEXIST";
      const bytes = this.format.tableBytes(level - 1);
      const next = this.store.allocateTable(bytes);
      if (next === undefined) return "ENOMEM";
      this.population.set(next, 0);
      this.tableSizes.set(next, bytes);
      this.format.encodeTable(next, level, this.entry);
      this.store.write64Halves(at, this.entry[0]!, this.entry[1]!);
      this.population.set(table, this.population.get(table)! + 1);
      table = next;
    }
    if (this.soleWriter) {
      const span = POW2[this.geometry.levelShift[leafLevel]! + this.geometry.indexBits[leafLevel]!]!;
      this.cursorTable = table;
      this.cursorLevel = leafLevel;
      this.cursorBase = Math.floor(address / span) * span;
      this.cursorEnd = this.cursorBase + span;
    }
    return this.setLeafIn(table, address, output, leafLevel, perms);
  }

  /** Writes one leaf into `table`, the table at `leafLevel` covering `address`. */
  private setLeafIn(table: number, address: number, output: number, leafLevel: number, perms: PermBits): "EEXIST" | undefined {
    const at = this.indexAddress(table, leafLevel, address);
    this.store.read64Halves(at, this.entry);
    // Only "is the slot free" matters here: a layout answers it with its present bits, without a full decode.
    const layout = this.format.layout;
    if (layout !== undefined) {
      if ((this.entry[0]! & layout.presentLo) !== 0) return "EEXIST";
    } else {
      this.format.decodeEntry(this.entry[0]!, this.entry[1]!, leafLevel, this.decoded);
      if (this.decoded.kind !== EntryKind.Invalid) return "EEXIST";
    }
    this.format.encodeLeaf(output, this.geometry.levelShift[leafLevel]!, perms, leafLevel, this.entry);
    this.store.write64Halves(at, this.entry[0]!, this.entry[1]!);
    // The cursor's table is counted once it is left (two map operations per leaf add up over 512K leaves).
    if (table === this.cursorTable && this.cursorLevel !== 0) this.cursorAdded++;
    else this.population.set(table, this.population.get(table)! + 1);
    return undefined;
  }

  /** Counts the leaves written through the cursor in `population`, before anything reads or frees tables. */
  private settleCursor(): void {
    if (this.cursorAdded === 0) return;
    this.population.set(this.cursorTable, this.population.get(this.cursorTable)! + this.cursorAdded);
    this.cursorAdded = 0;
  }

  /** The leaf covering `address`: its level and the page size, or undefined when unmapped. */
  lookupLeaf(address: number): { level: number; pageShift: number; output: number } | undefined {
    let table = this.root;
    for (let level = this.geometry.startLevel; level >= 1; level--) {
      this.store.read64Halves(this.indexAddress(table, level, address), this.entry);
      this.format.decodeEntry(this.entry[0]!, this.entry[1]!, level, this.decoded);
      if (this.decoded.kind === EntryKind.Leaf) {
        const size = 2 ** this.decoded.pageShift;
        return { level, pageShift: this.decoded.pageShift, output: this.decoded.address + (address % size) };
      }
      if (this.decoded.kind !== EntryKind.Table) return undefined;
      table = this.decoded.address;
    }
    return undefined;
  }

  /** Removes the leaves in [address, address + length); returns the bytes unmapped. */
  unmap(address: number, length: number): number {
    const removed = this.unmapRange(address, length);
    this.mappedBytes -= removed;
    return removed;
  }

  private unmapRange(address: number, length: number): number {
    this.settleCursor();
    let removed = 0;
    let a = address;
    while (a < address + length) {
      const step = this.clearLeaf(a);
      if (step === 0) {
        a += PAGE_SIZE;
        continue;
      }
      removed += step;
      a = Math.floor(a / step) * step + step;
    }
    return removed;
  }

  private clearLeaf(address: number): number {
    const path: number[] = [];
    const slots: number[] = [];
    let table = this.root;
    for (let level = this.geometry.startLevel; level >= 1; level--) {
      const at = this.indexAddress(table, level, address);
      path.push(table);
      slots.push(at);
      this.store.read64Halves(at, this.entry);
      this.format.decodeEntry(this.entry[0]!, this.entry[1]!, level, this.decoded);
      if (this.decoded.kind === EntryKind.Leaf) {
        const size = 2 ** this.decoded.pageShift;
        this.store.write64Halves(at, 0, 0);
        this.release(path, slots);
        return size;
      }
      if (this.decoded.kind !== EntryKind.Table) return 0;
      table = this.decoded.address;
    }
    return 0;
  }

  /** Decrements populations up the path, freeing tables (never the root) that become empty. */
  private release(path: number[], slots: number[]): void {
    for (let i = path.length - 1; i >= 0; i--) {
      const table = path[i]!;
      const left = this.population.get(table)! - 1;
      this.population.set(table, left);
      if (left > 0 || table === this.root) return;
      this.cursorLevel = 0;
      this.store.freeTable(table, this.tableSizes.get(table)!);
      this.population.delete(table);
      this.tableSizes.delete(table);
      this.store.write64Halves(slots[i - 1]!, 0, 0);
    }
  }

  /** Frees every table of the tree. */
  destroy(): void {
    this.settleCursor();
    this.cursorLevel = 0;
    for (const [table, bytes] of this.tableSizes) this.store.freeTable(table, bytes);
    this.population.clear();
    this.tableSizes.clear();
  }
}

/** A host-owned table tree with its own walker: the paging domain of a physical IOMMU model. */
export class HostPageTable {
  private readonly walker = new PageWalker();
  private readonly reader: HostTableReader;

  private constructor(
    readonly builder: PageTableBuilder,
    host: HostMemory,
    owner: OwnerId,
  ) {
    this.reader = new HostTableReader(host, owner);
  }

  static create(host: HostMemory, owner: OwnerId, format: WritableFormat, geometry: TableGeometry, options: { largePages?: boolean } = {}): HostPageTable | undefined {
    const builder = PageTableBuilder.create(format, geometry, new HostTableStore(host, owner), { ...options, soleWriter: true });
    return builder === undefined ? undefined : new HostPageTable(builder, host, owner);
  }

  get root(): number {
    return this.builder.root;
  }

  get format(): PageTableFormat {
    return this.builder.format;
  }

  get geometry(): TableGeometry {
    return this.builder.geometry;
  }

  walk(address: number, access: PermBits, out: WalkResult): void {
    this.walker.walk(this.builder.format, this.builder.geometry, this.builder.root, address, access, this.reader, out);
  }
}
