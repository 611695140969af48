import {
  createShadowBackend,
  fail,
  ok,
  defaultAdmit,
  Perm,
  ShadowMirror,
  type GuestMemory,
  type IommufdContext,
  type Result,
  type ShadowBackendKind,
  type ShadowAdmit,
  type ShadowReporter,
  type ShadowSource as MirrorSource,
  type ShadowSyncReport,
} from "@viommu/core";
import { amdV1Geometry, V1_MAX_PAGE_SHIFT } from "../format/page-table-v1.js";
import { amdV2Geometry, amdV2PageTableFormat } from "../format/page-table-v2.js";
import { HostReadableEntries, ShadowV1TableView } from "./shadow-table-view.js";

/** One guest address space the VMM mirrors: a v1 table (DTE Mode 1–6), or the v2 table of PASID 0 (GV with GIoV). */
export interface ShadowSource {
  readonly kind: "v1" | "v2";
  readonly domainId: number;
  readonly root: number;
  /** DTE Mode for v1, 4 or 5 levels for v2. */
  readonly levels: number;
  /** The exclusion range, when it applies to the devices of this space: [base, limit] passes untranslated. */
  readonly exclusion?: { readonly base: number; readonly limit: number };
}

export interface ShadowSpace {
  readonly source: ShadowSource;
  readonly mirror: ShadowMirror;
  /** Guest DeviceIDs attached to it. */
  readonly devices: Set<number>;
  /** The identity window installed for the exclusion range (guest RAM inside it), outside the mirror. */
  window: { iova: number; length: number } | undefined;
  /** Mirror admission: the default, but nothing that overlaps the exclusion range. */
  readonly admit: ShadowAdmit;
}

function keyOf(s: ShadowSource): string {
  return `${s.kind}:${s.domainId}:${s.root}:${s.levels}` + (s.exclusion === undefined ? "" : `:x${s.exclusion.base}-${s.exclusion.limit}`);
}

/** What a resynchronisation found, over every space it touched: the first refusal, if any. */
export function emptyReport(): ShadowSyncReport {
  return { installed: 0, removed: 0, refused: 0, firstError: undefined, complete: true };
}

function merge(into: ShadowSyncReport, r: ShadowSyncReport): void {
  into.installed += r.installed;
  into.removed += r.removed;
  into.refused += r.refused;
  into.firstError ??= r.firstError;
  into.complete &&= r.complete;
}

/**
 * Caching-mode emulation (the IOMMU in "emulated" mode, QEMU's amd-iommu without nesting): the VMM mirrors
 * each guest address space into a host IOAS of its own through core's ShadowMirror, one space per
 * (DomainID, table), resynchronised when the guest invalidates (Linux under NpCache flushes after every map
 * and unmap). A mapping the back end refuses (the type1 entry limit) stays unmapped, so the device faults
 * there rather than reaching a stale page; the mirror writes the refusal to the host log and every call here
 * returns its report, so the caller can tell the guest (see AmdViDevice: the command that asked for it fails).
 */
export class ShadowSpaces {
  private readonly spaces = new Map<string, ShadowSpace>();
  private readonly entries: HostReadableEntries;
  private readonly v1View: ShadowV1TableView;

  constructor(
    private readonly ctx: IommufdContext,
    private readonly memory: GuestMemory,
    private readonly backendKind: ShadowBackendKind,
    private readonly dmaEntryLimit: number | undefined,
    private readonly reporter: ShadowReporter,
  ) {
    this.entries = new HostReadableEntries(memory);
    this.v1View = new ShadowV1TableView(this.entries);
  }

  get mappings(): number {
    let n = 0;
    for (const s of this.spaces.values()) n += s.mirror.entries + (s.window === undefined ? 0 : 1);
    return n;
  }

  /** The space mirroring `source`; a new one is filled from the guest's whole table, refusals in `report`. */
  spaceFor(source: ShadowSource, report: ShadowSyncReport): Result<ShadowSpace> {
    const key = keyOf(source);
    const existing = this.spaces.get(key);
    if (existing !== undefined) return ok(existing);
    const backend = createShadowBackend(this.backendKind, this.ctx, this.memory, this.dmaEntryLimit);
    if (!backend.ok) return fail(backend);
    const space: ShadowSpace = { source, mirror: new ShadowMirror(backend.value, this.memory, this.reporter), devices: new Set(), window: undefined, admit: this.admission(source) };
    this.spaces.set(key, space);
    this.openWindow(space, report);
    merge(report, this.resync(space, 0, Infinity));
    return ok(space);
  }

  private admission(source: ShadowSource): ShadowAdmit {
    const admit = defaultAdmit(this.memory);
    const ex = source.exclusion;
    if (ex === undefined) return admit;
    // A guest page overlapping the window is not mirrored: inside, the window is what the device sees; a
    // large page that straddles its edge loses its part outside too (DMA there faults, never misdirected).
    return (leaf) => (leaf.input <= ex.limit && leaf.input + 2 ** leaf.pageShift > ex.base ? 0 : admit(leaf));
  }

  /** The exclusion range as an identity mapping of the guest RAM inside it; a refusal is logged and reported. */
  private openWindow(space: ShadowSpace, report: ShadowSyncReport): void {
    const ex = space.source.exclusion;
    if (ex === undefined) return;
    const from = Math.max(ex.base, this.memory.base);
    const end = Math.min(ex.limit + 1, this.memory.end);
    if (!(end > from)) return;
    const r = space.mirror.backend.map(from, from, end - from, Perm.ReadWrite);
    if (r.ok) {
      space.window = { iova: from, length: end - from };
      report.installed++;
      return;
    }
    report.refused++;
    report.firstError ??= r.error;
    const { log, vm, source } = this.reporter;
    log.record({ vm, source, kind: "shadow-map-refused", error: r.error, message: `exclusion window [0x${from.toString(16)}, 0x${end.toString(16)}) not installed: ${r.error.errno} ${r.error.message}` });
  }

  /** Drops a space no device uses any more (its IOAS goes once its automatic HWPT has). */
  releaseIfUnused(space: ShadowSpace): void {
    if (space.devices.size > 0) return;
    space.mirror.clear();
    if (space.window !== undefined) {
      const r = space.mirror.backend.unmap(space.window.iova, space.window.length);
      if (!r.ok) this.reporter.log.record({ vm: this.reporter.vm, source: this.reporter.source, kind: "shadow-unmap-refused", error: r.error, message: `exclusion window unmap failed: ${r.error.errno} ${r.error.message}` });
      space.window = undefined;
    }
    this.spaces.delete(keyOf(space.source));
    const r = this.ctx.destroy(space.mirror.backend.ioasId);
    if (!r.ok) this.reporter.log.record({ vm: this.reporter.vm, source: this.reporter.source, kind: "other", error: r.error, message: `shadow IOAS ${space.mirror.backend.ioasId} not destroyed: ${r.error.errno} ${r.error.message}` });
  }

  /** INVALIDATE_IOMMU_PAGES: every space of the DomainID over the range. */
  invalidateDomain(domainId: number, address: number, length: number): ShadowSyncReport {
    const report = emptyReport();
    for (const s of this.spaces.values()) if (s.source.domainId === domainId) merge(report, this.resync(s, address, length));
    return report;
  }

  /** INVALIDATE_IOMMU_ALL. */
  invalidateAll(): ShadowSyncReport {
    const report = emptyReport();
    for (const s of this.spaces.values()) merge(report, this.resync(s, 0, Infinity));
    return report;
  }

  destroyAll(): void {
    for (const s of [...this.spaces.values()]) {
      s.devices.clear();
      this.releaseIfUnused(s);
    }
  }

  private source(s: ShadowSource): MirrorSource {
    if (s.kind === "v1") {
      this.v1View.reset();
      return { format: this.v1View.format, geometry: amdV1Geometry(s.levels), root: s.root, reader: this.v1View.reader };
    }
    return { format: amdV2PageTableFormat, geometry: amdV2Geometry(s.levels === 5 ? 5 : 4), root: s.root, reader: this.entries };
  }

  /**
   * Makes the space equal to the guest's table over [address, address + length), widened to whole host
   * mappings at both ends: a mapping the range cuts is removed whole by the mirror, so its whole extent is
   * re-derived (a 16 KiB page the guest flushed 4 KiB of stays mapped).
   */
  private resync(space: ShadowSpace, address: number, length: number): ShadowSyncReport {
    let from = address;
    let end = address + length;
    if (Number.isFinite(end)) {
      const first = this.mappingAt(space.mirror, from);
      if (first !== undefined) from = Math.min(from, first);
      const last = this.mappingAt(space.mirror, end - 1);
      if (last !== undefined) end = Math.max(end, last + space.mirror.maps.get(last)!.size);
    }
    return space.mirror.resync(this.source(space.source), from, end - from, space.admit);
  }

  /** The IOVA of the installed mapping containing `iova`, probing each page size v1 and v2 tables have. */
  private mappingAt(mirror: ShadowMirror, iova: number): number | undefined {
    if (!(iova >= 0) || mirror.entries === 0) return undefined;
    for (let shift = 12; shift <= V1_MAX_PAGE_SHIFT; shift++) {
      const size = 2 ** shift;
      const base = iova - (iova % size);
      const m = mirror.maps.get(base);
      if (m !== undefined && m.size === size) return base;
    }
    return undefined;
  }
}
