import type { IommuError } from "../errors/errno.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import type { HostLog } from "../platform/host-log.js";
import type { OwnerId } from "../memory/host-memory.js";
import { Perm, type PermBits } from "../translate/access.js";
import { forEachLeaf, type LeafVisit } from "../translate/leaf-enumerator.js";
import type { PageTableFormat, TableGeometry } from "../translate/page-table-format.js";
import type { EntryReader } from "../translate/page-walker.js";
import type { ShadowBackend } from "./shadow-backend.js";

/** A guest table tree a shadow mirrors: its format, geometry and root, read through `reader`. */
export interface ShadowSource {
  readonly format: PageTableFormat;
  readonly geometry: TableGeometry;
  readonly root: number;
  readonly reader: EntryReader;
}

/** One installed shadow mapping. */
export interface ShadowMapping {
  readonly gpa: number;
  readonly size: number;
  readonly perms: PermBits;
}

/** What one resynchronisation did. `refused` mappings are absent from the host: DMA there faults. */
export interface ShadowSyncReport {
  installed: number;
  removed: number;
  refused: number;
  /** The first refusal's error (ENOSPC from a type1 back end at its `dmaEntryLimit`, say). */
  firstError: IommuError | undefined;
  /** Whether the guest's table could be read whole within the entry budget. */
  complete: boolean;
}

/** Who reports a mirror's refusals, and where. */
export interface ShadowReporter {
  readonly log: HostLog;
  readonly vm: OwnerId;
  readonly source: string;
}

/**
 * Decides what a guest leaf becomes in the host: the permissions to install (Perm.Read / Perm.Write), or 0 to
 * leave it unmapped (no access, output outside guest RAM, the interrupt window…).
 */
export type ShadowAdmit = (leaf: LeafVisit) => PermBits;

/** Entries a resynchronisation may read, so a guest table that points back at itself cannot stall the VMM. */
export const SHADOW_RESYNC_BUDGET = 1 << 18;

/** Ranges of at most this many candidate bases are found by probing; larger ones scan the mappings. */
const PROBE_LIMIT = 1024;

/**
 * One shadowed guest address space: what a shadowing (caching-mode) VMM computed from the guest's table and
 * installed through a shadow back end. The guest announces every change with an invalidation; `resync` then
 * makes the host equal to the guest's table over the range: stale mappings removed, present leaves installed.
 *
 * A leaf the back end refuses (the type1 `dmaEntryLimit`, an IOAS error) stays unmapped, so the device faults
 * there instead of reaching a stale page; the refusal is counted in the report and written to the host log,
 * and the caller decides what the guest sees.
 */
export class ShadowMirror {
  readonly maps = new Map<number, ShadowMapping>();
  /** Page shifts of the installed mappings, with how many of each: the probe sizes for range removal. */
  private readonly shifts = new Map<number, number>();

  constructor(
    readonly backend: ShadowBackend,
    private readonly memory: GuestMemory,
    private readonly reporter: ShadowReporter | undefined,
  ) {}

  get entries(): number {
    return this.maps.size;
  }

  /** Makes the host equal to the guest's table over [start, start + length) (Infinity: the whole input space). */
  resync(source: ShadowSource, start: number, length: number, admit: ShadowAdmit = defaultAdmit(this.memory)): ShadowSyncReport {
    const report: ShadowSyncReport = { installed: 0, removed: 0, refused: 0, firstError: undefined, complete: true };
    const limit = 2 ** source.geometry.inputBits;
    const from = Math.max(0, start);
    const end = Math.min(limit, Number.isFinite(length) ? start + length : limit);
    if (!(end > from)) return report;
    // A mapping that reaches past the range is removed whole, so the walk widens to re-derive all of it.
    const widened = this.removeRange(from, end, report);
    const walkFrom = Math.max(0, Math.min(from, widened.from));
    const walkEnd = Math.min(limit, Math.max(end, widened.end));
    const result = forEachLeaf(
      source.format,
      source.geometry,
      source.root,
      source.reader,
      walkFrom,
      walkEnd - walkFrom,
      (leaf) => {
        const size = 2 ** leaf.pageShift;
        if (leaf.input < walkFrom || leaf.input + size > walkEnd) {
          // A large leaf straddling the walk: it replaces whatever the mirror had under it.
          this.removeRange(leaf.input, leaf.input + size, report);
        }
        const perms = admit(leaf) & Perm.ReadWrite;
        if (perms === 0) return;
        const r = this.backend.map(leaf.input, leaf.output, size, perms);
        if (r.ok) {
          this.add(leaf.input, { gpa: leaf.output, size, perms });
          report.installed++;
        } else {
          report.refused++;
          if (report.firstError === undefined) report.firstError = r.error;
        }
      },
      SHADOW_RESYNC_BUDGET,
    );
    report.complete = result.complete;
    if (report.refused > 0) {
      this.reporter?.log.record({
        vm: this.reporter.vm,
        source: this.reporter.source,
        kind: "shadow-map-refused",
        error: report.firstError,
        message: `${report.refused} shadow mapping(s) in [0x${from.toString(16)}, 0x${end.toString(16)}) not installed: ${report.firstError?.errno} ${report.firstError?.message}`,
      });
    }
    return report;
  }

  /** Removes every mapping (the space is going away). */
  clear(): ShadowSyncReport {
    const report: ShadowSyncReport = { installed: 0, removed: 0, refused: 0, firstError: undefined, complete: true };
    for (const iova of [...this.maps.keys()]) this.remove(iova, report);
    return report;
  }

  private add(iova: number, m: ShadowMapping): void {
    this.maps.set(iova, m);
    const shift = Math.log2(m.size);
    this.shifts.set(shift, (this.shifts.get(shift) ?? 0) + 1);
  }

  private remove(iova: number, report: ShadowSyncReport): void {
    const m = this.maps.get(iova);
    if (m === undefined) return;
    const r = this.backend.unmap(iova, m.size);
    if (!r.ok) {
      this.reporter?.log.record({ vm: this.reporter.vm, source: this.reporter.source, kind: "shadow-unmap-refused", error: r.error, message: `shadow unmap of 0x${iova.toString(16)}+0x${m.size.toString(16)} failed: ${r.error.errno} ${r.error.message}` });
    }
    this.maps.delete(iova);
    const shift = Math.log2(m.size);
    const n = (this.shifts.get(shift) ?? 1) - 1;
    if (n === 0) this.shifts.delete(shift);
    else this.shifts.set(shift, n);
    report.removed++;
  }

  /**
   * Removes every mapping overlapping [from, end), probing each size in use when that is cheaper than a scan.
   * Returns the extent of what was removed (at least [from, end)).
   */
  private removeRange(from: number, end: number, report: ShadowSyncReport): { from: number; end: number } {
    const extent = { from, end };
    if (this.maps.size === 0) return extent;
    const drop = (iova: number, size: number): void => {
      extent.from = Math.min(extent.from, iova);
      extent.end = Math.max(extent.end, iova + size);
      this.remove(iova, report);
    };
    let probes = 0;
    for (const shift of this.shifts.keys()) probes += Math.ceil((end - alignDown(from, 2 ** shift)) / 2 ** shift);
    if (probes <= Math.min(PROBE_LIMIT, this.maps.size)) {
      for (const shift of [...this.shifts.keys()]) {
        const size = 2 ** shift;
        for (let base = alignDown(from, size); base < end; base += size) {
          const m = this.maps.get(base);
          if (m !== undefined && m.size === size) drop(base, size);
        }
      }
      return extent;
    }
    for (const [iova, m] of [...this.maps]) if (iova < end && iova + m.size > from) drop(iova, m.size);
    return extent;
  }
}

function alignDown(value: number, size: number): number {
  return value - (value % size);
}

/** The default admission: any readable or writable leaf whose output is guest RAM. */
export function defaultAdmit(memory: GuestMemory): ShadowAdmit {
  return (leaf) => (memory.contains(leaf.output, 2 ** leaf.pageShift) ? leaf.perms & Perm.ReadWrite : 0);
}
