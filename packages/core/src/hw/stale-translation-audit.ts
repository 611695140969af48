import type { StaleTranslationFinding } from "../contract/debug-tools.js";
import type { EventBus } from "../events/event-bus.js";
import type { CoreEvents } from "../platform/core-events.js";
import type { Clock } from "../sim/clock.js";
import type { WalkResult } from "../translate/walk-result.js";

/** Where a cached translation was used: the unit, the cache, the requester and the address. */
export interface AuditSite {
  readonly vm: number;
  readonly unit: string;
  readonly cache: string;
  readonly rid: number;
  readonly pasid?: number;
  readonly iova: number;
}

interface RecordedInvalidation {
  readonly what: string;
  readonly at: number;
  /** The requesters and address range it covered; undefined bounds cover everything. */
  readonly rid?: number;
  readonly start: number;
  readonly end: number;
}

/** How many recent invalidations a finding can point back to. */
const REMEMBERED = 256;

const describe = (r: WalkResult): string =>
  r.ok ? `0x${r.output.toString(16)} ${r.perms & 1 ? "r" : "-"}${r.perms & 2 ? "w" : "-"} (${2 ** r.pageShift / 1024}K)` : `fault (${r.fault})`;

/**
 * The stale-translation audit a unit runs on its cache hits when asked (VmmDeviceOptions.audit): the unit walks
 * the tables again and hands both results here; a difference in output, permissions or presence is a cached
 * translation the guest forgot (or got wrong) to invalidate, and becomes a `staleTranslation` event naming the
 * last invalidation that covered the address. Units record their invalidations as they perform them.
 */
export class StaleTranslationAudit {
  private readonly recent: RecordedInvalidation[] = [];
  readonly findings: StaleTranslationFinding[] = [];

  constructor(
    private readonly events: EventBus<CoreEvents> | undefined,
    private readonly clock: Clock,
  ) {}

  /** An invalidation the unit performed (for the findings' "last invalidation that covered it"). */
  noteInvalidation(what: string, scope: { rid?: number; start?: number; end?: number } = {}): void {
    this.recent.push({ what, at: this.clock.now(), rid: scope.rid, start: scope.start ?? 0, end: scope.end ?? Number.MAX_SAFE_INTEGER });
    if (this.recent.length > REMEMBERED) this.recent.shift();
  }

  /**
   * Compares what a cache hit gave with what the tables give now. Returns true when they agree; otherwise
   * records and publishes a finding. Output is compared at the hit's address, so a large cached page and the
   * small pages the tables now hold agree when they map the address the same way.
   */
  check(site: AuditSite, cached: WalkResult, tables: WalkResult): boolean {
    const same = cached.ok === tables.ok && (!cached.ok || (cached.output === tables.output && (cached.perms & 3) === (tables.perms & 3)));
    if (same) return true;
    let last: RecordedInvalidation | undefined;
    for (let i = this.recent.length - 1; i >= 0 && last === undefined; i--) {
      const r = this.recent[i]!;
      if ((r.rid === undefined || r.rid === site.rid) && site.iova >= r.start && site.iova <= r.end) last = r;
    }
    const finding: StaleTranslationFinding = {
      ...site,
      cached: describe(cached),
      tables: describe(tables),
      ...(last !== undefined ? { lastInvalidation: { what: last.what, at: last.at } } : {}),
    };
    this.findings.push(finding);
    this.events?.emit("staleTranslation", finding);
    return false;
  }
}
