import { describe, expect, it } from "vitest";
import { EventBus, HostLog, ManualClock, StateReader, type CoreEvents, type HostLogEntry, type StateValue } from "../src/index.js";

function parseQueue(r: StateReader): { head: number; base: bigint; records: number[]; on: boolean } {
  const q = r.object("queue");
  const size = q.int("size", 1, 256);
  return { head: q.index("head", size), base: q.u64("base", (1n << 52n) - 1n), records: r.ints("records", 0, 0xffff_ffff, { exactly: 2 }), on: r.bool("on") };
}

describe("StateReader", () => {
  const good: StateValue = { queue: { size: 16, head: 3, base: "0xfff000" }, records: [1, 2], on: true };

  it("returns the parsed value when every field is in range", () => {
    const r = StateReader.read(good, "test", parseQueue);
    expect(r.ok && r.value).toEqual({ head: 3, base: 0xfff000n, records: [1, 2], on: true });
  });

  it.each([
    [{ ...good, queue: { size: 16, head: -1, base: "0" } }, "queue.head is -1, outside [0, 15]"],
    [{ ...good, queue: { size: 16, head: 16, base: "0" } }, "queue.head is 16, outside [0, 15]"],
    [{ ...good, queue: { size: 16, head: 1.5, base: "0" } }, "queue.head is not an integer"],
    [{ ...good, queue: { size: 16, head: 0, base: "0x10000000000000" } }, "queue.base is 0x10000000000000, above 0xfffffffffffff"],
    [{ ...good, queue: { size: 16, head: 0, base: "-1" } }, "queue.base is not a 64-bit value"],
    [{ ...good, queue: { size: 16, head: 0 } }, "queue.base is missing"],
    [{ ...good, records: [1, 2, 3] }, "records has 3 elements, not 2"],
    [{ ...good, records: [1, "2"] }, "records[1] is not an integer"],
    [{ ...good, on: 1 }, "on is not a boolean"],
    [[], "the stream is not an object"],
  ] as [StateValue, string][])("names the bad field: %j", (value, message) => {
    const r = StateReader.read(value, "test", parseQueue);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatchObject({ errno: "EINVAL", message: `test state: ${message}` });
  });

  it("lets errors other than a bad field through (a bug in the parser is not a refused stream)", () => {
    expect(() => StateReader.read(good, "test", () => { throw new TypeError("bug"); })).toThrow(TypeError);
  });
});

describe("HostLog", () => {
  it("keeps entries with the time and errno, publishes each, and drops the oldest beyond its capacity", () => {
    const clock = new ManualClock();
    const events = new EventBus<CoreEvents>();
    const seen: HostLogEntry[] = [];
    events.on("hostLog", (e) => seen.push(e));
    const log = new HostLog(clock, events, 2);
    clock.advance(5);
    log.record({ vm: 1, source: "a", kind: "invalidation-refused", error: { errno: "EIO", code: 5, message: "bad entry" } });
    log.record({ vm: 2, source: "b", kind: "shadow-map-refused", message: "limit" });
    log.record({ vm: 1, source: "c", kind: "other", message: "third" });
    expect(log.entries().map((e) => e.source)).toEqual(["b", "c"]);
    expect(log.dropped).toBe(1);
    expect(seen[0]).toMatchObject({ time: 5, vm: 1, errno: "EIO", message: "bad entry", kind: "invalidation-refused" });
    expect(log.entries({ vm: 1 }).map((e) => e.message)).toEqual(["third"]);
    expect(log.entries({ kind: "shadow-map-refused" })).toHaveLength(1);
  });
});
