import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  ANY_ASID,
  GuestMemory,
  GuestTableReader,
  HOST_OWNER,
  HostMemory,
  HostPageTable,
  Iotlb,
  NestedWalker,
  newIotlbHit,
  newWalkResult,
  PageWalker,
  Perm,
  WalkFault,
  forEachLeaf,
} from "../src/index.js";
import { toyFormat, toyGeometry } from "./support/toy-format.js";

function hostTable(host = new HostMemory()): HostPageTable {
  return HostPageTable.create(host, HOST_OWNER, toyFormat, toyGeometry)!;
}

describe("page walker", () => {
  it("translates a 4 KiB mapping with the page offset", () => {
    const t = hostTable();
    expect(t.builder.map(0x1000, 0x5_0000_0000, 0x1000, Perm.ReadWrite).ok).toBe(true);
    const r = newWalkResult();
    t.walk(0x1234, Perm.Read, r);
    expect(r).toMatchObject({ ok: true, output: 0x5_0000_0234, pageShift: 12, level: 1 });
  });

  it("uses a 2 MiB leaf when address, output and length allow", () => {
    const t = hostTable();
    t.builder.map(0x20_0000, 0x4000_0000, 0x20_0000, Perm.Read);
    const r = newWalkResult();
    t.walk(0x21_2345, Perm.Read, r);
    expect(r).toMatchObject({ ok: true, output: 0x4001_2345, pageShift: 21, level: 2 });
    expect(r.fetches).toBe(3);
  });

  it("faults a write through a read-only leaf with Permission and still reports the mapping", () => {
    const t = hostTable();
    t.builder.map(0, 0x10_0000, 0x1000, Perm.Read);
    const r = newWalkResult();
    t.walk(0x10, Perm.Write, r);
    expect(r).toMatchObject({ ok: false, fault: WalkFault.Permission, mapped: true, output: 0x10_0010 });
  });

  it("faults an input beyond the table's width with AddressSize", () => {
    const r = newWalkResult();
    hostTable().walk(2 ** 48, Perm.Read, r);
    expect(r.fault).toBe(WalkFault.AddressSize);
  });

  it("refuses to map over an existing mapping and leaves the table unchanged", () => {
    const t = hostTable();
    t.builder.map(0x3000, 0x9000, 0x1000, Perm.Read);
    expect(t.builder.map(0x2000, 0xa000, 0x3000, Perm.Read)).toMatchObject({ ok: false, error: { errno: "EEXIST" } });
    const r = newWalkResult();
    t.walk(0x2000, Perm.Read, r);
    expect(r.ok).toBe(false);
    t.walk(0x3000, Perm.Read, r);
    expect(r).toMatchObject({ ok: true, output: 0x9000 });
  });

  it("frees tables that become empty on unmap", () => {
    const host = new HostMemory();
    const t = hostTable(host);
    const before = host.allocatedPages;
    t.builder.map(0x7f_0000_0000, 0x1000, 0x1000, Perm.Read);
    expect(host.allocatedPages).toBe(before + 3);
    expect(t.builder.unmap(0x7f_0000_0000, 0x1000)).toBe(0x1000);
    expect(host.allocatedPages).toBe(before);
  });

  it("maps again into a range whose tables an unmap freed, one leaf at a time or many", () => {
    const host = new HostMemory();
    const t = hostTable(host);
    const r = newWalkResult();
    // Leaf after leaf into one table, then into its neighbour across a 2 MiB boundary.
    for (let i = 0; i < 4; i++) expect(t.builder.map(0x7f_001f_e000 + i * 0x1000, 0x10_0000 + i * 0x1000, 0x1000, Perm.Read).ok).toBe(true);
    for (let i = 0; i < 4; i++) {
      t.walk(0x7f_001f_e000 + i * 0x1000 + 8, Perm.Read, r);
      expect(r).toMatchObject({ ok: true, output: 0x10_0008 + i * 0x1000 });
    }
    expect(t.builder.unmap(0x7f_001f_e000, 0x4000)).toBe(0x4000);
    for (let round = 0; round < 3; round++) {
      expect(t.builder.map(0x7f_0020_1000, 0x30_0000, 0x1000, Perm.Read).ok).toBe(true);
      t.walk(0x7f_0020_1008, Perm.Read, r);
      expect(r).toMatchObject({ ok: true, output: 0x30_0008 });
      expect(t.builder.unmap(0x7f_0020_1000, 0x1000)).toBe(0x1000);
      // Another owner takes the freed table pages: a table remembered past its free would now be theirs.
      expect(host.allocate(9, 8)).toBeDefined();
    }
  });

  it("never throws on random table contents and stays inside the reader", () => {
    const host = new HostMemory();
    const guest = new GuestMemory(host, 1, { sizeBytes: 1 << 24 });
    const walker = new PageWalker();
    const r = newWalkResult();
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat((1 << 21) - 1), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff })), { maxLength: 64 }), fc.nat(2 ** 30), (writes, iova) => {
        for (const [slot, lo, hi] of writes) guest.write64Halves(slot * 8, lo, hi);
        walker.walk(toyFormat, toyGeometry, 0, iova * 4096, Perm.Read, new GuestTableReader(guest), r);
        if (r.ok) expect(r.output).toBeLessThan(2 ** 52);
        expect(r.fetches).toBeLessThanOrEqual(4);
      }),
    );
  });
});

describe("nested walker", () => {
  it("translates every stage-1 table fetch through stage 2", () => {
    const host = new HostMemory();
    const guest = new GuestMemory(host, 7, { sizeBytes: 1 << 30 });
    const s2 = hostTable(host);
    // Guest RAM at IOVA = GPA in stage 2.
    for (let gpa = 0; gpa < 1 << 24; gpa += 1 << 21) s2.builder.map(gpa, guest.pin(gpa)!, 1 << 21, Perm.ReadWrite);
    // Guest stage 1, built in guest memory: IOVA 0x4000_0000 → GPA 0x80_0000.
    const s1Root = 0x10_0000;
    const entries: [number, number][] = [
      [s1Root + 0 * 8, 0x10_1000 | 3],
      [0x10_1000 + 1 * 8, 0x10_2000 | 3],
      [0x10_2000 + 0, 0x10_3000 | 3],
      [0x10_3000 + 0, 0x80_0000 | 1],
    ];
    for (const [at, v] of entries) guest.write64Halves(at, v, 0);
    const walker = new NestedWalker(host, HOST_OWNER);
    const r = newWalkResult();
    const s2c = { format: toyFormat, geometry: toyGeometry, root: s2.root };
    walker.translate({ format: toyFormat, geometry: toyGeometry, root: s1Root }, s2c, 7, 0x4000_0123, Perm.Read, r);
    expect(r.ok).toBe(true);
    expect(r.output).toBe(guest.backingOf(0x80_0123));
    expect(r.fetches).toBe(4 + 5 * 3);
    walker.translate({ format: toyFormat, geometry: toyGeometry, root: s1Root }, s2c, 7, 0x4000_0123, Perm.Write, r);
    expect(r).toMatchObject({ ok: false, fault: WalkFault.Permission, stage: 1 });
  });

  it("reports a stage-2 fault on a stage-1 table fetch as a table-fetch fault with the GPA", () => {
    const host = new HostMemory();
    const guest = new GuestMemory(host, 7, { sizeBytes: 1 << 30 });
    const s2 = hostTable(host);
    s2.builder.map(0, guest.pin(0)!, 1 << 21, Perm.ReadWrite);
    guest.write64Halves(0x1000, 0x4000_0000 | 3, 0);
    const r = newWalkResult();
    new NestedWalker(host, HOST_OWNER).translate(
      { format: toyFormat, geometry: toyGeometry, root: 0x1000 },
      { format: toyFormat, geometry: toyGeometry, root: s2.root },
      7,
      0,
      Perm.Read,
      r,
    );
    expect(r).toMatchObject({ ok: false, stage: 2, tableFetch: true, faultInput: 0x4000_0000, fault: WalkFault.Translation });
  });
});

describe("IOTLB", () => {
  it("hits every page size it holds, tagged by VMID and ASID", () => {
    const t = new Iotlb(64);
    const hit = newIotlbHit();
    t.insert(1, 5, 0x20_1234, 21, 0x8000_0000, Perm.Read, 42);
    t.insert(1, 5, 0x1000, 13, 0x2000, Perm.ReadWrite);
    expect(t.lookup(1, 5, 0x3f_ffff, hit)).toBe(true);
    expect(hit).toMatchObject({ pageBase: 0x8000_0000, pageShift: 21, payload: 42 });
    expect(t.lookup(1, 5, 0x1fff, hit)).toBe(true);
    expect(hit.pageShift).toBe(13);
    expect(t.lookup(1, 6, 0x20_0000, hit)).toBe(false);
    expect(t.lookup(2, 5, 0x20_0000, hit)).toBe(false);
  });

  it("invalidates by range across page sizes and by ASID wildcard", () => {
    const t = new Iotlb(64);
    const hit = newIotlbHit();
    t.insert(1, 1, 0, 21, 0, Perm.Read);
    t.insert(1, 2, 0x1000, 12, 0, Perm.Read);
    t.insert(1, 2, 0x40_0000, 12, 0, Perm.Read);
    expect(t.invalidateRange(1, ANY_ASID, 0x1000, 0x1000)).toBe(2);
    expect(t.lookup(1, 2, 0x40_0000, hit)).toBe(true);
    expect(t.size).toBe(1);
    expect(t.invalidateVmid(1)).toBe(1);
    expect(t.size).toBe(0);
  });

  it("evicts when full and keeps its bookkeeping consistent", () => {
    const t = new Iotlb(8);
    const hit = newIotlbHit();
    for (let i = 0; i < 20; i++) t.insert(i % 3, 1, i * 4096, 12, i * 4096, Perm.Read);
    expect(t.size).toBe(8);
    let found = 0;
    for (let i = 0; i < 20; i++) if (t.lookup(i % 3, 1, i * 4096, hit)) found++;
    expect(found).toBe(8);
    expect(t.invalidateAll()).toBe(8);
    expect(t.size).toBe(0);
  });

  it("matches a reference map under random operations", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant("insert" as const), vmid: fc.nat(3), asid: fc.nat(3), page: fc.nat(63), shift: fc.constantFrom(12, 21) }),
            fc.record({ op: fc.constant("range" as const), vmid: fc.nat(3), asid: fc.oneof(fc.nat(3), fc.constant(ANY_ASID)), page: fc.nat(63), pages: fc.integer({ min: 1, max: 600 }) }),
            fc.record({ op: fc.constant("asid" as const), vmid: fc.nat(3), asid: fc.nat(3) }),
          ),
        ),
        (ops) => {
          const t = new Iotlb(1000);
          const ref = new Map<string, [number, number, number, number]>();
          for (const o of ops) {
            if (o.op === "insert") {
              const base = Math.floor((o.page * 4096) / 2 ** o.shift) * 2 ** o.shift;
              t.insert(o.vmid, o.asid, o.page * 4096, o.shift, base, Perm.Read);
              ref.set(`${o.vmid}/${o.asid}/${o.shift}/${base}`, [o.vmid, o.asid, o.shift, base]);
            } else if (o.op === "range") {
              const start = o.page * 4096;
              const end = start + o.pages * 4096;
              t.invalidateRange(o.vmid, o.asid, start, o.pages * 4096);
              for (const [k, [v, a, s, b]] of ref) if (v === o.vmid && (o.asid === ANY_ASID || a === o.asid) && b < end && b + 2 ** s > start) ref.delete(k);
            } else {
              t.invalidateAsid(o.vmid, o.asid);
              for (const [k, [v, a]] of ref) if (v === o.vmid && a === o.asid) ref.delete(k);
            }
          }
          expect(t.size).toBe(ref.size);
          const hit = newIotlbHit();
          for (const [v, a, s, b] of ref.values()) {
            expect(t.lookup(v, a, b, hit)).toBe(true);
            expect(hit.pageShift).toBeLessThanOrEqual(Math.max(s, 21));
          }
        },
      ),
    );
  });
});

describe("leaf enumeration", () => {
  it("visits every leaf in a range, and stops at its budget on a self-referencing table", () => {
    const host = new HostMemory();
    const guest = new GuestMemory(host, 3, { sizeBytes: 1 << 24 });
    guest.write64Halves(0, 0x1000 | 3, 0);
    guest.write64Halves(0x1000, 0x2000 | 3, 0);
    guest.write64Halves(0x2000, 0x3000 | 3, 0);
    guest.write64Halves(0x3000 + 8 * 5, 0x7000 | 1, 0);
    const seen: number[] = [];
    forEachLeaf(toyFormat, toyGeometry, 0, new GuestTableReader(guest), 0, 2 ** 48, (l) => seen.push(l.input, l.output));
    expect(seen).toEqual([0x5000, 0x7000]);
    // Every root entry points back at the root: 512^4 entries reachable, the budget stops the visit.
    for (let i = 0; i < 512; i++) guest.write64Halves(i * 8, 0x0000 | 3, 0);
    expect(forEachLeaf(toyFormat, toyGeometry, 0, new GuestTableReader(guest), 0, 2 ** 48, () => undefined, 10_000).complete).toBe(false);
  });
});
