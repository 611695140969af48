import { err, ok, type Result } from "../errors/errno.js";
import type { MmioRegion } from "../contract/viommu-ops.js";
import { PAGE_SIZE } from "../memory/page.js";
import { drop, hold, type IommufdObject } from "./object-table.js";

interface MmapEntry {
  readonly offset: number;
  readonly length: number;
  readonly physicalBase: number;
  readonly owner: IommufdObject;
  readonly region: MmioRegion;
}

export interface MmapRequest {
  readonly offset: number;
  readonly length: number;
  readonly shared: boolean;
  readonly prot: { readonly read?: boolean; readonly write?: boolean; readonly exec?: boolean };
}

/** A live mapping of a vIOMMU's MMIO into the VMM: it pins its owner (destroy answers EBUSY) until unmapped. */
export class MmapHandle {
  private live = true;

  constructor(
    readonly region: MmioRegion,
    readonly length: number,
    private readonly owner: IommufdObject,
  ) {
    hold(owner);
  }

  unmap(): void {
    if (!this.live) return;
    this.live = false;
    drop(this.owner);
  }

  get isLive(): boolean {
    return this.live;
  }
}

/**
 * The context-wide table of mmap-able MMIO ranges (Linux's `mt_mmap`): byte offsets from PAGE_SIZE upward
 * (0 is never used), exact-start and exact-length lookups.
 */
export class MmapTable {
  private readonly entries = new Map<number, MmapEntry>();
  private next = PAGE_SIZE;

  alloc(owner: IommufdObject, physicalBase: number, length: number, region: MmioRegion): Result<number> {
    if (physicalBase % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0 || length <= 0) return err("EINVAL", "mmap region must be page-aligned");
    const offset = this.next;
    this.next += length;
    this.entries.set(offset, { offset, length, physicalBase, owner, region });
    return ok(offset);
  }

  destroy(offset: number): void {
    this.entries.delete(offset);
  }

  /** The VMM's mmap(): EINVAL unaligned length or not shared, EPERM exec, ENXIO no entry at exactly that offset and length. */
  mmap(request: MmapRequest): Result<MmapHandle> {
    if (request.length % PAGE_SIZE !== 0 || request.length <= 0) return err("EINVAL", "mmap length must be whole pages");
    if (!request.shared) return err("EINVAL", "mmap must be MAP_SHARED");
    if (request.prot.exec) return err("EPERM", "mmap of MMIO cannot be executable");
    const entry = this.entries.get(request.offset);
    if (entry === undefined || entry.length !== request.length) return err("ENXIO", `no mmap region at offset 0x${request.offset.toString(16)} of length 0x${request.length.toString(16)}`);
    return ok(new MmapHandle(entry.region, entry.length, entry.owner));
  }
}
