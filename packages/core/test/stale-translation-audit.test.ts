import { describe, expect, it } from "vitest";
import { EventBus, ManualClock, newWalkResult, StaleTranslationAudit, WalkFault, type CoreEvents, type StaleTranslationFinding } from "../src/index.js";

function result(ok: boolean, output = 0, perms = 3) {
  const r = newWalkResult();
  r.ok = ok;
  r.output = output;
  r.perms = perms as never;
  r.pageShift = 12;
  if (!ok) r.fault = WalkFault.Translation;
  return r;
}

describe("the stale-translation audit", () => {
  it("is silent when the cache and the tables agree, and names the last covering invalidation when they differ", () => {
    const events = new EventBus<CoreEvents>();
    const clock = new ManualClock();
    const seen: StaleTranslationFinding[] = [];
    events.on("staleTranslation", (f) => seen.push(f));
    const audit = new StaleTranslationAudit(events, clock);
    const site = { vm: 1, unit: "u0", cache: "IOTLB", rid: 0x10, iova: 0x5000 };
    expect(audit.check(site, result(true, 0x9000), result(true, 0x9000))).toBe(true);
    clock.advance(100);
    audit.noteInvalidation("IOTLB page 0x5000", { rid: 0x10, start: 0x5000, end: 0x5fff });
    clock.advance(50);
    audit.noteInvalidation("IOTLB page 0x8000", { rid: 0x10, start: 0x8000, end: 0x8fff });
    audit.noteInvalidation("IOTLB of another device", { rid: 0x20 });
    expect(audit.check(site, result(true, 0x9000), result(false))).toBe(false);
    expect(audit.check(site, result(true, 0x9000, 3), result(true, 0x9000, 1))).toBe(false);
    expect(seen).toHaveLength(2);
    expect(seen[0]).toMatchObject({ iova: 0x5000, cached: "0x9000 rw (4K)", lastInvalidation: { what: "IOTLB page 0x5000", at: 100 } });
    expect(seen[0]!.tables).toMatch(/^fault/);
    expect(seen[1]!.tables).toBe("0x9000 r- (4K)");
    expect(audit.findings).toEqual(seen);
  });
});
