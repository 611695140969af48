import {
  createShadowBackend,
  fail,
  forEachLeaf,
  GuestTableReader,
  ok,
  Perm,
  type IommufdContext,
  type GuestMemory,
  type PageTableFormat,
  type PermBits,
  type Result,
  type ShadowBackend,
  type ShadowBackendKind,
  type TableGeometry,
} from "@viommu/core";
import { amdV1Geometry, amdV1PageTableFormat } from "../format/page-table-v1.js";
import { amdV2Geometry, amdV2PageTableFormat } from "../format/page-table-v2.js";

/** One guest address space the VMM mirrors: a v1 table (DTE Mode 1–6), or the v2 table of PASID 0 (GV with GIoV). */
export interface ShadowSource {
  readonly kind: "v1" | "v2";
  readonly domainId: number;
  readonly root: number;
  /** DTE Mode for v1, 4 or 5 levels for v2. */
  readonly levels: number;
}

export interface ShadowSpace {
  readonly source: ShadowSource;
  readonly backend: ShadowBackend;
  /** Installed mappings: IOVA → [GPA, bytes]. */
  readonly maps: Map<number, [number, number]>;
  /** Guest DeviceIDs attached to it. */
  readonly devices: Set<number>;
}

/** Mirrors are rebuilt within the IOVA range a backend can hold. */
const IOVA_LIMIT = 2 ** 52;

function keyOf(s: ShadowSource): string {
  return `${s.kind}:${s.domainId}:${s.root}:${s.levels}`;
}

/**
 * Caching-mode emulation (the IOMMU in "emulated" mode, QEMU's amd-iommu without nesting): the VMM walks the
 * guest's tables when the guest invalidates (Linux under NpCache flushes after every map and unmap) and
 * makes a host IOAS equal to them, one space per (DomainID, table). Stale mappings are removed before new
 * ones are installed; a page the back end refuses (the type1 entry limit) stays unmapped, so the device
 * faults there rather than reaching a stale page. A v1 page the guest wrote as several identical
 * NextLevel = 7 entries is mapped once, at its natural alignment.
 */
export class ShadowSpaces {
  private readonly spaces = new Map<string, ShadowSpace>();
  private readonly reader: GuestTableReader;

  constructor(
    private readonly ctx: IommufdContext,
    private readonly memory: GuestMemory,
    private readonly backendKind: ShadowBackendKind,
    private readonly dmaEntryLimit: number | undefined,
  ) {
    this.reader = new GuestTableReader(memory);
  }

  get mappings(): number {
    let n = 0;
    for (const s of this.spaces.values()) n += s.maps.size;
    return n;
  }

  /** The space mirroring `source`, created (and filled) on first use. */
  spaceFor(source: ShadowSource): Result<ShadowSpace> {
    const key = keyOf(source);
    const existing = this.spaces.get(key);
    if (existing !== undefined) return ok(existing);
    const backend = createShadowBackend(this.backendKind, this.ctx, this.memory, this.dmaEntryLimit);
    if (!backend.ok) return fail(backend);
    const space: ShadowSpace = { source, backend: backend.value, maps: new Map(), devices: new Set() };
    this.spaces.set(key, space);
    this.resync(space, 0, IOVA_LIMIT);
    return ok(space);
  }

  /** Drops a space no device uses any more (its IOAS goes once its automatic HWPT has). */
  releaseIfUnused(space: ShadowSpace): void {
    if (space.devices.size > 0) return;
    for (const [iova, [, size]] of space.maps) space.backend.unmap(iova, size);
    space.maps.clear();
    this.spaces.delete(keyOf(space.source));
    this.ctx.destroy(space.backend.ioasId);
  }

  /** INVALIDATE_IOMMU_PAGES: every space of the DomainID over the range. */
  invalidateDomain(domainId: number, address: number, length: number): void {
    for (const s of this.spaces.values()) if (s.source.domainId === domainId) this.resync(s, address, length);
  }

  /** INVALIDATE_IOMMU_ALL. */
  invalidateAll(): void {
    for (const s of this.spaces.values()) this.resync(s, 0, IOVA_LIMIT);
  }

  destroyAll(): void {
    for (const s of [...this.spaces.values()]) {
      s.devices.clear();
      this.releaseIfUnused(s);
    }
  }

  private table(source: ShadowSource): { format: PageTableFormat; geometry: TableGeometry } {
    return source.kind === "v1" ? { format: amdV1PageTableFormat, geometry: amdV1Geometry(source.levels) } : { format: amdV2PageTableFormat, geometry: amdV2Geometry(source.levels === 5 ? 5 : 4) };
  }

  /** Makes the space equal to the guest's table over [address, address + length). */
  resync(space: ShadowSpace, address: number, length: number): void {
    const start = Math.max(0, Math.min(address, IOVA_LIMIT));
    const end = Math.min(IOVA_LIMIT, address + length);
    if (!(end > start)) return;
    for (const [iova, [, size]] of [...space.maps]) {
      if (iova < end && iova + size > start) {
        space.backend.unmap(iova, size);
        space.maps.delete(iova);
      }
    }
    const { format, geometry } = this.table(space.source);
    forEachLeaf(format, geometry, space.source.root, this.reader, start, end - start, (leaf) => {
      const size = 2 ** leaf.pageShift;
      const base = leaf.input - (leaf.input % size);
      if (base < start || base + size > end || space.maps.has(base)) return;
      const perms: PermBits = leaf.perms & Perm.ReadWrite;
      if (perms === 0 || !this.memory.contains(leaf.output, size)) return;
      if (space.backend.map(base, leaf.output, size, perms).ok) space.maps.set(base, [leaf.output, size]);
    });
  }
}
