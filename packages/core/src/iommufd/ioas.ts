import { err, ok, type Result } from "../errors/errno.js";
import type { Hpa } from "../address/addresses.js";
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
  /**
   * Where the pages came from: a user VA (IOAS_MAP) or a file (IOAS_MAP_FILE). IOAS_CHANGE_PROCESS can move
   * only file-backed pages to another process.
   */
  readonly source: "user" | "file";
}

/** An inclusive IOVA interval, in 64-bit arithmetic (the top of the space is U64_MAX). */
export interface IovaRange {
  readonly start: bigint;
  readonly last: bigint;
}

/** A reserved interval and who reserved it (a device's reserved regions, a domain's aperture). */
export interface ReservedRange extends IovaRange {
  readonly owner: object;
}

const U64_LAST = (1n << 64n) - 1n;

function intersects(a: IovaRange, start: bigint, last: bigint): boolean {
  return a.start <= last && start <= a.last;
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
  /** Reserved intervals (devices' reserved regions, domains' apertures): never mapped, never allocated. */
  readonly reserved: ReservedRange[] = [];
  /** IOMMU_IOAS_ALLOW_IOVAS: when non-empty, automatic allocation stays inside, and reservations may not narrow it. */
  allowed: IovaRange[] = [];
  /** IOMMU_OPTION_HUGE_PAGES: whether domains may map this IOAS with large leaves. */
  hugePages = true;

  release(): void {
    this.areas.length = 0;
  }

  /** The minimum IOVA alignment for MAP and COPY (`out_iova_alignment`): the system page. */
  get iovaAlignment(): number {
    return PAGE_SIZE;
  }

  private overlaps(iova: number, length: number): boolean {
    return this.areas.some((a) => iova < a.iova + a.length && a.iova < iova + length);
  }

  private reservedHit(start: bigint, last: bigint): boolean {
    return this.reserved.some((r) => intersects(r, start, last));
  }

  /**
   * Lowest free, aligned hole of `length` bytes below `limit`, outside reserved intervals and (when any are set)
   * inside an allowed one: the IOVA allocator.
   */
  findHole(length: number, limit: number): number | undefined {
    const windows = this.allowed.length > 0 ? this.allowed : [{ start: 0n, last: U64_LAST }];
    let best: number | undefined;
    for (const w of windows) {
      let candidate = Math.max(PAGE_SIZE, Number(w.start));
      candidate = Math.ceil(candidate / PAGE_SIZE) * PAGE_SIZE;
      const windowEnd = Math.min(limit, Number(w.last) + 1);
      for (let guard = 0; guard <= this.areas.length + this.reserved.length + 1 && candidate + length <= windowEnd; guard++) {
        const start = BigInt(candidate);
        const last = BigInt(candidate + length - 1);
        const area = this.areas.find((a) => candidate < a.iova + a.length && a.iova < candidate + length);
        const resv = this.reserved.find((r) => intersects(r, start, last));
        if (area === undefined && resv === undefined) {
          if (best === undefined || candidate < best) best = candidate;
          break;
        }
        const past = Math.max(area === undefined ? 0 : area.iova + area.length, resv === undefined ? 0 : Math.min(Number(resv.last) + 1, Number.MAX_SAFE_INTEGER));
        candidate = Math.ceil(past / PAGE_SIZE) * PAGE_SIZE;
      }
    }
    return best;
  }

  /**
   * Reserves [start, last] for `owner` (Linux `iopt_reserve_iova`): EADDRINUSE when it intersects a mapping or
   * an allowed interval.
   */
  reserve(start: bigint, last: bigint, owner: object): Result<void> {
    if (this.areas.some((a) => BigInt(a.iova) <= last && start <= BigInt(a.iova + a.length - 1))) return err("EADDRINUSE", `reserved IOVA 0x${start.toString(16)}-0x${last.toString(16)} is mapped`);
    if (this.allowed.some((a) => intersects(a, start, last))) return err("EADDRINUSE", `reserved IOVA 0x${start.toString(16)}-0x${last.toString(16)} is in an allowed range`);
    this.reserved.push({ start, last, owner });
    return ok();
  }

  /** Drops every reservation `owner` made. */
  unreserve(owner: object): void {
    for (let i = this.reserved.length - 1; i >= 0; i--) if (this.reserved[i]!.owner === owner) this.reserved.splice(i, 1);
  }

  /** Replaces the allowed list (IOMMU_IOAS_ALLOW_IOVAS): EADDRINUSE when an allowed interval meets a reserved one. */
  setAllowed(ranges: IovaRange[]): Result<void> {
    if (ranges.some((r) => this.reservedHit(r.start, r.last))) return err("EADDRINUSE", "an allowed range intersects a reserved range");
    this.allowed = ranges;
    return ok();
  }

  /** The usable IOVA ranges (IOMMU_IOAS_IOVA_RANGES): the holes between reserved intervals, over the whole u64 space. */
  usableRanges(): IovaRange[] {
    const sorted = [...this.reserved].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    const out: IovaRange[] = [];
    let next = 0n;
    for (const r of sorted) {
      if (r.start > next) out.push({ start: next, last: r.start - 1n });
      if (r.last + 1n > next) next = r.last + 1n;
      if (next > U64_LAST) return out;
    }
    out.push({ start: next, last: U64_LAST });
    return out;
  }

  /**
   * Adds an area and maps it into every domain: EINVAL when it meets a reserved interval, EEXIST on overlap
   * (Linux `iopt_check_iova`), ENOMEM/EFAULT when pinning fails.
   */
  addArea(area: IoasArea): Result<void> {
    if (this.reservedHit(BigInt(area.iova), BigInt(area.iova + area.length - 1))) return err("EINVAL", `IOVA range 0x${area.iova.toString(16)}+0x${area.length.toString(16)} meets a reserved range`);
    if (this.overlaps(area.iova, area.length)) return err("EEXIST", `IOVA range 0x${area.iova.toString(16)}+0x${area.length.toString(16)} overlaps a mapping`);
    const mapped: PagingDomain[] = [];
    for (const domain of this.domains) {
      const r = mapAreaInto(domain, area, this.hugePages);
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
export function mapAreaInto(domain: PagingDomain, area: IoasArea, largeRuns = true): Result<void> {
  let done = 0;
  // Pinned runs, filled in place (a terabyte is half a million of them).
  const first = { hpa: 0 as Hpa, length: 0 };
  const next = { hpa: 0 as Hpa, length: 0 };
  // `first` already holds the backing page that ended the previous run (not host-contiguous with it).
  let carried = false;
  while (done < area.length) {
    if (!carried && area.memory.pinRun(area.gpa + done, area.length - done, first) === undefined) {
      domain.unmap(area.iova, done);
      return area.memory.contains(area.gpa + done) ? err("ENOMEM", "host out of memory pinning guest RAM") : err("EFAULT", "mapping source outside guest RAM");
    }
    carried = false;
    // Extend the run while the next backing page follows on the host, up to 1 GiB at a time.
    // With huge pages off (IOMMU_OPTION_HUGE_PAGES = 0) every mapping is one page.
    let run = largeRuns ? first.length : Math.min(first.length, PAGE_SIZE);
    let carry = false;
    while (largeRuns && done + run < area.length && run < 2 ** 30) {
      if (area.memory.pinRun(area.gpa + done + run, area.length - done - run, next) === undefined) break;
      if (next.hpa !== first.hpa + run) {
        carry = true;
        break;
      }
      run += next.length;
    }
    const r = domain.map(area.iova + done, first.hpa, run, area.perms);
    if (!r.ok) {
      domain.unmap(area.iova, done);
      return r;
    }
    done += run;
    if (carry) {
      first.hpa = next.hpa;
      first.length = next.length;
      carried = true;
    }
  }
  return ok();
}

export function permsFromMapFlags(readable: boolean, writeable: boolean): PermBits {
  return (readable ? Perm.Read : 0) | (writeable ? Perm.Write : 0);
}
