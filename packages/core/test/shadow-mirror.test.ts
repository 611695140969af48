import { describe, expect, it } from "vitest";
import {
  GuestPageAllocator,
  GuestTableReader,
  GuestTableStore,
  IommufdContext,
  PageTableBuilder,
  Perm,
  Platform,
  ShadowMirror,
  Type1ShadowBackend,
  IommufdShadowBackend,
  unwrap,
  type ShadowSource,
  EntryKind,
  address64,
  forEachLeaf,
  radixGeometry,
  type EntryDecode,
  type LeafVisit,
  type PageTableFormat,
} from "../src/index.js";
import { toyFormat, toyGeometry } from "./support/toy-format.js";

const PAGE = 4096;

function setup(limit?: number) {
  const platform = new Platform({ plugins: [] });
  const vm = platform.createVm({ memoryBytes: 2 ** 28 });
  const ctx = new IommufdContext(vm.id);
  const pages = new GuestPageAllocator(vm.memory, 2 ** 27, 2 ** 28);
  const guest = PageTableBuilder.create(toyFormat, toyGeometry, new GuestTableStore(vm.memory, pages))!;
  const backend = limit === undefined ? unwrap(IommufdShadowBackend.create(ctx, vm.memory)) : unwrap(Type1ShadowBackend.createType1(ctx, vm.memory, limit));
  const mirror = new ShadowMirror(backend, vm.memory, { log: platform.host.log, vm: vm.id, source: "test-vmm" });
  const source: ShadowSource = { format: toyFormat, geometry: toyGeometry, root: guest.root, reader: new GuestTableReader(vm.memory) };
  return { platform, vm, ctx, guest, backend, mirror, source };
}

describe("ShadowMirror", () => {
  it("installs every leaf up to the type1 limit, refuses the rest visibly: counted, first errno kept, written to the host log", () => {
    const { platform, vm, guest, mirror, source, backend } = setup(5);
    for (let i = 0; i < 8; i++) unwrap(guest.map(0x10_0000 + i * PAGE, 0x20_0000 + i * PAGE, PAGE, Perm.ReadWrite));
    const report = mirror.resync(source, 0, Infinity);
    expect(report).toMatchObject({ installed: 5, refused: 3, removed: 0, complete: true });
    expect(report.firstError?.errno).toBe("ENOSPC");
    expect(backend.entries).toBe(5);
    expect([...mirror.maps.keys()]).toEqual([0, 1, 2, 3, 4].map((i) => 0x10_0000 + i * PAGE));
    const log = platform.host.log.entries({ vm: vm.id, kind: "shadow-map-refused" });
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ errno: "ENOSPC", source: "test-vmm" });
  });

  it("removes what the guest unmapped over the range and only there, with large leaves straddling the range", () => {
    const { guest, mirror, source } = setup();
    unwrap(guest.map(0, 0x40_0000, 2 * 2 ** 20, Perm.ReadWrite)); // one 2 MiB leaf
    for (let i = 0; i < 4; i++) unwrap(guest.map(0x100_0000 + i * PAGE, 0x20_0000 + i * PAGE, PAGE, Perm.Read));
    expect(mirror.resync(source, 0, Infinity).installed).toBe(5);
    guest.unmap(0x100_0000 + PAGE, PAGE);
    const r = mirror.resync(source, 0x100_0000 + PAGE, PAGE);
    expect(r).toMatchObject({ removed: 1, installed: 0 });
    expect(mirror.maps.has(0x100_0000 + PAGE)).toBe(false);
    expect(mirror.maps.size).toBe(4);
    // An invalidation of one 4K page inside the 2 MiB leaf re-installs the whole leaf.
    const big = mirror.resync(source, 0x1000, PAGE);
    expect(big).toMatchObject({ removed: 1, installed: 1 });
    expect(mirror.maps.get(0)).toEqual({ gpa: 0x40_0000, size: 2 ** 21, perms: Perm.ReadWrite });
  });

  it("re-derives the whole of a large mapping it removed: a guest that splits a 2 MiB page and flushes one 4 KiB page keeps the rest mapped", () => {
    const { guest, mirror, source } = setup();
    unwrap(guest.map(0x20_0000, 0x40_0000, 2 ** 21, Perm.ReadWrite));
    expect(mirror.resync(source, 0, Infinity).installed).toBe(1);
    guest.unmap(0x20_0000, 2 ** 21);
    for (let i = 0; i < 512; i++) unwrap(guest.map(0x20_0000 + i * PAGE, 0x40_0000 + i * PAGE, PAGE, Perm.Read));
    const r = mirror.resync(source, 0x20_0000 + 7 * PAGE, PAGE);
    expect(r).toMatchObject({ removed: 1, installed: 512 });
    expect(mirror.maps.get(0x20_0000 + 300 * PAGE)).toEqual({ gpa: 0x40_0000 + 300 * PAGE, size: PAGE, perms: Perm.Read });
  });

  it("clear removes everything from the back end", () => {
    const { guest, mirror, source, backend } = setup(100);
    for (let i = 0; i < 3; i++) unwrap(guest.map(i * PAGE, 0x20_0000 + i * PAGE, PAGE, Perm.ReadWrite));
    mirror.resync(source, 0, Infinity);
    expect(mirror.clear().removed).toBe(3);
    expect(backend.entries).toBe(0);
  });
});

describe("GuestTableStore", () => {
  it("treats table pointers the guest corrupted as nothing present: no exception, no write outside guest RAM", () => {
    const platform = new Platform({ plugins: [] });
    const vm = platform.createVm({ memoryBytes: 2 ** 24 });
    const pages = new GuestPageAllocator(vm.memory, 2 ** 23, 2 ** 24);
    const store = new GuestTableStore(vm.memory, pages);
    const out = new Uint32Array([7, 7]);
    expect(() => store.read64Halves(2 ** 40, out)).not.toThrow();
    expect([...out]).toEqual([0, 0]);
    expect(() => store.write64Halves(2 ** 40, 1, 2)).not.toThrow();
    expect(() => store.write64Halves(2 ** 24 - 4, 1, 2)).not.toThrow();
    expect(() => store.freeTable(2 ** 30, 4096)).not.toThrow();
    // A builder whose root entry was overwritten with a pointer beyond RAM maps and unmaps without throwing.
    const builder = PageTableBuilder.create(toyFormat, toyGeometry, store)!;
    unwrap(builder.map(0x1000, 0x2000, 0x1000, Perm.ReadWrite));
    vm.memory.write64Halves(builder.root, (0x7fff_f000 | 3) >>> 0, 0x10);
    expect(() => builder.map(0x1000, 0x3000, 0x1000, Perm.ReadWrite)).not.toThrow();
    expect(() => builder.unmap(0, 2 ** 30)).not.toThrow();
  });
});

describe("forEachLeaf on formats that repeat leaves and skip levels", () => {
  /**
   * An AMD-v1-like test format: bit 0 present; bits 11:9 the next level (0 = leaf); a leaf's page size in
   * bits 63:52 as a shift (so one 16 KiB page can sit in four 4 KiB slots); bits 51:12 the address.
   */
  const repeatFormat = {
    name: "repeat",
    skippedLevelBitsMustBeZero: true,
    decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
      if ((lo & 1) === 0) {
        out.kind = EntryKind.Invalid;
        return;
      }
      out.address = address64(lo, hi, 12, 51);
      out.perms = Perm.ReadWrite;
      const next = (lo >>> 9) & 7;
      if (next === 0) {
        out.kind = EntryKind.Leaf;
        out.pageShift = hi >>> 20 || 12 + 9 * (level - 1);
        return;
      }
      out.kind = EntryKind.Table;
      out.nextLevel = next;
    },
  } as PageTableFormat;

  it("visits each copy of a repeated page with the page's size, and descends into a table that skips a level", () => {
    const mem = new Uint32Array(4 * 1024 * 2);
    const at = (table: number, index: number, lo: number, hi: number) => {
      mem[(table * 512 + index) * 2] = lo >>> 0;
      mem[(table * 512 + index) * 2 + 1] = hi >>> 0;
    };
    const base = 0x100_0000;
    const reader = { readEntry: (a: number, out: Uint32Array) => {
      const i = (a - base) / 8;
      if (i < 0 || i >= mem.length / 2) return false;
      out[0] = mem[i * 2]!;
      out[1] = mem[i * 2 + 1]!;
      return true;
    } };
    const tableAt = (n: number) => base + n * 4096;
    // Level 3 entry 0 points straight at a level-1 table (level 2 skipped); entry 1 at a level-2 table.
    at(0, 0, tableAt(1) | (1 << 9) | 1, 0);
    at(0, 1, tableAt(2) | (2 << 9) | 1, 0);
    // Level-1 table: one 16 KiB page at output 0x4000_0000, written in four 4 KiB slots (3..6 are not aligned: slots 4..7).
    for (let i = 4; i < 8; i++) at(1, i, 0x4000_0000 | 1, 14 << 20);
    // Level-2 table: a plain 2 MiB leaf.
    at(2, 3, 0x8000_0000 | 1, 0);
    const geometry = radixGeometry(3, 12, 9, 39);
    const seen: LeafVisit[] = [];
    forEachLeaf(repeatFormat, geometry, tableAt(0), reader, 0, 2 ** 39, (l) => seen.push({ ...l }));
    expect(seen.map((l) => [l.input, l.output, l.pageShift])).toEqual([
      [0x4000, 0x4000_0000, 14],
      [0x5000, 0x4000_0000, 14],
      [0x6000, 0x4000_0000, 14],
      [0x7000, 0x4000_0000, 14],
      [2 ** 30 + 3 * 2 ** 21, 0x8000_0000, 21],
    ]);
  });
});
