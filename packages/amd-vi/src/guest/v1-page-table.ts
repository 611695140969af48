import { EntryKind, err, newEntryDecode, ok, Perm, type GuestMemory, type PageSource, type PermBits, type Result } from "@viommu/core";
import {
  amdV1PageTableEncoder,
  amdV1PageTableFormat,
  v1ContiguousEntries,
  v1LevelShift,
  V1_LINUX_EXCLUDED_PAGE_SHIFT,
  V1_MAX_LEVELS,
  V1_MAX_PAGE_SHIFT,
} from "../format/page-table-v1.js";

/** Linux starts a v1 table at its third level (DTE Mode 3, 39-bit IOVA) and grows the top on demand (PT_FEAT_DYNAMIC_TOP). */
const LINUX_START_MODE = 3;

/**
 * A guest's host (v1) page table written the way Linux's generic_pt amdv1 writes it: tables PR | NextLevel
 * L−1 | IR | IW; leaves PR | FC | IR/IW, at the level's default size with NextLevel 0, or any other size the
 * level allows with NextLevel 7, the size encoded in the address, and the same entry written into every slot
 * the page covers. Page sizes are chosen as iommu_map does (the largest size the alignment of IOVA and
 * address and the remaining length allow, never 512 GiB). The top level starts at 3 and grows when an IOVA
 * needs it; `onGrow` lets the driver reprogram the DTEs. Freed leaves leave their tables in place.
 */
export class V1PageTable {
  private rootAddress: number;
  private levels = LINUX_START_MODE;
  private readonly entry = new Uint32Array(2);
  private readonly decoded = newEntryDecode();

  private constructor(
    private readonly memory: GuestMemory,
    private readonly pages: PageSource,
    root: number,
  ) {
    this.rootAddress = root;
  }

  static create(memory: GuestMemory, pages: PageSource): V1PageTable | undefined {
    const root = pages.allocate(1);
    return root === undefined ? undefined : new V1PageTable(memory, pages, root);
  }

  get root(): number {
    return this.rootAddress;
  }

  /** DTE Mode: the number of levels. */
  get mode(): number {
    return this.levels;
  }

  private slot(table: number, level: number, iova: number): number {
    const shift = v1LevelShift(level);
    const bits = level === V1_MAX_LEVELS ? 7 : 9;
    return table + (Math.floor(iova / 2 ** shift) % 2 ** bits) * 8;
  }

  /** Raises the top level until IOVAs below `end` fit. False when the top cannot go higher or memory runs out. */
  private growTo(end: number): boolean {
    while (this.levels < V1_MAX_LEVELS && end > 2 ** v1LevelShift(this.levels + 1)) {
      const top = this.pages.allocate(1);
      if (top === undefined) return false;
      amdV1PageTableEncoder.encodeTable(this.rootAddress, this.levels + 1, this.entry);
      this.memory.write64Halves(top, this.entry[0]!, this.entry[1]!);
      this.rootAddress = top;
      this.levels++;
    }
    return end <= (this.levels === V1_MAX_LEVELS ? 2 ** 64 : 2 ** v1LevelShift(this.levels + 1));
  }

  /** The largest page Linux would map at `iova` → `address` with `length` left (iommu_pgsize). */
  private pageShiftFor(iova: number, address: number, length: number): number {
    for (let shift = V1_MAX_PAGE_SHIFT; shift > 12; shift--) {
      const size = 2 ** shift;
      if (shift !== V1_LINUX_EXCLUDED_PAGE_SHIFT && size <= length && iova % size === 0 && address % size === 0) return shift;
    }
    return 12;
  }

  /**
   * Maps [iova, iova + length) to guest-physical [address, …) with `perms`. EINVAL for unaligned input,
   * EEXIST when a page is already mapped (what was mapped by this call is undone), ENOMEM for table memory.
   */
  map(iova: number, address: number, length: number, perms: PermBits, onGrow: () => void): Result<void> {
    if (length <= 0 || iova % 4096 !== 0 || address % 4096 !== 0 || length % 4096 !== 0) return err("EINVAL", "v1 map: addresses and length must be whole 4 KiB pages");
    if (!Number.isSafeInteger(iova + length) || !Number.isSafeInteger(address + length) || address + length > 2 ** 52) return err("EINVAL", "v1 map: range beyond 52 bits");
    const levelsBefore = this.levels;
    if (!this.growTo(iova + length)) return err("ENOMEM", "v1 map: no memory to grow the table");
    if (this.levels !== levelsBefore) onGrow();
    let done = 0;
    while (done < length) {
      const shift = this.pageShiftFor(iova + done, address + done, length - done);
      const status = this.setLeaf(iova + done, address + done, shift, perms);
      if (status !== undefined) {
        this.unmap(iova, done);
        return err(status, status === "EEXIST" ? `v1 map: 0x${(iova + done).toString(16)} already mapped` : "v1 map: out of table memory");
      }
      done += 2 ** shift;
    }
    return ok();
  }

  private leafLevel(shift: number): number {
    return Math.floor((shift - 12) / 9) + 1;
  }

  private setLeaf(iova: number, address: number, shift: number, perms: PermBits): "EEXIST" | "ENOMEM" | undefined {
    const leafLevel = this.leafLevel(shift);
    let table = this.rootAddress;
    for (let level = this.levels; level > leafLevel; level--) {
      const at = this.slot(table, level, iova);
      this.memory.read64Halves(at, this.entry);
      amdV1PageTableFormat.decodeEntry(this.entry[0]!, this.entry[1]!, level, this.decoded);
      if (this.decoded.kind === EntryKind.Table) {
        // A corrupted entry pointing outside RAM is treated as occupied rather than followed.
        if (!this.memory.contains(this.decoded.address, 4096)) return "EEXIST";
        table = this.decoded.address;
        continue;
      }
      if (this.decoded.kind !== EntryKind.Invalid) return "EEXIST";
      const next = this.pages.allocate(1);
      if (next === undefined) return "ENOMEM";
      amdV1PageTableEncoder.encodeTable(next, level, this.entry);
      this.memory.write64Halves(at, this.entry[0]!, this.entry[1]!);
      table = next;
    }
    const copies = v1ContiguousEntries(shift, leafLevel);
    const first = this.slot(table, leafLevel, iova);
    for (let i = 0; i < copies; i++) {
      this.memory.read64Halves(first + i * 8, this.entry);
      if ((this.entry[0]! & 1) !== 0) return "EEXIST";
    }
    amdV1PageTableEncoder.encodeLeaf(address, shift, perms & Perm.ReadWrite, leafLevel, this.entry);
    const lo = this.entry[0]!;
    const hi = this.entry[1]!;
    for (let i = 0; i < copies; i++) this.memory.write64Halves(first + i * 8, lo, hi);
    return undefined;
  }

  /** Unmaps whole pages overlapping [iova, iova + length) (every copy of a size-encoded page); returns bytes unmapped. */
  unmap(iova: number, length: number): number {
    let removed = 0;
    let at = iova;
    const end = iova + length;
    for (let guard = 0; at < end && guard < 1 << 22; guard++) {
      const size = this.clearLeaf(at);
      if (size === 0) {
        at += 4096;
        continue;
      }
      removed += size;
      at = Math.floor(at / size) * size + size;
    }
    return removed;
  }

  private clearLeaf(iova: number): number {
    if (iova >= 2 ** v1LevelShift(this.levels + 1) && this.levels < V1_MAX_LEVELS) return 0;
    let table = this.rootAddress;
    for (let level = this.levels; level >= 1; level--) {
      const at = this.slot(table, level, iova);
      this.memory.read64Halves(at, this.entry);
      amdV1PageTableFormat.decodeEntry(this.entry[0]!, this.entry[1]!, level, this.decoded);
      if (this.decoded.kind === EntryKind.Leaf) {
        const shift = this.decoded.pageShift;
        const copies = v1ContiguousEntries(shift, level);
        const first = this.slot(table, level, iova - (iova % 2 ** shift));
        for (let i = 0; i < copies; i++) this.memory.write64Halves(first + i * 8, 0, 0);
        return 2 ** shift;
      }
      if (this.decoded.kind !== EntryKind.Table || !this.memory.contains(this.decoded.address, 4096)) return 0;
      table = this.decoded.address;
    }
    return 0;
  }
}
