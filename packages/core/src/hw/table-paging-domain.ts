import { err, fail, ok, type Result } from "../errors/errno.js";
import type { PagingDomain, PhysicalIommu } from "../contract/iommu-unit.js";
import { HOST_OWNER } from "../memory/host-memory.js";
import type { HostServices } from "../platform/host-services.js";
import type { PermBits } from "../translate/access.js";
import { HostPageTable, type WritableFormat } from "../translate/host-page-table.js";
import type { TableGeometry } from "../translate/page-table-format.js";
import { TableDirtyTracker, type DirtyBitFormat } from "./dirty-tracking.js";

export interface TablePagingDomainOptions {
  readonly nestParent: boolean;
  /** Use the format's large leaves where alignment allows (default true). */
  readonly largePages?: boolean;
  /** The format's dirty bit: given, the domain tracks dirty pages (IOMMU_HWPT_ALLOC_DIRTY_TRACKING). */
  readonly dirty?: DirtyBitFormat;
}

/**
 * Whoever caches translations through a domain (every unit that attached a device to it or nests on it):
 * told of every unmap, so it drops what it cached, and of the domain's end.
 */
export interface DomainCacheWatcher {
  unmapped(vmid: number, iova: number, length: number): void;
  destroyed(vmid: number): void;
}

/**
 * A paging domain whose table lives in host memory in a vendor's format: the usual shape of a host stage-2
 * (or single-stage) domain. It takes a VMID from the host-wide space, so every vIOMMU of a VM that shares this
 * parent, on any unit, tags its translations with the same VMID; each such unit watches the domain so that a
 * stage-2 unmap reaches every cache.
 */
export class TablePagingDomain implements PagingDomain {
  readonly kind = "paging" as const;
  private destroyed = false;
  private readonly watchers = new Set<DomainCacheWatcher>();
  /** Present when the domain was allocated for dirty tracking. */
  readonly dirtyOps: TableDirtyTracker | undefined;

  private constructor(
    readonly unit: PhysicalIommu,
    readonly table: HostPageTable,
    readonly vmid: number,
    readonly nestParent: boolean,
    private readonly host: HostServices,
    dirty: DirtyBitFormat | undefined,
  ) {
    this.dirtyOps =
      dirty === undefined
        ? undefined
        : new TableDirtyTracker(host.memory, table.format, dirty, table.geometry, () => table.root, {
            // Cleared dirty state must be re-marked by the next write: every cache of the range forgets it.
            flush: (iova, length) => {
              for (const w of this.watchers) w.unmapped(this.vmid, iova, length);
            },
          });
  }

  static create(unit: PhysicalIommu, host: HostServices, format: WritableFormat, geometry: TableGeometry, options: TablePagingDomainOptions): Result<TablePagingDomain> {
    const vmid = host.vmids.allocate();
    if (!vmid.ok) return fail(vmid);
    const table = HostPageTable.create(host.memory, HOST_OWNER, format, geometry, { largePages: options.largePages });
    if (table === undefined) {
      host.vmids.release(vmid.value);
      return err("ENOMEM", "no host memory for the domain's root table");
    }
    const domain = new TablePagingDomain(unit, table, vmid.value, options.nestParent, host, options.dirty);
    host.vmids.onFree(vmid.value, () => domain.free());
    return ok(domain);
  }

  retainTag(): void {
    this.host.vmids.retain(this.vmid);
  }

  releaseTag(): void {
    this.host.vmids.release(this.vmid);
  }

  /** Registers a cache to be told of unmaps (idempotent per watcher). */
  watch(watcher: DomainCacheWatcher): void {
    this.watchers.add(watcher);
  }

  map(iova: number, hpa: number, length: number, perms: PermBits): Result<void> {
    return this.table.builder.map(iova, hpa, length, perms);
  }

  unmap(iova: number, length: number): number {
    const removed = this.table.builder.unmap(iova, length);
    if (removed > 0) for (const w of this.watchers) w.unmapped(this.vmid, iova, length);
    return removed;
  }

  /** Whether its owner destroyed it (its table and VMID may outlive that while attachments still hold them). */
  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /**
   * The owner is done with the domain. Its VMID and table live on until every holder of the VMID (the core
   * holds it for each attached device) has let go: a device still pointing at the domain keeps translating
   * through its own (emptied) table, and no other domain can take the VMID meanwhile.
   */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.host.vmids.release(this.vmid);
  }

  /** The VMID's last holder let go: every cache drops what it tagged with it, and the table's pages are freed. */
  private free(): void {
    for (const w of this.watchers) w.destroyed(this.vmid);
    this.watchers.clear();
    this.table.builder.destroy();
  }
}
