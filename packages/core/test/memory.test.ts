import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, gpa, hpa, iova, checkedAdd, rangeLast } from "../src/index.js";

describe("addresses", () => {
  it("refuses non-integers and negatives at the edge, and detects overflow", () => {
    expect(() => iova(-1)).toThrow(RangeError);
    expect(() => gpa(1.5)).toThrow(RangeError);
    expect(hpa(0x1000)).toBe(0x1000);
    expect(checkedAdd(gpa(2 ** 53 - 2), 1)).toBe(2 ** 53 - 1);
    expect(checkedAdd(gpa(2 ** 53 - 1), 1)).toBeUndefined();
    expect(rangeLast(iova(0x1000), 0)).toBeUndefined();
  });
});

describe("host memory", () => {
  it("records the owner of every page and refuses DMA into pages of another owner", () => {
    const host = new HostMemory();
    const a = host.allocate(1, 4)!;
    const b = host.allocate(2, 1)!;
    expect(host.ownerOf(a + 0x3fff)).toBe(1);
    expect(host.ownerOf(b)).toBe(2);
    expect(host.dmaWrite(1, a + 0x3ffe, Uint8Array.of(1, 2))).toBe(true);
    expect(host.dmaWrite(1, b, Uint8Array.of(1))).toBe(false);
    expect(host.violations).toEqual([{ owner: 1, hpa: b, pageOwner: 2, write: true }]);
    expect(host.readBytes(b, 1)[0]).toBe(0);
  });

  it("scrubs freed pages before reuse", () => {
    const host = new HostMemory();
    const a = host.allocate(1)!;
    host.write32(a, 0xdeadbeef);
    host.free(a);
    const again = host.allocate(2)!;
    expect(again).toBe(a);
    expect(host.read32(again)).toBe(0);
  });

  it("reads a table entry only for the page's owner, and forgets the owner it checked once the page is freed", () => {
    const host = new HostMemory();
    const a = host.allocate(1)!;
    host.write64Halves(a + 8, 0x1234, 0x5678);
    const out = new Uint32Array(2);
    expect(host.readOwned64(1, a + 8, out)).toBe(true);
    expect([...out]).toEqual([0x1234, 0x5678]);
    // Checked once, the owner is cached with the frame: a second read by another owner must still be refused.
    expect(host.readOwned64(2, a + 8, out)).toBe(false);
    expect(host.readOwned64(1, a + 8, out)).toBe(true);
    host.free(a);
    const again = host.allocate(2)!;
    expect(again).toBe(a);
    host.write64Halves(again + 8, 0x9abc, 0);
    expect(host.readOwned64(1, a + 8, out)).toBe(false);
    expect(host.readOwned64(2, a + 8, out)).toBe(true);
    expect([...out]).toEqual([0x9abc, 0]);
    // An unwritten page of the owner reads zero; a page nobody owns is refused.
    const blank = host.allocate(1)!;
    expect(host.readOwned64(1, blank, out)).toBe(true);
    expect([...out]).toEqual([0, 0]);
    expect(host.readOwned64(1, blank + 0x10_0000, out)).toBe(false);
  });

  it("never lets an owner checked for one page vouch for another page cached in its place", () => {
    const host = new HostMemory();
    const pages = 2048; // at least the frame cache's size, so every slot is taken by each owner in turn
    const mine = host.allocate(1, pages)!;
    const theirs = host.allocate(2, pages)!;
    const out = new Uint32Array(2);
    for (let i = 0; i < pages; i++) {
      host.write64Halves(mine + i * 4096, 1, 0);
      host.write64Halves(theirs + i * 4096, 2, 0);
    }
    for (let i = 0; i < pages; i++) expect(host.readOwned64(1, mine + i * 4096, out)).toBe(true);
    // Plain reads cache the other owner's frames in the same slots.
    for (let i = 0; i < pages; i++) host.read64Halves(theirs + i * 4096, out);
    let leaked = 0;
    for (let i = 0; i < pages; i++) if (host.readOwned64(1, theirs + i * 4096, out)) leaked++;
    expect(leaked).toBe(0);
  });

  it("aligns multi-page runs naturally so large leaves can map them", () => {
    const host = new HostMemory();
    host.allocate(1, 1);
    const run = host.allocate(1, 512)!;
    expect(run % (512 * 4096)).toBe(0);
  });
});

describe("guest memory", () => {
  it("claims terabytes and backs only what is touched", () => {
    const host = new HostMemory();
    const g = new GuestMemory(host, 1, { sizeBytes: 2 ** 40 });
    g.write32(0xff_4567_8000, 0x11223344);
    expect(g.read32(0xff_4567_8000)).toBe(0x11223344);
    expect(g.read32(0x5000_0000)).toBe(0);
    expect(g.backedBytes).toBe(2 * 2 ** 20);
    expect(host.writtenPagesOf(1)).toHaveLength(1);
  });

  it("rejects accesses outside guest RAM so callers cannot reach other memory", () => {
    const g = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 20, base: 0x4000_0000 });
    expect(g.contains(0x3fff_ffff)).toBe(false);
    expect(g.contains(0x4000_0000 + 2 ** 20 - 4, 4)).toBe(true);
    expect(g.contains(0x4000_0000 + 2 ** 20 - 4, 5)).toBe(false);
    expect(() => g.read32(0x4010_0000)).toThrow(RangeError);
  });

  it("keeps a confidential guest's pages private until shared", () => {
    const g = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 24, confidential: true });
    expect(g.hostReadable(0x1000, 16)).toBe(false);
    g.setShared(0x1000, 0x2000, true);
    expect(g.hostReadable(0x1000, 0x2000)).toBe(true);
    expect(g.hostReadable(0x2ff0, 0x20)).toBe(false);
  });

  it("backs a range contiguously on request, or refuses when already backed", () => {
    const g = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 24, backingPageShift: 12 });
    g.write8(0x5000, 1);
    g.write8(0x3000, 1);
    expect(g.backingOf(0x5000)! - g.backingOf(0x3000)!).not.toBe(0x2000);
    expect(g.backContiguous(gpa(0x10000), 0x4000)).toBe(true);
    expect(g.backingOf(0x13000)! - g.backingOf(0x10000)!).toBe(0x3000);
    expect(g.backContiguous(gpa(0x3000), 0x1000)).toBe(false);
  });

  it("loads a raw image sparsely", () => {
    const g = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 24 });
    const image = new Uint8Array(0x10000);
    image[0x4005] = 7;
    expect(g.loadImage(image)).toBe(1);
    expect(g.read8(0x4005)).toBe(7);
    expect(g.writtenPages()).toEqual([0x4000]);
  });
});

describe("guest memory backing runs", () => {
  it("backs a range pinned at once with one host run, however large the claim (metadata follows runs, not bytes)", () => {
    const host = new HostMemory();
    const m = new GuestMemory(host, 1, { sizeBytes: 2 ** 40 });
    expect(m.pinRange(0, 2 ** 40)).toBe(true);
    expect(host.rangesOf(1)).toHaveLength(1);
    expect(m.backedBytes).toBe(2 ** 40);
    const [start, length] = host.rangesOf(1)[0]!;
    const r = m.pinRun(2 ** 39 + 0x1234, 2 ** 39)!;
    // Each 2 MiB huge page is its own: a run is host-contiguous to the page's end only.
    expect(r.length).toBe(2 ** 21 - 0x1234);
    expect(r.hpa >= start && r.hpa < start + length).toBe(true);
    expect(m.guestAddressOf(r.hpa)).toBe(2 ** 39 + 0x1234);
    const next = m.pinRun(2 ** 39 + 2 ** 21, 4096)!;
    expect(next.hpa).not.toBe(r.hpa - 0x1234 + 2 ** 21);
    expect(m.guestAddressOf(next.hpa)).toBe(2 ** 39 + 2 ** 21);
  });

  it("maps every chunk of a run to its own host chunk and back (the scramble is a bijection)", () => {
    const host = new HostMemory();
    for (const chunks of [1, 2, 3, 5, 64, 100]) {
      const m = new GuestMemory(host, chunks, { sizeBytes: chunks * 2 ** 21 });
      expect(m.pinRange(0, chunks * 2 ** 21)).toBe(true);
      const seen = new Set<number>();
      for (let c = 0; c < chunks; c++) {
        const h = m.backingOf(c * 2 ** 21 + 8)!;
        expect(h % 2 ** 21).toBe(8);
        seen.add(h);
        expect(m.guestAddressOf(h)).toBe(c * 2 ** 21 + 8);
        if (c > 0) expect(h - m.backingOf((c - 1) * 2 ** 21 + 8)!).not.toBe(2 ** 21);
      }
      expect(seen.size).toBe(chunks);
    }
  });

  it("stops a run at a chunk already backed, keeps both reachable both ways, and lists written pages in order", () => {
    const host = new HostMemory();
    const m = new GuestMemory(host, 1, { sizeBytes: 2 ** 30 });
    m.write32(0x60_0000, 0xaa); // chunk 3 backed on its own
    expect(m.pinRange(0x20_0000, 0x80_0000)).toBe(true); // chunks 1 and 2 as a run, 3 kept, 4 a run of its own
    expect(host.rangesOf(1)).toHaveLength(3);
    expect(m.read32(0x60_0000)).toBe(0xaa);
    m.write32(0x20_1000, 1);
    m.write32(0x80_0000, 2);
    m.write32(0x40_0000, 3);
    expect(m.writtenPages()).toEqual([0x20_1000, 0x40_0000, 0x60_0000, 0x80_0000]);
    expect(m.guestAddressOf(m.backingOf(0x60_0004)!)).toBe(0x60_0004);
    expect(m.guestAddressOf(m.backingOf(0x3f_fff8)!)).toBe(0x3f_fff8);
    expect(m.backContiguous(gpa(0x40_0000), 0x40_0000)).toBe(false);
    expect(m.backContiguous(gpa(0x100_0000), 0x40_0000)).toBe(true);
    expect(m.backingOf(0x120_0000)! - m.backingOf(0x100_0000)!).toBe(0x20_0000);
    expect(m.backedBytes).toBe(0xc0_0000);
  });
});
