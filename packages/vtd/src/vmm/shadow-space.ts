import { forEachLeaf, Perm, type EntryReader, type GuestMemory, type PageTableFormat, type PermBits, type ShadowBackend, type TableGeometry } from "@viommu/core";

/** Entries a full resynchronisation may read, so a guest table that points back at itself cannot stall the VMM. */
export const SHADOW_RESYNC_BUDGET = 1 << 18;
const PAGE = 4096;
const INTERRUPT_FIRST = 0xfee0_0000;
const INTERRUPT_LAST = 0xfeef_ffff;

interface Mapping {
  readonly gpa: number;
  readonly size: number;
  readonly perms: PermBits;
}

/**
 * One shadowed guest address space (a guest domain's second- or first-level table): the mappings the VMM
 * computed from the guest's table and installed in a host address space through a shadow back end. Caching
 * mode makes the guest announce every change with an invalidation; `resync` then makes the shadow equal to the
 * guest's table over the range: stale mappings removed, present leaves installed. A leaf the back end refuses
 * (the type1 entry limit) stays unmapped, so the device faults there rather than reach a stale page.
 */
export class ShadowSpace {
  readonly maps = new Map<number, Mapping>();
  users = 0;

  constructor(
    readonly key: string,
    readonly did: number,
    readonly backend: ShadowBackend,
    private readonly format: PageTableFormat,
    private readonly geometry: TableGeometry,
    private readonly root: number,
    private readonly reader: EntryReader,
    private readonly memory: GuestMemory,
    /** First-level leaves need U/S for the device's user requests. */
    private readonly needsUser: boolean,
  ) {}

  private drop(iova: number): void {
    const m = this.maps.get(iova);
    if (m === undefined) return;
    this.backend.unmap(iova, m.size);
    this.maps.delete(iova);
  }

  /** Removes every mapping overlapping [start, start + length). */
  private dropOverlapping(start: number, length: number): void {
    if (length <= 512 * PAGE) {
      for (let p = start - (start % PAGE); p < start + length; p += PAGE) this.drop(p);
      // A large mapping that starts before the range but covers part of it.
      for (const shift of [21, 30]) {
        const base = start - (start % 2 ** shift);
        const m = this.maps.get(base);
        if (m !== undefined && base + m.size > start) this.drop(base);
      }
      return;
    }
    for (const [iova, m] of [...this.maps]) if (iova < start + length && iova + m.size > start) this.drop(iova);
  }

  /** Makes the shadow equal to the guest's table over [address, address + length) (length Infinity: everything). */
  resync(address: number, length: number): void {
    const span = Number.isFinite(length) ? length : 2 ** this.geometry.inputBits - address;
    if (span <= 0) return;
    if (!Number.isFinite(length)) for (const iova of [...this.maps.keys()]) this.drop(iova);
    else this.dropOverlapping(address, span);
    forEachLeaf(
      this.format,
      this.geometry,
      this.root,
      this.reader,
      address,
      span,
      (leaf) => {
        const size = 2 ** leaf.pageShift;
        if (this.needsUser && (leaf.perms & Perm.User) === 0) return;
        const perms = leaf.perms & Perm.ReadWrite;
        if (perms === 0 || !this.memory.contains(leaf.output, size)) return;
        if (leaf.output <= INTERRUPT_LAST && leaf.output + size - 1 >= INTERRUPT_FIRST) return;
        this.dropOverlapping(leaf.input, size);
        if (this.backend.map(leaf.input, leaf.output, size, perms).ok) this.maps.set(leaf.input, { gpa: leaf.output, size, perms });
      },
      SHADOW_RESYNC_BUDGET,
    );
  }

  /** Removes every mapping (the space is going away). */
  clear(): void {
    for (const iova of [...this.maps.keys()]) this.drop(iova);
  }
}
