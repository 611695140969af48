import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, newWalkResult, PageWalker, Perm, type EntryReader, type PageTableFormat, type WalkResult } from "@viommu/core";
import { SLLPS_1G, SLLPS_2M } from "../../src/format/cap.js";
import { SlPteFormat } from "../../src/format/sl-pte.js";
import { vtdTableGeometry } from "../../src/format/table-geometry.js";
import { checkProperty } from "../support.js";

const TABLES = 0x10_0000;

/** The same format without its layout: the walker decodes every entry through decodeEntry. */
function byDecodeEntry(format: SlPteFormat): PageTableFormat {
  return { name: format.name, decodeEntry: (lo, hi, level, out) => format.decodeEntry(lo, hi, level, out) };
}

/** What a walk says, execute aside (a RadixLayout has no execute bit; no VT-d request asks for it). */
function summary(w: WalkResult): unknown {
  return { ok: w.ok, fault: w.fault, output: w.output, pageShift: w.pageShift, perms: w.perms & ~Perm.Exec, level: w.level, fetches: w.fetches, mapped: w.mapped, entryAddress: w.entryAddress };
}

/**
 * The compiled second-level walk (SlPteFormat.layout) against the decodeEntry walk over the same tables: eight
 * table pages whose entries point at each other (so walks reach every level, 2 MiB and 1 GiB leaves and every
 * fault), entries built from the bits that matter (R, W, X, PS, SNP, TM, ignored and above-HAW bits, misaligned
 * large-leaf addresses), every HAW, SLLPS and snoop setting; seed from VIOMMU_SEED.
 */
describe("the second-level RadixLayout", () => {
  it("walks exactly as decodeEntry does, faults included", () => {
    const flags = fc.record({ r: fc.boolean(), w: fc.boolean(), x: fc.boolean(), ps: fc.boolean(), snp: fc.boolean(), tm: fc.boolean(), ign: fc.boolean(), above: fc.boolean(), d: fc.boolean() });
    const entry = fc.tuple(flags, fc.nat(7), fc.constantFrom(0, 1, 0x100, 0x20000), fc.boolean());
    checkProperty(
      fc.property(
        fc.constantFrom(39, 46, 48, 52),
        fc.constantFrom(0, SLLPS_2M, SLLPS_2M | SLLPS_1G),
        fc.boolean(),
        fc.constantFrom(3, 4, 5) as fc.Arbitrary<3 | 4 | 5>,
        // Few slots and few indices, so walks meet written entries at every level.
        fc.array(fc.tuple(fc.nat(7), fc.nat(3), entry), { minLength: 1, maxLength: 80 }),
        fc.array(fc.tuple(fc.nat(3), fc.nat(3), fc.nat(3), fc.nat(0x3fff), fc.boolean()), { minLength: 1, maxLength: 20 }),
        (haw, sllps, snoop, levels, writes, requests) => {
          const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 4 * 2 ** 20 });
          for (const [page, slot, [f, target, low, leafy]] of writes) {
            // A table pointer to one of the eight pages, or a leaf address (page-aligned or not, for large leaves).
            const address = leafy ? 0x4000_0000 * (target + 1) + low * 0x1000 : TABLES + target * 0x1000;
            const lo = (address % 2 ** 32) | (f.r ? 1 : 0) | (f.w ? 2 : 0) | (f.x ? 4 : 0) | (f.ps ? 0x80 : 0) | (f.snp ? 0x800 : 0) | (f.d ? 0x200 : 0);
            const hi = Math.floor(address / 2 ** 32) | (f.tm ? 1 << 30 : 0) | (f.ign ? 1 << 21 : 0) | (f.above ? 1 << (haw - 32) : 0);
            memory.write64Halves(TABLES + page * 0x1000 + slot * 8, lo >>> 0, hi >>> 0);
          }
          const format = new SlPteFormat({ haw, sllps, snoop });
          expect(format.layout).toBeDefined();
          const geometry = vtdTableGeometry(levels);
          const reader: EntryReader = { readEntry: (a, out) => (memory.contains(a, 8) ? (memory.read64Halves(a, out), true) : false) };
          const walker = new PageWalker();
          const compiled = newWalkResult();
          const plain = newWalkResult();
          for (const [i4, i3, i2, offset, write] of requests) {
            // Indices into the top tables so the walk meets the written entries.
            const iova = ((i4 * 2 ** 39 + i3 * 2 ** 30 + i2 * 2 ** 21) % 2 ** geometry.inputBits) + offset;
            const access = write ? Perm.Write : Perm.Read;
            walker.walk(format, geometry, TABLES, iova, access, reader, compiled);
            walker.walk(byDecodeEntry(format), geometry, TABLES, iova, access, reader, plain);
            expect(summary(compiled), `iova 0x${iova.toString(16)}`).toEqual(summary(plain));
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it("reaches leaves at every level and every kind of fault over the runs", () => {
    // A fixed table: 1 GiB leaf, a 2 MiB leaf, a 4 KiB leaf, an SNP-reserved table entry.
    const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 4 * 2 ** 20 });
    const put = (page: number, slot: number, lo: number, hi = 0): void => memory.write64Halves(TABLES + page * 0x1000 + slot * 8, lo >>> 0, hi);
    put(0, 0, TABLES + 0x1000 + 3); // L4 → L3 page 1
    put(1, 0, 0x4000_0000 + 0x83); // 1 GiB leaf
    put(1, 1, TABLES + 0x2000 + 3); // → L2 page 2
    put(2, 0, 0x20_0000 + 0x83); // 2 MiB leaf
    put(2, 1, TABLES + 0x3000 + 3); // → L1 page 3
    put(3, 0, 0x5000 + 3); // 4 KiB leaf
    put(2, 2, TABLES + 0x3000 + 0x803); // SNP in a table entry: reserved
    const format = new SlPteFormat({ haw: 48, sllps: SLLPS_2M | SLLPS_1G, snoop: true });
    const reader: EntryReader = { readEntry: (a, out) => (memory.read64Halves(a, out), true) };
    const walker = new PageWalker();
    const r = newWalkResult();
    const seen = [0, 2 ** 30 + 0, 2 ** 30 + 2 ** 21, 2 ** 30 + 2 * 2 ** 21].map((iova) => {
      walker.walk(format, vtdTableGeometry(4), TABLES, iova, Perm.Read, reader, r);
      return r.ok ? r.pageShift : `fault ${r.fault}`;
    });
    expect(seen.slice(0, 3)).toEqual([30, 21, 12]);
    expect(seen[3]).toMatch(/^fault/);
  });
});
