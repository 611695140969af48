import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { address64, EntryKind, newWalkResult, Perm, PageWalker, radixGeometry, WalkFault, type EntryDecode, type EntryReader, type PageTableFormat, type RadixLayout } from "../src/index.js";

const seed = Number(process.env.VIOMMU_SEED ?? Date.now() % 2 ** 31);

/**
 * A format with every feature the layout describes: V bit 0, R 1, W 2, leaf flag 3 at levels 2-3 (level 1 always
 * a leaf), bit 6 reserved in tables only, bits 11:7 and 5:4 reserved, address 51:12, 63:52 reserved, leaves
 * aligned to their size; tables grant Exec and User.
 */
const decoded: PageTableFormat = {
  name: "layout-test",
  decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
    if ((lo & 1) === 0) {
      out.kind = EntryKind.Invalid;
      return;
    }
    if ((lo & 0xfb0) !== 0 || (hi & 0xfff0_0000) !== 0) {
      out.kind = EntryKind.Fault;
      out.fault = WalkFault.Reserved;
      return;
    }
    out.address = address64(lo, hi, 12, 51);
    const leaf = level === 1 || (lo & 8) !== 0;
    if (leaf && level > 3) {
      out.kind = EntryKind.Fault;
      out.fault = WalkFault.Reserved;
      return;
    }
    const rw = (lo & 2 ? Perm.Read : 0) | (lo & 4 ? Perm.Write : 0);
    if (leaf) {
      out.kind = EntryKind.Leaf;
      out.pageShift = 12 + 9 * (level - 1);
      if (out.address % 2 ** out.pageShift !== 0) {
        out.kind = EntryKind.Fault;
        out.fault = WalkFault.Reserved;
        return;
      }
      out.perms = rw;
      return;
    }
    if (lo & 0x40) {
      out.kind = EntryKind.Fault;
      out.fault = WalkFault.Reserved;
      return;
    }
    out.kind = EntryKind.Table;
    out.nextLevel = level - 1;
    out.perms = rw | Perm.Exec | Perm.User;
  },
};

const layout: RadixLayout = {
  presentLo: 1,
  reservedLo: 0xfb0,
  reservedHi: 0xfff0_0000,
  tableReservedLo: 0x40,
  leafFlagLo: 8,
  alwaysLeafLevels: 1 << 1,
  leafLevels: (1 << 2) | (1 << 3),
  addressLo: 0xffff_f000,
  addressHi: 0x000f_ffff,
  leafAlignment: true,
  readLo: 2,
  writeLo: 4,
  leafPerms: 0,
  tablePerms: Perm.Exec | Perm.User,
};
const compiled: PageTableFormat = { ...decoded, layout };


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

describe("RadixLayout walk", () => {
  const geometry = { ...radixGeometry(4, 12, 9, 48), outputBits: 40 };
  const FLAGS = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0x7, 0x3, 0x5) }, { weight: 2, arbitrary: fc.constantFrom(0xf, 0xb, 0x47, 0x4f, 0x0) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xfff }) });
  const TARGETS = fc.constantFrom(0x1000, 0x2000, 0x3000, 0x1_0000_0000, 0x20_0000, 0x4000_0000, 0x40_0000_0000, 0x1234_5000, 0x100_0000_0000);
  /** The tables of the path an input walks: level 4 at the root, then one table per level. */
  const PATH = [0, 0x8000, 0x7000, 0x6000, 0x1000];

  it("gives exactly the walk the format's decodeEntry gives, for any entries on the walk's path, input and access", () => {
    const walker = new PageWalker();
    const a = newWalkResult();
    const b = newWalkResult();
    const outcomes = new Map<string, number>();
    const r = fc.check(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 48 + 2 ** 40 }),
        fc.array(fc.tuple(FLAGS, TARGETS, fc.integer({ min: 0, max: 5 }).map((x) => x > 0), fc.integer({ min: 0, max: 2 ** 32 - 1 })), { minLength: 4, maxLength: 4 }),
        fc.constantFrom(Perm.Read, Perm.Write, Perm.Read | Perm.Write, Perm.Read | Perm.User, Perm.Exec),
        (input, levels, access) => {
          const entries = new Map<number, readonly [number, number]>();
          for (let level = 4; level >= 1; level--) {
            const [flags, target, chain, raw] = levels[4 - level]!;
            // Mostly a pointer to the next table of the path (or a page), sometimes raw bits.
            const next = chain && level > 1 ? PATH[level - 1]! : target;
            const lo = raw % 11 === 0 ? raw >>> 0 : ((next % 2 ** 32) | flags) >>> 0;
            const hi = raw % 13 === 0 ? (raw * 31) >>> 0 : Math.floor(next / 2 ** 32);
            const index = Math.floor(input / 2 ** (12 + 9 * (level - 1))) % 512;
            entries.set(PATH[level]! + index * 8, [lo, hi]);
          }
          const reader = new MapReader(entries);
          walker.walk(decoded, geometry, PATH[4]!, input, access, reader, a);
          walker.walk(compiled, geometry, PATH[4]!, input, access, reader, b);
          expect(b).toEqual(a);
          const k = a.ok ? "ok" : `fault ${a.fault}`;
          outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
        },
      ),
      { seed, numRuns: 3000 },
    );
    if (r.failed) throw new Error(`VIOMMU_SEED=${seed}: ${fc.defaultReportMessage(r)}`);
    // The cases reach successful walks and every fault the layout can raise.
    for (const k of ["ok", `fault ${WalkFault.Translation}`, `fault ${WalkFault.Reserved}`, `fault ${WalkFault.Permission}`, `fault ${WalkFault.AddressSize}`]) expect(outcomes.get(k) ?? 0, `${k} in ${JSON.stringify([...outcomes])}`).toBeGreaterThan(5);
  });
});
