import { err, ok, type Result } from "../errors/errno.js";
import type { PagingDomain } from "../contract/iommu-unit.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import { PAGE_SIZE } from "../memory/page.js";
import { Perm, type PermBits } from "../translate/access.js";
import { IommufdObject } from "./object-table.js";
import { IommufdObjectType } from "./uapi.js";

/**
 * One mapping of an IOAS: [iova, iova + length) → guest memory from `gpa`. The VMM's "user VA" is the
 * guest's RAM itself, so the source is a (memory, address) pair, like IOAS_MAP_FILE on a memfd.
 */
export interface IoasArea {
  readonly iova: number;
  readonly length: number;
  readonly memory: GuestMemory;
  readonly gpa: number;
  readonly perms: PermBits;
  /** HW queues holding this area pinned and locked: unmap answers EBUSY while nonzero. */
  locks: number;
}

/**
 * An I/O address space: the areas userspace mapped, and every paging domain that mirrors them. Mapping an
 * area pins its pages and writes them into each domain; unmapping removes them from each domain (which
 * invalidates its unit's caches).
 */
export class Ioas extends IommufdObject {
  readonly type = IommufdObjectType.IOAS;
  /** Sorted by iova, non-overlapping. */
  readonly areas: IoasArea[] = [];
  readonly domains = new Set<PagingDomain>();

  release(): void {
    this.areas.length = 0;
  }

  private overlaps(iova: number, length: number): boolean {
    return this.areas.some((a) => iova < a.iova + a.length && a.iova < iova + length);
  }

  /** Lowest free, page-aligned hole of `length` bytes (the IOVA allocator). */
  findHole(length: number, limit: number): number | undefined {
    let candidate = PAGE_SIZE;
    for (const a of this.areas) {
      if (candidate + length <= a.iova) break;
      candidate = Math.max(candidate, a.iova + a.length);
    }
    return candidate + length <= limit ? candidate : undefined;
  }

  /** Adds an area and maps it into every domain; EEXIST on overlap, ENOMEM/EFAULT when pinning fails. */
  addArea(area: IoasArea): Result<void> {
    if (this.overlaps(area.iova, area.length)) return err("EEXIST", `IOVA range 0x${area.iova.toString(16)}+0x${area.length.toString(16)} overlaps a mapping`);
    const mapped: PagingDomain[] = [];
    for (const domain of this.domains) {
      const r = mapAreaInto(domain, area);
      if (!r.ok) {
        for (const d of mapped) d.unmap(area.iova, area.length);
        return r;
      }
      mapped.push(domain);
    }
    const at = this.areas.findIndex((a) => a.iova > area.iova);
    this.areas.splice(at < 0 ? this.areas.length : at, 0, area);
    return ok();
  }

  /**
   * Removes the areas inside [iova, iova + length): ENOENT when the range splits an area or covers none, EBUSY
   * when a covered area is locked. Returns the bytes unmapped.
   */
  removeRange(iova: number, length: number): Result<number> {
    const last = iova + length - 1;
    const covered = this.areas.filter((a) => a.iova <= last && a.iova + a.length - 1 >= iova);
    if (covered.length === 0) return err("ENOENT", "no mapping in the range");
    if (covered.some((a) => a.iova < iova || a.iova + a.length - 1 > last)) return err("ENOENT", "range splits a mapping");
    if (covered.some((a) => a.locks > 0)) return err("EBUSY", "range holds memory pinned by a HW queue");
    let bytes = 0;
    for (const a of covered) {
      for (const d of this.domains) d.unmap(a.iova, a.length);
      this.areas.splice(this.areas.indexOf(a), 1);
      bytes += a.length;
    }
    return ok(bytes);
  }

  /** The areas covering [iova, iova + length) exactly, in order; undefined when any byte is unmapped. */
  areasCovering(iova: number, length: number): IoasArea[] | undefined {
    const out: IoasArea[] = [];
    let at = iova;
    const end = iova + length;
    while (at < end) {
      const area = this.areas.find((a) => a.iova <= at && at < a.iova + a.length);
      if (area === undefined) return undefined;
      out.push(area);
      at = area.iova + area.length;
    }
    return out;
  }

  /** The guest address an IOVA of this IOAS maps to, or undefined. */
  gpaOf(iova: number): { memory: GuestMemory; gpa: number; perms: PermBits } | undefined {
    const area = this.areas.find((a) => a.iova <= iova && iova < a.iova + a.length);
    return area === undefined ? undefined : { memory: area.memory, gpa: area.gpa + (iova - area.iova), perms: area.perms };
  }
}

/**
 * Pins an area's pages and writes them into a domain, in runs that are contiguous on the host so the domain
 * can use large leaves where the backing allows.
 */
export function mapAreaInto(domain: PagingDomain, area: IoasArea): Result<void> {
  let done = 0;
  while (done < area.length) {
    const first = area.memory.pinRun(area.gpa + done, area.length - done);
    if (first === undefined) {
      domain.unmap(area.iova, done);
      return area.memory.contains(area.gpa + done) ? err("ENOMEM", "host out of memory pinning guest RAM") : err("EFAULT", "mapping source outside guest RAM");
    }
    // Extend the run while the next backing page follows on the host, up to 1 GiB at a time.
    let run = first.length;
    while (done + run < area.length && run < 2 ** 30) {
      const next = area.memory.pinRun(area.gpa + done + run, area.length - done - run);
      if (next === undefined || next.hpa !== first.hpa + run) break;
      run += next.length;
    }
    const r = domain.map(area.iova + done, first.hpa, run, area.perms);
    if (!r.ok) {
      domain.unmap(area.iova, done);
      return r;
    }
    done += run;
  }
  return ok();
}

export function permsFromMapFlags(readable: boolean, writeable: boolean): PermBits {
  return (readable ? Perm.Read : 0) | (writeable ? Perm.Write : 0);
}
