import { describe, expect, it } from "vitest";
import { DIRTY_TRACKING_ENABLE, Perm, unwrap } from "@viommu/core";
import { encodeCommand } from "../../src/format/command.js";
import { smmuBed } from "../support.js";

const IOVA = 0x10_0000;
const GPA = 0x2000_0000;
const PAGE = 4096;

/** The guest's level-3 entry for `iova` in a 4 KiB, 48-bit stage-1 table at `root`: its GPA. */
function leafGpa(memory: { readWords(at: number, out: Uint32Array): Uint32Array }, root: number, iova: number): number {
  let table = root;
  for (const shift of [39, 30, 21]) {
    const e = memory.readWords(table + (Math.floor(iova / 2 ** shift) % 512) * 8, new Uint32Array(2));
    table = ((e[0]! & 0xfffff000) >>> 0) + (e[1]! & 0xffff) * 2 ** 32;
  }
  return table + (Math.floor(iova / PAGE) % 512) * 8;
}

describe("SMMUv3 HTTU in a nested guest's stage 1 (a CD with HA/HD, which the host SMMU implements)", () => {
  it("sets AF on access, clears AP[2] of a writable-clean leaf on the first write, and the descriptor update dirties its page in the stage-2 parent", () => {
    const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], backingPageShift: 12, memoryBytes: 2 ** 30 }], dirtyTracking: true });
    const d = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, d));
    unwrap(s.driver.map(d, IOVA, GPA, PAGE, Perm.ReadWrite));
    const mem = s.vm.memory;
    // The guest sets CD.HA (bit 43) and HD (bit 42), and makes the leaf writable-clean (AP[2], DBM) with AF clear.
    const cd = s.driver.cdTableOf(0x10)!;
    const dw0 = mem.readWords(cd, new Uint32Array(2));
    mem.write64Halves(cd, dw0[0]!, (dw0[1]! | (3 << 10)) >>> 0);
    const leafAt = leafGpa(mem, s.driver.domainInfo(d)!.root, IOVA);
    const leaf = mem.readWords(leafAt, new Uint32Array(2));
    mem.write64Halves(leafAt, ((leaf[0]! | (1 << 7)) & ~(1 << 10)) >>> 0, (leaf[1]! | (1 << 19)) >>> 0);
    unwrap(s.driver.submitCommands([encodeCommand("CMD_CFGI_CD", { SID: 0x10, SSID: 0, Leaf: 1 }), encodeCommand("CMD_TLBI_NH_ASID", { ASID: s.driver.domainInfo(d)!.asid })]));
    unwrap(s.v.iommufd.hwptSetDirtyTracking(s.v.parentHwptId, DIRTY_TRACKING_ENABLE));
    const bits = () => {
      const e = mem.readWords(leafAt, new Uint32Array(2));
      return { af: (e[0]! >>> 10) & 1, ap2: (e[0]! >>> 7) & 1, dbm: (e[1]! >>> 19) & 1 };
    };
    const dirty = (gpa: number) => {
      let bitmap = new Uint8Array(0);
      unwrap(s.v.iommufd.hwptGetDirtyBitmap({ hwptId: s.v.parentHwptId, flags: 0, iova: gpa - (gpa % PAGE), length: PAGE, pageSize: PAGE, bitmap: (n) => (bitmap = new Uint8Array(n)) }));
      return bitmap[0] === 1;
    };
    expect(s.device.read(IOVA, 4).ok).toBe(true);
    expect(bits()).toEqual({ af: 1, ap2: 1, dbm: 1 });
    expect([dirty(leafAt), dirty(GPA)]).toEqual([true, false]);
    expect(s.device.write(IOVA, Uint8Array.of(5)).ok).toBe(true);
    expect(bits()).toEqual({ af: 1, ap2: 0, dbm: 1 });
    expect([dirty(leafAt), dirty(GPA)]).toEqual([true, true]);
  });
});
