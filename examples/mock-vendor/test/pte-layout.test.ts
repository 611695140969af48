/**
 * The mock PTE's RadixLayout against its decodeEntry: core's walker, given the layout, must walk exactly as it does
 * through decodeEntry (results, faults, page sizes) for any entries on the path, any input and any access.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { newWalkResult, PageWalker, Perm, WalkFault, type EntryReader, type PageTableFormat } from "@viommu/core";
import { mockGeometry, mockPteFormat } from "../src/format/pte.js";

const seed = Number(process.env.VIOMMU_SEED ?? Date.now() % 2 ** 31);
const decoded: PageTableFormat = { ...mockPteFormat, layout: undefined };

class MapReader implements EntryReader {
  constructor(private readonly entries: Map<number, readonly [number, number]>) {}
  readEntry(address: number, out: Uint32Array): boolean {
    if (address >= 0x40_0000_0000) return false;
    const e = this.entries.get(address);
    out[0] = e?.[0] ?? 0;
    out[1] = e?.[1] ?? 0;
    return true;
  }
}

describe("mock PTE RadixLayout", () => {
  const geometry = { ...mockGeometry, outputBits: 40 };
  const RW = [0x7, 0x3, 0x5, 0x1];
  /** Page addresses aligned for 4K, 2M and 1G leaves, some beyond the 40-bit output width. */
  const TARGETS = [0x1000, 0x2000, 0x1234_5000, 0x20_0000, 0x60_0000, 0x4000_0000, 0x1_0000_0000, 0x40_0000_0000, 0x100_0000_0000];
  const PATH = [0, 0x8000, 0x7000, 0x6000, 0x1000];
  /** One entry of the path: a table pointer, a leaf (L above level 1), an entry with D / reserved bits, or raw bits. */
  const ENTRY = fc.tuple(fc.integer({ min: 0, max: 11 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }));

  it("walks exactly as decodeEntry does, reaching 4K, 2M and 1G leaves and every fault", () => {
    expect(mockPteFormat.layout).toBeDefined();
    const walker = new PageWalker();
    const a = newWalkResult();
    const b = newWalkResult();
    const outcomes = new Map<string, number>();
    const r = fc.check(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 48 + 2 ** 40 }),
        fc.array(ENTRY, { minLength: 4, maxLength: 4 }),
        fc.constantFrom(Perm.Read, Perm.Write, Perm.ReadWrite, Perm.Read | Perm.User, Perm.Exec),
        (input, levels, access) => {
          const entries = new Map<number, readonly [number, number]>();
          for (let level = 4; level >= 1; level--) {
            const [kind, x, y] = levels[4 - level]!;
            // Leaves mostly aligned to their level's page size (kind 8: any target, often misaligned).
            const aligned = TARGETS.filter((t) => t % 2 ** (12 + 9 * (level - 1)) === 0);
            const target = kind === 8 ? TARGETS[x % TARGETS.length]! : aligned[x % aligned.length]!;
            let lo: number;
            let hi: number;
            if ((kind <= 5 || (level === 4 && kind <= 8)) && level > 1) [lo, hi] = [PATH[level - 1]! | RW[x % 4]!, 0];
            else if (kind <= 8) [lo, hi] = [((target % 2 ** 32) | RW[x % 4]! | (level > 1 ? 8 : 0)) >>> 0, Math.floor(target / 2 ** 32)];
            else if (kind === 9) [lo, hi] = [((target % 2 ** 32) | RW[x % 4]! | (y & 0xff8)) >>> 0, Math.floor(target / 2 ** 32) | (y & 0xfff0_0000)];
            else [lo, hi] = [x >>> 0, y >>> 0];
            entries.set(PATH[level]! + (Math.floor(input / 2 ** (12 + 9 * (level - 1))) % 512) * 8, [lo, hi]);
          }
          const reader = new MapReader(entries);
          walker.walk(decoded, geometry, PATH[4]!, input, access, reader, a);
          walker.walk(mockPteFormat, geometry, PATH[4]!, input, access, reader, b);
          expect(b).toEqual(a);
          const k = a.ok ? `ok ${a.pageShift}` : `fault ${a.fault}`;
          outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
        },
      ),
      { seed, numRuns: 5000 },
    );
    if (r.failed) throw new Error(`VIOMMU_SEED=${seed}: ${fc.defaultReportMessage(r)}`);
    for (const k of ["ok 12", "ok 21", "ok 30", `fault ${WalkFault.Translation}`, `fault ${WalkFault.Reserved}`, `fault ${WalkFault.Permission}`, `fault ${WalkFault.AddressSize}`]) {
      expect(outcomes.get(k) ?? 0, `VIOMMU_SEED=${seed}: ${k} in ${JSON.stringify([...outcomes])}`).toBeGreaterThan(3);
    }
  });
});
