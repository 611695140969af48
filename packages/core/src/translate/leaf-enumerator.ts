import type { PermBits } from "./access.js";
import { EntryKind, newEntryDecode, type PageTableFormat, type TableGeometry } from "./page-table-format.js";
import type { EntryReader } from "./page-walker.js";

export interface LeafVisit {
  readonly input: number;
  readonly output: number;
  readonly pageShift: number;
  readonly perms: PermBits;
  /** The level the leaf sits at, and where its entry is (for tools that read or update the entry itself). */
  readonly level: number;
  readonly entryAddress: number;
}

/**
 * Visits every leaf of a table tree whose input range overlaps [from, from + length), in input order, with
 * permissions accumulated as a walk would. For shadowing VMMs resynchronising a whole address space. Guest
 * tables are hostile: at most `maxEntries` entries are read, so a table that points back at itself (or
 * covers the whole input space with tables) cannot make this run unbounded.
 */
export function forEachLeaf(
  format: PageTableFormat,
  geometry: TableGeometry,
  root: number,
  reader: EntryReader,
  from: number,
  length: number,
  visit: (leaf: LeafVisit) => void,
  maxEntries = 1 << 22,
): { complete: boolean } {
  const entry = new Uint32Array(2);
  const d = newEntryDecode();
  let budget = maxEntries;
  const end = from + length;

  const walk = (table: number, level: number, base: number, perms: PermBits): boolean => {
    const shift = geometry.levelShift[level]!;
    const count = 2 ** geometry.indexBits[level]!;
    const span = 2 ** shift;
    const firstIndex = Math.max(0, Math.floor((from - base) / span));
    for (let i = firstIndex; i < count; i++) {
      const input = base + i * span;
      if (input >= end) break;
      if (--budget < 0) return false;
      if (!reader.readEntry(table + i * 8, entry)) continue;
      format.decodeEntry(entry[0]!, entry[1]!, level, d);
      if (d.kind === EntryKind.Leaf) {
        // A page larger than its slot (a format that repeats a large leaf in every slot it covers) is visited once per
        // copy, each time with its full size: a mirror that maps it must check the copies agree (a hostile table may
        // make them differ) and map each slot's own piece when they do not.
        visit({ input, output: d.address, pageShift: d.pageShift, perms: perms & d.perms, level, entryAddress: table + i * 8 });
      } else if (d.kind === EntryKind.Table && d.nextLevel < level && d.nextLevel >= 1) {
        // A table of a lower level than the next (a skipped level) covers the start of this slot only.
        if (!walk(d.address, d.nextLevel, input, perms & d.perms)) return false;
      }
    }
    return true;
  };

  const complete = walk(root, geometry.startLevel, 0, 15);
  return { complete };
}
