import { describe, expect, it } from "vitest";
import { DmaDevice, HostMemory, WalkFault, err, type DmaRequest, type PhysicalIommu, type WalkResult } from "../src/index.js";

/** A unit that translates the pages it was given (IOVA page → host page) and faults the rest. */
function pageUnit(pages: Map<number, number>): PhysicalIommu & { seen: DmaRequest[]; reported: DmaRequest[] } {
  const seen: DmaRequest[] = [];
  const reported: DmaRequest[] = [];
  return {
    name: "pages0",
    vendor: "test",
    seen,
    reported,
    hwInfo: () => err("EOPNOTSUPP", "test unit"),
    domainAllocPaging: () => err("EOPNOTSUPP", "test unit"),
    attachDevice: () => err("EOPNOTSUPP", "test unit"),
    detachDevice: () => undefined,
    translate(request: DmaRequest, out: WalkResult): void {
      seen.push(request);
      const base = pages.get(Math.floor(request.iova / 4096));
      out.ok = base !== undefined;
      out.fault = base === undefined ? WalkFault.Translation : WalkFault.None;
      out.stage = 1;
      out.pageRequest = -1;
      out.output = (base ?? 0) + (request.iova % 4096);
    },
    reportDmaFault(request: DmaRequest): void {
      reported.push(request);
    },
  };
}

function setup(): { host: HostMemory; device: DmaDevice; unit: ReturnType<typeof pageUnit>; hpa: number; other: number } {
  const host = new HostMemory();
  const hpa = host.allocate(1, 4)!;
  const other = host.allocate(2, 1)!;
  // IOVA pages 0x10..0x13 → the VM's pages in reverse order (not contiguous), 0x14 → another VM's page.
  const pages = new Map([
    [0x10, hpa + 0x3000],
    [0x11, hpa + 0x2000],
    [0x12, hpa + 0x1000],
    [0x13, hpa],
    [0x14, other],
  ]);
  const unit = pageUnit(pages);
  const device = new DmaDevice("dev", 0x100, unit, host, undefined);
  device.owner = 1;
  return { host, device, unit, hpa, other };
}

describe("DmaDevice into the caller's buffer", () => {
  it("reads across pages into buffer[offset, offset + length) and leaves the rest alone", () => {
    const { host, device, hpa } = setup();
    host.writeBytes(hpa + 0x3ffe, Uint8Array.of(1, 2));
    host.writeBytes(hpa + 0x2000, Uint8Array.of(3, 4));
    const buffer = new Uint8Array(10).fill(0xee);
    expect(device.readInto(0x10ffe, buffer, 3, 4)).toBe(true);
    expect([...buffer]).toEqual([0xee, 0xee, 0xee, 1, 2, 3, 4, 0xee, 0xee, 0xee]);
    expect(device.lastFault).toBeUndefined();
  });

  it("writes whole pages from a reused buffer and partial ones, each landing where the unit translated it", () => {
    const { host, device, hpa } = setup();
    const buffer = new Uint8Array(3 * 4096 + 8);
    for (let round = 1; round <= 2; round++) {
      buffer.fill(round);
      buffer[4] = 0x40 + round;
      expect(device.writeFrom(0x10000, buffer, 4, 2 * 4096 + 4)).toBe(true);
      expect(host.readBytes(hpa + 0x3000, 1)[0]).toBe(0x40 + round);
      expect([...host.readBytes(hpa + 0x3fff, 1), ...host.readBytes(hpa + 0x2000, 1), ...host.readBytes(hpa + 0x1003, 2)]).toEqual([round, round, round, 0]);
    }
  });

  it("hands the unit one request object, refilled per access, and a request of its own when it records a fault", () => {
    const { device, unit } = setup();
    const buffer = new Uint8Array(3 * 4096);
    expect(device.readInto(0x10000, buffer)).toBe(true);
    device.translate(0x11000, true);
    expect(unit.seen).toHaveLength(4);
    expect(new Set(unit.seen).size).toBe(1);
    expect(device.readInto(0x20000, buffer, 0, 8)).toBe(false);
    expect(unit.reported).toHaveLength(1);
    expect(unit.reported[0]).not.toBe(unit.seen[0]);
    expect(unit.reported[0]).toMatchObject({ iova: 0x20000, requesterId: 0x100 });
  });

  it("moves nothing when any page faults, and says where", () => {
    const { host, device, hpa, other } = setup();
    const buffer = new Uint8Array(4 * 4096).fill(7);
    expect(device.writeFrom(0x12000, buffer)).toBe(false);
    expect(device.lastFault).toMatchObject({ ok: false, iova: 0x15000, fault: WalkFault.Translation, reason: "translation", isolation: false });
    expect(host.readBytes(hpa + 0x1000, 1)[0]).toBe(0);
    expect(host.readBytes(other, 1)[0]).toBe(0);
    expect(host.violations).toEqual([]);
    expect(device.write(0x12000, buffer)).toMatchObject({ ok: false, iova: 0x15000 });
  });

  it("refuses, as isolation, a page of another VM, and a span outside the buffer as a caller's error", () => {
    const { device, other, host } = setup();
    expect(device.readInto(0x14000, new Uint8Array(8))).toBe(false);
    expect(device.lastFault).toMatchObject({ isolation: true, reason: "isolation" });
    expect(host.violations).toEqual([{ owner: 1, hpa: other, pageOwner: 2, write: false }]);
    expect(() => device.readInto(0x10000, new Uint8Array(8), 4, 8)).toThrow(RangeError);
  });

  it("keeps read() and write() answering with the data and the host pages", () => {
    const { device, hpa } = setup();
    expect(device.write(0x10ff0, Uint8Array.of(5, 6, 7))).toMatchObject({ ok: true, hpas: [hpa + 0x3ff0] });
    const r = device.read(0x10ff0, 0x20);
    expect(r.ok && [...r.data.subarray(0, 3)]).toEqual([5, 6, 7]);
    expect(r.ok && r.hpas).toEqual([hpa + 0x3ff0, hpa + 0x2000]);
  });
});
