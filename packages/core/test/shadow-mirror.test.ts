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
