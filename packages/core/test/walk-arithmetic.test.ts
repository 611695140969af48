import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { indexBitsOf, Iotlb, newIotlbHit, Perm } from "../src/index.js";

const seed = Number(process.env.VIOMMU_SEED ?? Date.now() % 2 ** 31);

function check(property: fc.IProperty<[number, number, number]> | fc.IPropertyWithHooks<[number, number, number]>): void {
  const r = fc.check(property, { seed, numRuns: 2000 });
  if (r.failed) throw new Error(`VIOMMU_SEED=${seed}: ${fc.defaultReportMessage(r)}`);
}

describe("walk arithmetic", () => {
  it("takes a level's index bits from the input's 32-bit halves exactly as the 64-bit arithmetic does", () => {
    check(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.integer({ min: 0, max: 52 }), fc.integer({ min: 1, max: 30 }), (input, shift, bits) => {
        const expected = Number((BigInt(input) >> BigInt(shift)) & ((1n << BigInt(bits)) - 1n));
        expect(indexBitsOf(input >>> 0, Math.floor(input / 2 ** 32) >>> 0, input, shift, bits)).toBe(expected);
      }),
    );
  });

  it("answers an IOTLB hit with the input page base, so the output keeps the input's offset at every page size", () => {
    const t = new Iotlb(16);
    const hit = newIotlbHit();
    const address = 0x7_1234_5678_9abc;
    for (const shift of [12, 21, 30, 39]) {
      t.insert(1, 2, address, shift, 2 ** 45, Perm.Read);
      expect(t.lookup(1, 2, address, hit)).toBe(true);
      expect(hit.inputBase).toBe(Math.floor(address / 2 ** shift) * 2 ** shift);
      t.invalidateAll();
    }
  });

  it("removes exactly a range's pages from a tag holding many more, however long entries churn", () => {
    const t = new Iotlb(4096 + 16);
    for (let i = 0; i < 4096; i++) t.insert(3, 4, i * 4096, 12, i * 4096, Perm.Read);
    const hit = newIotlbHit();
    for (let round = 0; round < 200; round++) {
      for (let p = 0; p < 16; p++) t.insert(3, 4, 2 ** 40 + p * 4096, 12, p * 4096, Perm.Read);
      expect(t.invalidateRange(3, 4, 2 ** 40 + 4096, 14 * 4096)).toBe(14);
      expect(t.invalidateRange(3, 4, 2 ** 40, 16 * 4096)).toBe(2);
    }
    expect(t.size).toBe(4096);
    for (let i = 0; i < 4096; i += 97) expect(t.lookup(3, 4, i * 4096 + 5, hit) && hit.pageBase === i * 4096).toBe(true);
  });

  it("keeps every entry findable through deletions in a small, crowded hash table (clusters wrapping its end)", () => {
    const op = fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 3 }));
    const r = fc.check(
      fc.property(fc.array(op, { minLength: 1, maxLength: 200 }), (ops) => {
        const t = new Iotlb(8);
        const reference = new Map<string, number>();
        const hit = newIotlbHit();
        let n = 0;
        for (const [kind, asid, page] of ops) {
          const key = `${asid}:${page}`;
          if (kind === 0) {
            t.insert(1, asid, page * 4096, 12, ++n * 4096, Perm.Read);
            reference.set(key, n * 4096);
          } else if (kind === 1) {
            expect(t.invalidateRange(1, asid, page * 4096, 4096)).toBe(reference.delete(key) ? 1 : 0);
          }
          for (const [k, base] of reference) {
            const [a, p] = k.split(":").map(Number);
            expect(t.lookup(1, a!, p! * 4096, hit) && hit.pageBase).toBe(base);
          }
          expect(t.size).toBe(reference.size);
        }
      }),
      { seed, numRuns: 300 },
    );
    if (r.failed) throw new Error(`VIOMMU_SEED=${seed}: ${fc.defaultReportMessage(r)}`);
  });

  it("finds every entry left after deletions from a full table of 16 buckets, in 2000 different arrangements", () => {
    let lost = 0;
    for (let trial = 0; trial < 2000; trial++) {
      const t = new Iotlb(8);
      const hit = newIotlbHit();
      const pages: number[] = [];
      for (let k = 0; k < 8; k++) pages.push((trial * 7 + k * 13) % 50);
      for (const p of pages) t.insert(1, 0, p * 4096, 12, p * 4096, Perm.Read);
      for (const p of pages.slice(0, 4)) expect(t.invalidateRange(1, 0, p * 4096, 4096)).toBe(1);
      for (const p of pages.slice(4)) if (!(t.lookup(1, 0, p * 4096, hit) && hit.pageBase === p * 4096)) lost++;
    }
    expect(lost).toBe(0);
  });
});
