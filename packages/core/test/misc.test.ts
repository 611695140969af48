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

describe("the VM's PCI configuration space", () => {
  it("serves functions where the VMM placed them, reads all ones elsewhere, drops malformed accesses and counts every access as an exit", async () => {
    const { Platform, formatBdf } = await import("../src/index.js");
    const platform = new Platform({ plugins: [] });
    const vm = platform.createVm({ memoryBytes: 2 ** 24 });
    const regs = new Uint32Array(64);
    regs[0] = 0x1419_1022;
    const handler = { read: (o: number, s: 1 | 2 | 4) => (regs[o >> 2]! >>> ((o & 3) * 8)) & (s === 4 ? 0xffff_ffff : s === 2 ? 0xffff : 0xff), write: (o: number, _s: 1 | 2 | 4, v: number) => void (regs[o >> 2] = v) };
    const fn = vm.mapPciFunction(0x0002, handler);
    expect(fn.ok).toBe(true);
    expect(vm.mapPciFunction(0x0002, handler)).toMatchObject({ ok: false, error: { errno: "EEXIST" } });
    expect(vm.pciConfigRead(0, 0x0002, 0, 4)).toBe(0x1419_1022);
    expect(vm.pciConfigRead(0, 0x0002, 2, 2)).toBe(0x1419);
    expect(vm.pciConfigRead(0, 0x0003, 0, 4)).toBe(0xffff_ffff);
    expect(vm.pciConfigRead(1, 0x0002, 0, 2)).toBe(0xffff);
    expect(vm.pciConfigRead(0, 0x0002, 1, 2)).toBe(0xffff);
    expect(vm.pciConfigRead(0, 0x0002, 4096, 1)).toBe(0xff);
    vm.pciConfigWrite(0, 0x0002, 6, 4, 0x1234);
    vm.pciConfigWrite(0, 0x0002, 4, 4, 0x5678);
    expect(regs[1]).toBe(0x5678);
    expect(vm.exits.pciConfig).toBe(8);
    expect(vm.interventions).toBe(8);
    if (fn.ok) fn.value.unmap();
    expect(vm.pciConfigRead(0, 0x0002, 0, 4)).toBe(0xffff_ffff);
    expect(formatBdf({ segment: 0, bdf: 0x0a2 })).toBe("00:14.2");
    expect(formatBdf({ segment: 1, bdf: 0x200 })).toBe("0001:02:00.0");
  });
});
