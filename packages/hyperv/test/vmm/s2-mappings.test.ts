import { describe, expect, it } from "vitest";
import { err, ok } from "@viommu/core";
import { S2Mappings, type IoasPort } from "../../src/vmm/s2-mappings.js";

/** An IOAS stand-in that, like iommufd's, refuses an unmap that splits a mapping. */
function fakeIoas(): IoasPort & { areas: Map<number, number>; calls: string[] } {
  const areas = new Map<number, number>();
  const calls: string[] = [];
  return {
    areas,
    calls,
    map(iova, _gpa, length) {
      calls.push(`map ${iova / 4096}+${length / 4096}`);
      areas.set(iova, length);
      return ok();
    },
    unmap(iova, length) {
      calls.push(`unmap ${iova / 4096}+${length / 4096}`);
      if (areas.get(iova) !== length) return err("ENOENT", "range splits a mapping");
      areas.delete(iova);
      return ok(length);
    },
  };
}

describe("S2Mappings", () => {
  it("keeps one host mapping per run and re-maps the parts an unmap does not cover", () => {
    const port = fakeIoas();
    const m = new S2Mappings(port);
    expect(m.mapRun(100, 5000, 10, true).ok).toBe(true);
    expect(m.lookup(105)).toEqual({ gpaPage: 5005, writable: true });
    const removed = m.unmapRange(103, 2);
    expect(removed).toEqual({ removed: 2, error: undefined });
    expect(port.calls).toEqual(["map 100+10", "unmap 100+10", "map 100+3", "map 105+5"]);
    expect([...port.areas.entries()].sort()).toEqual([
      [100 * 4096, 3 * 4096],
      [105 * 4096, 5 * 4096],
    ]);
    expect(m.lookup(103)).toBeUndefined();
    expect(m.lookup(105)).toEqual({ gpaPage: 5005, writable: true });
    expect(m.size).toBe(8);
    expect(m.runs()).toEqual([
      [100, 5000, 3, true],
      [105, 5005, 5, true],
    ]);
  });

  it("skips pages never mapped and removes whole runs inside the range", () => {
    const port = fakeIoas();
    const m = new S2Mappings(port);
    m.mapRun(0, 10, 2, false);
    m.mapRun(4, 20, 2, false);
    expect(m.unmapRange(0, 100)).toEqual({ removed: 4, error: undefined });
    expect(port.areas.size).toBe(0);
    expect(m.size).toBe(0);
  });
});
