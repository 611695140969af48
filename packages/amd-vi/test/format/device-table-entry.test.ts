import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { encodeLayout, fromWords64, rawBits, toHex64 } from "@viommu/core";
import {
  applyIvhdDteSetting,
  decodeDte,
  dteGcr3Root,
  dteLayout,
  dteProblem,
  encodeDte,
  linuxUnusedDte,
  nestedGuestDteMask,
  nestedGuestDteProblem,
  setDteGcr3Root,
} from "../../src/format/index.js";

describe("DTE field positions (spec x86.md B3; Linux DTE_*/DEV_ENTRY_*, QEMU reserved masks)", () => {
  const spec: [string, number, number][] = [
    ["V", 0, 1],
    ["TV", 1, 1],
    ["HAD", 7, 2],
    ["Mode", 9, 3],
    ["HostPageTableRootPointer", 12, 40],
    ["PPR", 52, 1],
    ["GPRP", 53, 1],
    ["GIoV", 54, 1],
    ["GV", 55, 1],
    ["GLX", 56, 2],
    ["GCR3TRP_14_12", 58, 3],
    ["IR", 61, 1],
    ["IW", 62, 1],
    ["DomainID", 64, 16],
    ["GCR3TRP_30_15", 80, 16],
    ["I", 96, 1],
    ["SE", 97, 1],
    ["SA", 98, 1],
    ["IoCtl", 99, 2],
    ["Cache", 101, 1],
    ["SD", 102, 1],
    ["EX", 103, 1],
    ["SysMgt", 104, 2],
    ["GCR3TRP_51_31", 107, 21],
    ["IV", 128, 1],
    ["IntTabLen", 129, 4],
    ["IG", 133, 1],
    ["InterruptTableRootPointer", 134, 46],
    ["GuestPagingMode", 182, 2],
    ["InitPass", 184, 1],
    ["EIntPass", 185, 1],
    ["NMIPass", 186, 1],
    ["IntCtl", 188, 2],
    ["Lint0Pass", 190, 1],
    ["Lint1Pass", 191, 1],
    ["AttrV", 246, 1],
    ["Mode0FC", 247, 1],
    ["SnoopAttribute", 248, 8],
  ];
  it.each(spec)("%s at bit %i, %i wide", (name, bit, width) => {
    const f = dteLayout.field(name as Parameters<typeof dteLayout.field>[0]);
    expect([f.bit, f.width]).toEqual([bit, width]);
  });

  it("leaves exactly QEMU's reserved bits uncovered: [6:2], 63, [181:180], [206:192], [245:240]", () => {
    // AMDVI_DTE_QUAD0_RESERVED = GENMASK(6,2)|BIT(63); QUAD1 = 0; QUAD2 = GENMASK(53,52); QUAD3 = GENMASK(14,0)|GENMASK(53,48).
    expect(Array.from(dteLayout.reservedMask)).toEqual([0x0000007c, 0x80000000, 0, 0, 0, 0x00300000, 0x00007fff, 0x003f0000]);
  });
});

describe("known DTEs", () => {
  it("decodes Linux 6.1's unused-DeviceID DTE (real data: qwords 0x3, 0, 0x1, 0): V, TV, IV, Mode 0, no access", () => {
    const raw = fromWords64(["0x3", "0x0", "0x1", "0x0"]);
    expect(decodeDte(raw)).toMatchObject({ V: 1, TV: 1, Mode: 0, IR: 0, IW: 0, DomainID: 0, IV: 1, IntCtl: 0 });
    expect(toHex64(linuxUnusedDte())).toEqual(["0x0000000000000003", "0x0000000000000000", "0x0000000000000001", "0x0000000000000000"]);
    expect(toHex64(linuxUnusedDte({ snp: true, interruptRemapping: false }))[0]).toBe("0x0000000000000001");
  });

  it("decodes a Linux v1 DTE: root 0x100003000, Mode 3, IR|IW, V|TV, DomainID 5, IRT 0x100080 with 512 entries remapped", () => {
    // data[0] = root | 3 << 9 | DTE_FLAG_IR | DTE_FLAG_IW | V | TV; data[1] = domid;
    // data[2] = IRT root & GENMASK(51,6) | DTE_IRQ_REMAP_INTCTL (2 << 60) | DTE_INTTABLEN (9 << 1) | DTE_IRQ_REMAP_ENABLE.
    const raw = fromWords64(["0x6000000100003603", "0x0000000000000005", "0x2000000000100093", "0x0"]);
    expect(decodeDte(raw)).toMatchObject({
      V: 1,
      TV: 1,
      Mode: 3,
      HostPageTableRootPointer: 0x100003000,
      IR: 1,
      IW: 1,
      DomainID: 5,
      IV: 1,
      IntTabLen: 9,
      InterruptTableRootPointer: 0x100080,
      IntCtl: 2,
      GCR3TableRootPointer: 0,
    });
    expect(dteProblem(raw)).toBeUndefined();
    const encoded = encodeDte({ V: 1, TV: 1, Mode: 3, HostPageTableRootPointer: 0x100003000, IR: 1, IW: 1, DomainID: 5, IV: 1, IntTabLen: 9, InterruptTableRootPointer: 0x100080, IntCtl: 2 });
    expect(toHex64(encoded)).toEqual(["0x6000000100003603", "0x0000000000000005", "0x2000000000100093", "0x0000000000000000"]);
  });

  it("splits the GCR3 root 0xFEDCBA9876000 as Linux DTE_GCR3_VAL_A/B/C << 58 / 16 / 43", () => {
    // A = (gcr3 >> 12) & 7 = 6; B = (gcr3 >> 15) & 0xFFFF = 0x530E; C = (gcr3 >> 31) & 0x1FFFFF = 0x1FDB97.
    const raw = rawBits(256);
    setDteGcr3Root(raw, 0xfedcba9876000);
    expect(toHex64(raw).slice(0, 2)).toEqual(["0x1800000000000000", "0xfedcb800530e0000"]);
    const f = decodeDte(raw);
    expect(f).toMatchObject({ GCR3TRP_14_12: 6, GCR3TRP_30_15: 0x530e, GCR3TRP_51_31: 0x1fdb97, GCR3TableRootPointer: 0xfedcba9876000 });
    expect(() => setDteGcr3Root(raw, 0x1234)).toThrow(RangeError);
  });

  it("sets the IVHD DTE-setting bits: 0xD7 → InitPass, EIntPass, NMIPass, SysMgt = 1, Lint0Pass, Lint1Pass", () => {
    const raw = rawBits(256);
    applyIvhdDteSetting(raw, 0xd7);
    expect(toHex64(raw)).toEqual(["0x0000000000000000", "0x0000010000000000", "0xc700000000000000", "0x0000000000000000"]);
  });
});

describe("illegal DTEs (ILLEGAL_DEV_TABLE_ENTRY causes)", () => {
  it.each([
    ["reserved bit 2", ["0x5", "0", "0", "0"], "reserved-bits"],
    ["reserved bit 63", ["0x8000000000000001", "0", "0", "0"], "reserved-bits"],
    ["reserved bit 180", ["0x1", "0", "0x0010000000000000", "0"], "reserved-bits"],
    ["Mode 7", ["0x0000000000000e03", "0", "0", "0"], "reserved-mode"],
    ["IntTabLen 12", ["0x1", "0", "0x0000000000000019", "0"], "reserved-int-tab-len"],
    ["GLX 3", ["0x0300000000000001", "0", "0", "0"], "reserved-glx"],
    ["GuestPagingMode 2", ["0x1", "0", "0x0080000000000000", "0"], "reserved-guest-paging-mode"],
  ])("%s → %s", (_what, words, problem) => {
    expect(dteProblem(fromWords64(words))).toBe(problem);
  });
  it("ignores everything when V = 0", () => {
    expect(dteProblem(fromWords64(["0x8000000000000e04", "0", "0", "0"]))).toBeUndefined();
  });
});

describe("iommufd nested guest DTE (iommufd.md §8.1; Linux nested.c validate_gdte_nested)", () => {
  const goodGuest = (): Uint32Array => {
    const raw = fromWords64(["0x00c0000000000001", "0x0000000000000007", "0", "0"]); // V, GIoV, GV; gDomID 7
    setDteGcr3Root(raw, 0x5000);
    return raw;
  };
  it("accepts V | GV | GIoV with a GCR3 root", () => {
    expect(nestedGuestDteProblem(goodGuest(), false)).toBeUndefined();
  });
  it.each([
    ["host-only Mode", (r: Uint32Array) => (r[0] = (r[0]! | 0x600) >>> 0), "EINVAL"],
    ["host-only root pointer", (r: Uint32Array) => (r[0] = (r[0]! | 0x1000) >>> 0), "EINVAL"],
    ["no GCR3 root with V and GV", (r: Uint32Array) => setDteGcr3RootZero(r), "EINVAL"],
    ["GuestPagingMode 2", (r: Uint32Array) => (r[5] = (r[5]! | 0x00800000) >>> 0), "EINVAL"],
    ["GLX 3", (r: Uint32Array) => (r[1] = (r[1]! | 0x03000000) >>> 0), "EINVAL"],
    ["5-level guest paging on a 4-level host", (r: Uint32Array) => (r[5] = (r[5]! | 0x00400000) >>> 0), "EOPNOTSUPP"],
  ])("rejects %s with %s", (_what, spoil, errno) => {
    const raw = goodGuest();
    spoil(raw);
    expect(nestedGuestDteProblem(raw, false)?.errno).toBe(errno);
  });
  it("masks exactly PPR, GIoV, GLX, the GCR3 pieces and GuestPagingMode (set_dte_nested)", () => {
    expect(toHex64(nestedGuestDteMask())).toEqual(["0x1f50000000000000", "0xfffff800ffff0000", "0x00c0000000000000", "0x0000000000000000"]);
  });
});

function setDteGcr3RootZero(raw: Uint32Array): void {
  raw[1] = (raw[1]! & ~0x1c000000) >>> 0;
  raw[2] = (raw[2]! & 0x0000ffff) >>> 0;
  raw[3] = (raw[3]! & 0x000007ff) >>> 0;
}

describe("DTE decode is total", () => {
  it("decodes any 256 bits without throwing and round-trips the covered bits", () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { minLength: 4, maxLength: 4 }), (words) => {
        const raw = fromWords64(words);
        const f = decodeDte(raw);
        dteProblem(raw);
        nestedGuestDteProblem(raw, true);
        const { GCR3TableRootPointer: _derived, ...fields } = f;
        const again = encodeLayout(dteLayout, fields as never);
        for (let i = 0; i < 8; i++) expect(again[i]).toBe((raw[i]! & ~dteLayout.reservedMask[i]!) >>> 0);
      }),
    );
  });
});
