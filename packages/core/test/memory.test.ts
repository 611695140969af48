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
