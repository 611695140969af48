import { describe, expect, it } from "vitest";
import { ByteWriter, EventBus, IdAllocator, SeededRng, acpiChecksum, acpiTableProblem, buildAcpiTable, crc32, decodeState, encodeState, parseAcpiTableHeader, saveFrozen } from "../src/index.js";

describe("id allocation", () => {
  it("answers ENOSPC when exhausted and reuses the lowest released id", () => {
    const ids = new IdAllocator("VMID", 1, 3);
    expect([ids.allocate(), ids.allocate(), ids.allocate()].map((r) => r.ok && r.value)).toEqual([1, 2, 3]);
    expect(ids.allocate()).toMatchObject({ ok: false, error: { errno: "ENOSPC" } });
    ids.release(2);
    expect(ids.allocate()).toMatchObject({ ok: true, value: 2 });
    expect(ids.claim(3)).toMatchObject({ ok: false, error: { errno: "EEXIST" } });
    expect(ids.claim(9)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });
});

describe("event bus", () => {
  it("isolates a throwing listener: the others still receive the event", () => {
    const bus = new EventBus<{ fault: number }>();
    const got: number[] = [];
    bus.on("fault", () => {
      throw new Error("bad listener");
    });
    const d = bus.on("fault", (n) => got.push(n));
    bus.emit("fault", 7);
    d.dispose();
    bus.emit("fault", 8);
    expect(got).toEqual([7]);
    expect(bus.failures).toHaveLength(2);
  });
});

describe("save state", () => {
  it("round-trips, and refuses a wrong kind, version, length or checksum", () => {
    const blob = encodeState("dev", 2, { a: [1, 2], b: "x" });
    expect(decodeState(blob, "dev", [2])).toMatchObject({ ok: true, value: { version: 2, value: { a: [1, 2], b: "x" } } });
    expect(decodeState(blob, "other", [2])).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(decodeState(blob, "dev", [1])).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    const bad = blob.slice();
    bad[bad.length - 1] ^= 1;
    expect(decodeState(bad, "dev", [2])).toMatchObject({ ok: false, error: { message: "state checksum mismatch" } });
    expect(decodeState(blob.subarray(0, 10), "dev", [2]).ok).toBe(false);
  });

  it("computes CRC-32 as zlib does", () => {
    expect(crc32(new TextEncoder().encode("123456789"))).toBe(0xcbf43926);
  });

  it("freezes a device while saving and thaws it after", () => {
    const seen: string[] = [];
    const dev = { frozen: false, freeze() { this.frozen = true; seen.push("freeze"); }, thaw() { this.frozen = false; seen.push("thaw"); } };
    saveFrozen(dev, () => seen.push(`save:${dev.frozen}`));
    expect(seen).toEqual(["freeze", "save:true", "thaw"]);
  });
});

describe("ACPI primitives", () => {
  it("builds a table whose bytes sum to zero, with its length, over any size", () => {
    const body = new ByteWriter();
    for (let i = 0; i < 300; i++) body.u32(i);
    const t = buildAcpiTable({ signature: "TEST", revision: 2 }, body.finish());
    expect(t.length).toBe(36 + 1200);
    expect(acpiChecksum(t)).toBe(0);
    expect(acpiTableProblem(t, "TEST")).toBeUndefined();
    expect(parseAcpiTableHeader(t)).toMatchObject({ signature: "TEST", length: 1236, revision: 2, oemId: "VIOMMU" });
    const broken = t.slice();
    broken[40] ^= 1;
    expect(acpiTableProblem(broken)).toMatch(/checksum/);
  });
});

describe("seeded randomness", () => {
  it("repeats from its seed", () => {
    const a = new SeededRng(42);
    const b = new SeededRng(42);
    expect(Array.from({ length: 5 }, () => a.nextU32())).toEqual(Array.from({ length: 5 }, () => b.nextU32()));
    expect(new SeededRng(42).fork(1).nextU32()).not.toBe(new SeededRng(42).fork(2).nextU32());
  });
});
