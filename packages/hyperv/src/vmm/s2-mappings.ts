import { ok, type IommuError, type Result } from "@viommu/core";

const PAGE = 4096;

/** Where a stage-2 device domain's mappings go on the host: the domain's IOAS. */
export interface IoasPort {
  map(iova: number, gpa: number, length: number, writable: boolean): Result<void>;
  unmap(iova: number, length: number): Result<number>;
}

interface Area {
  readonly startPage: number;
  readonly count: number;
  readonly gpaPage: number;
  readonly writable: boolean;
}

/** One mapped page as the guest asked for it. */
export interface S2Page {
  readonly gpaPage: number;
  readonly writable: boolean;
}

/**
 * The pages of a stage-2 device domain (HVCALL_MAP/UNMAP_DEVICE_GPA_PAGES), kept as runs: each run of
 * consecutive IOVA pages to consecutive GPA pages mapped by one call is one IOAS area, so a guest mapping
 * gigabytes costs a few areas, not one per page. An unmap that cuts a run re-maps the parts it keeps.
 */
export class S2Mappings {
  private readonly byPage = new Map<number, Area>();
  private readonly areas = new Set<Area>();

  constructor(private readonly port: IoasPort) {}

  /** Pages mapped. */
  get size(): number {
    return this.byPage.size;
  }

  get areaCount(): number {
    return this.areas.size;
  }

  lookup(iovaPage: number): S2Page | undefined {
    const a = this.byPage.get(iovaPage);
    return a === undefined ? undefined : { gpaPage: a.gpaPage + (iovaPage - a.startPage), writable: a.writable };
  }

  has(iovaPage: number): boolean {
    return this.byPage.has(iovaPage);
  }

  /** Maps `count` pages from `startPage` to `gpaPage` on; the caller checked they are free. */
  mapRun(startPage: number, gpaPage: number, count: number, writable: boolean): Result<void> {
    const r = this.port.map(startPage * PAGE, gpaPage * PAGE, count * PAGE, writable);
    if (!r.ok) return r;
    this.add({ startPage, count, gpaPage, writable });
    return ok();
  }

  private add(area: Area): void {
    this.areas.add(area);
    for (let i = 0; i < area.count; i++) this.byPage.set(area.startPage + i, area);
  }

  private remove(area: Area): void {
    this.areas.delete(area);
    for (let i = 0; i < area.count; i++) this.byPage.delete(area.startPage + i);
  }

  /**
   * Unmaps [startPage, startPage + count): whole runs inside it go; a run it cuts is unmapped and its kept parts
   * mapped again. `removed` counts the pages no longer mapped (pages never mapped are skipped, as the hypervisor
   * skips them). On a host refusal it stops there: a run whose unmap was refused stays; a kept part whose
   * re-map was refused is gone and counted in `removed`, so the bookkeeping is what the host holds.
   */
  unmapRange(startPage: number, count: number): { removed: number; error: IommuError | undefined } {
    const hit = new Set<Area>();
    for (let p = startPage; p < startPage + count; p++) {
      const a = this.byPage.get(p);
      if (a !== undefined) hit.add(a);
    }
    let removed = 0;
    for (const a of hit) {
      const r = this.port.unmap(a.startPage * PAGE, a.count * PAGE);
      if (!r.ok) return { removed, error: r.error };
      this.remove(a);
      const keepLeft = Math.max(0, Math.min(a.count, startPage - a.startPage));
      const rightFrom = Math.max(0, startPage + count - a.startPage);
      const keepRight = Math.max(0, a.count - rightFrom);
      removed += a.count - keepLeft - keepRight;
      if (keepLeft > 0) {
        const left = this.mapRun(a.startPage, a.gpaPage, keepLeft, a.writable);
        if (!left.ok) return { removed: removed + keepLeft + keepRight, error: left.error };
      }
      if (keepRight > 0) {
        const right = this.mapRun(a.startPage + rightFrom, a.gpaPage + rightFrom, keepRight, a.writable);
        if (!right.ok) return { removed: removed + keepRight, error: right.error };
      }
    }
    return { removed, error: undefined };
  }

  /** Every run, for save/restore: [iova page, gpa page, pages, writable]. */
  runs(): [number, number, number, boolean][] {
    return [...this.areas].sort((x, y) => x.startPage - y.startPage).map((a) => [a.startPage, a.gpaPage, a.count, a.writable]);
  }

  /** Forgets every run: the domain's IOAS was destroyed, and its mappings with it. */
  forget(): void {
    this.areas.clear();
    this.byPage.clear();
  }
}
