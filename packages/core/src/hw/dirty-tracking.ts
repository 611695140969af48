import { err, ok, type Result } from "../errors/errno.js";
import type { HostMemory } from "../memory/host-memory.js";
import { EntryKind, newEntryDecode, type PageTableFormat, type TableGeometry } from "../translate/page-table-format.js";
import { HostTableReader } from "../translate/entry-readers.js";
import { HOST_OWNER } from "../memory/host-memory.js";
import type { WalkResult } from "../translate/walk-result.js";

/**
 * Where a format keeps a leaf's dirty state, as the hardware sets it on a write (a dirty bit in the leaf, or a
 * writable-clean encoding the hardware turns writable-dirty). Functions of a leaf entry's 32-bit halves.
 */
export interface DirtyBitFormat {
  isDirty(lo: number, hi: number, level: number): boolean;
  /** The entry with its dirty state set (`dirty`) or cleared, into out[0] (lo) and out[1] (hi). */
  withDirty(lo: number, hi: number, level: number, dirty: boolean, out: Uint32Array): void;
}

/**
 * Dirty tracking of a paging domain (Linux `struct iommu_dirty_ops`). Optional on a `PagingDomain`: present only
 * on domains allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING.
 */
export interface DirtyOps {
  readonly tracking: boolean;
  /**
   * Turns tracking on or off. Turning it on first clears every dirty bit (a clean snapshot), as iommufd's
   * iopt_set_dirty_tracking does, and drops what the units cached so the next write walks and marks.
   */
  setDirtyTracking(enable: boolean): Result<void>;
  /**
   * Reports each dirty leaf overlapping [iova, iova + length) through `record` (the leaf's whole range: a 2 MiB
   * leaf is 2 MiB dirty) and clears it unless `noClear`; cleared ranges are flushed from the units' caches,
   * as the kernel syncs the IOTLB after read_and_clear_dirty.
   */
  readAndClearDirty(iova: number, length: number, noClear: boolean, record: (iova: number, length: number) => void): Result<void>;
  /**
   * The hardware's side: a write just translated through this domain and `walk` holds its leaf (a successful
   * walk's last entry). Sets the leaf's dirty bit when tracking is on, or always with `force` (hardware whose
   * dirty-bit updates are enabled by the table's configuration rather than by iommufd marks whether or not
   * iommufd reads them).
   * Returns whether it marked.
   */
  markWritten(walk: WalkResult, force?: boolean): boolean;
}

/** Who must forget cached translations of a range whose dirty state was cleared. */
export interface DirtyFlush {
  flush(iova: number, length: number): void;
}

/**
 * The dirty state of one host-owned table tree: set by the model's hardware at the leaf of each write, read
 * and cleared by iommufd. Bits live in the table entries themselves, where the format says.
 */
export class TableDirtyTracker implements DirtyOps {
  private on = false;
  private readonly entry = new Uint32Array(2);
  private readonly updated = new Uint32Array(2);
  private readonly reader: HostTableReader;

  constructor(
    private readonly host: HostMemory,
    private readonly format: PageTableFormat,
    private readonly dirty: DirtyBitFormat,
    private readonly geometry: TableGeometry,
    private readonly root: () => number,
    private readonly caches: DirtyFlush,
  ) {
    this.reader = new HostTableReader(host, HOST_OWNER);
  }

  get tracking(): boolean {
    return this.on;
  }

  setDirtyTracking(enable: boolean): Result<void> {
    if (enable && !this.on) this.sweep(0, 2 ** this.geometry.inputBits, false, undefined);
    this.on = enable;
    this.caches.flush(0, 2 ** this.geometry.inputBits);
    return ok();
  }

  readAndClearDirty(iova: number, length: number, noClear: boolean, record: (iova: number, length: number) => void): Result<void> {
    if (!(length > 0) || !(iova >= 0) || iova + length > 2 ** this.geometry.inputBits) return err("EINVAL", "range outside the domain");
    this.sweep(iova, length, noClear, record);
    if (!noClear) this.caches.flush(iova, length);
    return ok();
  }

  markWritten(walk: WalkResult, force = false): boolean {
    if ((!this.on && !force) || !walk.ok || !walk.mapped) return false;
    const at = walk.entryAddress;
    if (!this.host.isAllocated(at)) return false;
    this.host.read64Halves(at, this.entry);
    if (this.dirty.isDirty(this.entry[0]!, this.entry[1]!, walk.level)) return false;
    this.dirty.withDirty(this.entry[0]!, this.entry[1]!, walk.level, true, this.updated);
    this.host.write64Halves(at, this.updated[0]!, this.updated[1]!);
    return true;
  }

  private readonly decode = newEntryDecode();

  /**
   * Visits the leaves of [iova, iova + length), recording and (unless `keep`) clearing the dirty ones. Level-1
   * entries are leaves in every format, so a clean one is skipped on its dirty bit without a decode: a sweep of a
   * GiB of 4 KiB leaves costs one 64-bit read a page.
   */
  private sweep(iova: number, length: number, keep: boolean, record: ((iova: number, length: number) => void) | undefined): void {
    this.sweepTable(this.root(), this.geometry.startLevel, 0, iova, iova + length, keep, record, { budget: 1 << 24 });
  }

  private sweepTable(table: number, level: number, base: number, from: number, end: number, keep: boolean, record: ((iova: number, length: number) => void) | undefined, limit: { budget: number }): void {
    const span = 2 ** this.geometry.levelShift[level]!;
    const count = 2 ** this.geometry.indexBits[level]!;
    const entry = this.entry;
    for (let i = Math.max(0, Math.floor((from - base) / span)); i < count; i++) {
      const input = base + i * span;
      if (input >= end || --limit.budget < 0) return;
      const address = table + i * 8;
      if ((address & 7) !== 0 || this.host.ownerOf(address) !== HOST_OWNER) continue;
      this.host.read64Halves(address, entry);
      if (level === 1 && !this.dirty.isDirty(entry[0]!, entry[1]!, 1)) continue;
      this.format.decodeEntry(entry[0]!, entry[1]!, level, this.decode);
      const d = this.decode;
      if (d.kind === EntryKind.Table) {
        if (d.nextLevel < level && d.nextLevel >= 1) this.sweepTable(d.address, d.nextLevel, input, from, end, keep, record, limit);
        continue;
      }
      if (d.kind !== EntryKind.Leaf || !this.dirty.isDirty(entry[0]!, entry[1]!, level)) continue;
      // A page larger than its slot (a size-encoded page repeated over several slots) is reported from its start.
      const size = 2 ** d.pageShift;
      const start = input - (input % size);
      const lo = Math.max(start, from);
      const hi = Math.min(start + size, end);
      if (hi > lo) record?.(lo, hi - lo);
      if (keep) continue;
      this.dirty.withDirty(entry[0]!, entry[1]!, level, false, this.updated);
      this.host.write64Halves(address, this.updated[0]!, this.updated[1]!);
    }
  }
}
