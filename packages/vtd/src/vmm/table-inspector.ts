import { address64, EntryKind, newEntryDecode, Perm, type MappingLeaf, type PageTableFormat, type TableInspector, type TranslationContext } from "@viommu/core";
import { capSupportsLevels } from "../format/cap.js";
import { contextEntryHasReservedBits } from "../format/context-entry.js";
import { pasidDirEntryHasReservedBits } from "../format/pasid-dir-entry.js";
import { pasidEntryHasReservedBits, PasidGranularTranslationType } from "../format/pasid-entry.js";
import { rootEntryHasReservedBits } from "../format/root-entry.js";
import { smContextEntryHasReservedBits } from "../format/sm-context-entry.js";
import { smRootEntryHasReservedBits } from "../format/sm-root-entry.js";
import { leafPageShift } from "../format/table-geometry.js";
import type { GuestTranslator } from "./guest-translator.js";

/** How a context's tables are walked: their format and top level. */
interface ContextTables {
  readonly format: PageTableFormat;
  readonly levels: number;
  /** First-level tables: the top table's upper half maps the canonical upper half of the address space. */
  readonly firstLevel: boolean;
  /** The reserved-bit fault reason of a paging entry of these tables. */
  readonly reservedReason: string;
}

/** Paging entries visited per context at most: tables shared in a loop cannot make a listing endless. */
const MAX_ENTRIES = 1 << 24;

const hex = (v: number): string => `0x${v.toString(16)}`;

/**
 * `viommu mappings --vendor vtd`: every context the root table configures (legacy: each present context entry
 * by bus/devfn with its DID, SLPTPTR and AW; scalable: each present PASID entry under each present context),
 * in requester-id then PASID order, and every leaf of a context's tables in IOVA order. Entries are checked as
 * the hardware checks them (VT-d spec §7.1.3 conditions, with the fault each would raise): reserved bits set
 * (0xA root, 0xB context, 0x5A PASID directory, 0x5B PASID entry… as the translator's checks name them; 0xC,
 * 0x7A, 0x72 in paging entries) and pointers outside guest RAM are listed as anomalies instead of being followed.
 */
export class VtdTableInspector implements TableInspector {
  private readonly tables = new WeakMap<TranslationContext, ContextTables>();
  private readonly words = new Uint32Array(16);

  constructor(private readonly translator: GuestTranslator) {}

  private read(address: number, count: number): Uint32Array | undefined {
    const memory = this.translator.memory;
    if (!(address >= 0) || address % 8 !== 0 || !memory.contains(address, count * 4)) return undefined;
    return memory.readWords(address, this.words.subarray(0, count));
  }

  private outside(what: string, address: number, bytes: number): string | undefined {
    return this.translator.memory.contains(address, bytes) ? undefined : `${what} ${hex(address)} outside guest RAM`;
  }

  contexts(): readonly TranslationContext[] {
    const out: TranslationContext[] = [];
    if (this.translator.scalable) this.scalableContexts(out);
    else this.legacyContexts(out);
    return out;
  }

  private legacyContexts(out: TranslationContext[]): void {
    const t = this.translator;
    const haw = t.config.haw;
    for (let bus = 0; bus < 256; bus++) {
      const root = this.read(t.rootTable + bus * 16, 4);
      if (root === undefined || (root[0]! & 1) === 0) continue;
      const rootAnomalies = rootEntryHasReservedBits(root, haw) ? ["root entry: reserved bits set (fault 0xA)"] : [];
      const ctp = address64(root[0]!, root[1]!, 12, 51);
      for (let devfn = 0; devfn < 256; devfn++) {
        const e = this.read(ctp + devfn * 16, 4);
        if (e === undefined) {
          if (devfn === 0) out.push({ rid: bus << 8, root: 0, mode: "blocked", anomalies: [...rootAnomalies, `root entry: context table ${hex(ctp)} outside guest RAM (fault 0x9)`] });
          break;
        }
        if ((e[0]! & 1) === 0) continue;
        const anomalies = [...rootAnomalies];
        if (contextEntryHasReservedBits(e, haw)) anomalies.push("context entry: reserved bits set (fault 0xB)");
        const tt = (e[0]! >>> 2) & 3;
        const did = (e[2]! >>> 8) & 0xffff;
        const slptptr = address64(e[0]!, e[1]!, 12, 51);
        const rid = (bus << 8) | devfn;
        if (tt === 2) {
          out.push({ rid, domain: did, root: 0, mode: "passthrough", ...(anomalies.length > 0 ? { anomalies } : {}) });
          continue;
        }
        if (tt === 3) anomalies.push("context entry: TT 3 is reserved (fault 0x3)");
        const aw = e[2]! & 7;
        const levels = aw + 2;
        if (levels > 5 || !capSupportsLevels(t.config.sagaw, levels)) anomalies.push(`context entry: AW ${aw} is not a width this unit supports (fault 0x3)`);
        const far = this.outside("SLPTPTR", slptptr, 4096);
        if (far !== undefined) anomalies.push(far);
        const context: TranslationContext = { rid, domain: did, root: slptptr, mode: tt === 1 ? "second-level (device-TLB)" : "second-level", ...(anomalies.length > 0 ? { anomalies } : {}) };
        out.push(context);
        if (levels <= 5) this.tables.set(context, { format: t.legacySl, levels, firstLevel: false, reservedReason: "0xC" });
      }
    }
  }

  private scalableContexts(out: TranslationContext[]): void {
    const t = this.translator;
    const haw = t.config.haw;
    for (let bus = 0; bus < 256; bus++) {
      const root = this.read(t.rootTable + bus * 16, 4);
      if (root === undefined) continue;
      const halves = [
        { present: (root[0]! & 1) !== 0, ctp: address64(root[0]!, root[1]!, 12, 51), first: 0 },
        { present: (root[2]! & 1) !== 0, ctp: address64(root[2]!, root[3]!, 12, 51), first: 0x80 },
      ];
      const rootWords = Uint32Array.from(root);
      for (const half of halves) {
        if (!half.present) continue;
        const rootAnomalies = smRootEntryHasReservedBits(rootWords, half.first, haw) ? ["scalable-mode root entry: reserved bits set (fault 0x3A)"] : [];
        for (let i = 0; i < 128; i++) {
          const e = this.read(half.ctp + i * 32, 8);
          const rid = (bus << 8) | (half.first + i);
          if (e === undefined) {
            if (i === 0) out.push({ rid, root: 0, mode: "blocked", anomalies: [...rootAnomalies, `root entry: context table ${hex(half.ctp)} outside guest RAM (fault 0x40)`] });
            break;
          }
          if ((e[0]! & 1) === 0) continue;
          const ctxAnomalies = [...rootAnomalies];
          if (smContextEntryHasReservedBits(e, haw)) ctxAnomalies.push("scalable-mode context entry: reserved bits set (fault 0x42)");
          const paside = (e[0]! & 8) !== 0;
          const pdts = (e[0]! >>> 9) & 7;
          const dir = address64(e[0]!, e[1]!, 12, 51);
          const ridPasid = e[2]! & 0xfffff;
          this.pasidContexts(out, rid, dir, 2 ** (pdts + 7), paside ? undefined : ridPasid, ctxAnomalies);
        }
      }
    }
  }

  /** Every present PASID entry under one context (only RID_PASID's when PASIDE is clear). */
  private pasidContexts(out: TranslationContext[], rid: number, dir: number, dirEntries: number, only: number | undefined, inherited: string[]): void {
    const t = this.translator;
    const haw = t.config.haw;
    const dirFar = this.outside("PASIDDIRPTR", dir, 8);
    if (dirFar !== undefined) {
      out.push({ rid, root: 0, mode: "blocked", anomalies: [...inherited, `${dirFar} (fault 0x50)`] });
      return;
    }
    const firstDir = only === undefined ? 0 : only >>> 6;
    const lastDir = only === undefined ? dirEntries - 1 : only >>> 6;
    for (let d = firstDir; d <= lastDir && d < dirEntries; d++) {
      const de = this.read(dir + d * 8, 2);
      if (de === undefined || (de[0]! & 1) === 0) continue;
      const dirAnomalies = [...inherited];
      if (pasidDirEntryHasReservedBits(de, haw)) dirAnomalies.push("PASID directory entry: reserved bits set (fault 0x52)");
      const table = address64(de[0]!, de[1]!, 12, 51);
      const tableFar = this.outside("SMPTBLPTR", table, 4096);
      if (tableFar !== undefined) {
        out.push({ rid, pasid: d * 64, root: 0, mode: "blocked", anomalies: [...dirAnomalies, `${tableFar} (fault 0x58)`] });
        continue;
      }
      for (let i = 0; i < 64; i++) {
        const pasid = d * 64 + i;
        if (only !== undefined && pasid !== only) continue;
        const pe = this.read(table + i * 64, 16);
        if (pe === undefined || (pe[0]! & 1) === 0) continue;
        const anomalies = [...dirAnomalies];
        if (pasidEntryHasReservedBits(pe, haw)) anomalies.push("PASID table entry: reserved bits set (fault 0x5A)");
        const did = pe[2]! & 0xffff;
        const pgtt = (pe[0]! >>> 6) & 7;
        let context: TranslationContext;
        let tables: ContextTables | undefined;
        if (pgtt === PasidGranularTranslationType.FL_ONLY) {
          const root = address64(pe[4]!, pe[5]!, 12, 51);
          const flpm = (pe[4]! >>> 2) & 3;
          if (flpm > 1) anomalies.push(`PASID table entry: FLPM ${flpm} is reserved (fault 0x5B)`);
          const far = this.outside("FLPTPTR", root, 4096);
          if (far !== undefined) anomalies.push(far);
          context = { rid, pasid, domain: did, root, mode: flpm === 1 ? "first-level (5-level)" : "first-level", ...(anomalies.length > 0 ? { anomalies } : {}) };
          tables = { format: t.fl, levels: 4 + (flpm & 1), firstLevel: true, reservedReason: "0x72" };
        } else if (pgtt === PasidGranularTranslationType.SL_ONLY) {
          const root = address64(pe[0]!, pe[1]!, 12, 51);
          const levels = ((pe[0]! >>> 2) & 7) + 2;
          if (levels > 5 || !capSupportsLevels(t.config.sagaw, levels)) anomalies.push(`PASID table entry: AW ${levels - 2} is not a width this unit supports (fault 0x5B)`);
          const far = this.outside("SLPTPTR", root, 4096);
          if (far !== undefined) anomalies.push(far);
          context = { rid, pasid, domain: did, root, mode: "second-level", ...(anomalies.length > 0 ? { anomalies } : {}) };
          if (levels <= 5) tables = { format: t.scalableSl, levels, firstLevel: false, reservedReason: "0x7A" };
        } else if (pgtt === PasidGranularTranslationType.PT) {
          context = { rid, pasid, domain: did, root: 0, mode: "passthrough", ...(anomalies.length > 0 ? { anomalies } : {}) };
        } else {
          anomalies.push(`PASID table entry: PGTT ${pgtt} ${pgtt === 3 ? "(nested) is not offered" : "is reserved"} (fault 0x5B)`);
          context = { rid, pasid, domain: did, root: 0, mode: pgtt === 3 ? "nested" : "reserved", anomalies };
        }
        out.push(context);
        if (tables !== undefined) this.tables.set(context, tables);
      }
    }
  }

  leaves(context: TranslationContext, visit: (leaf: MappingLeaf) => void): number {
    const tables = this.tables.get(context);
    if (tables === undefined) return 0;
    const state = { visited: 0, entries: 0 };
    this.table(tables, context.root, tables.levels, 0, visit, state);
    return state.visited;
  }

  /** The leaves under the table at `table` (level `level`), which maps input addresses from `base`. */
  private table(tables: ContextTables, table: number, level: number, base: number, visit: (leaf: MappingLeaf) => void, state: { visited: number; entries: number }): void {
    const memory = this.translator.memory;
    if (!memory.contains(table, 4096)) return;
    const d = newEntryDecode();
    const shift = leafPageShift(level);
    const size = 2 ** shift;
    const entry = new Uint32Array(2);
    for (let index = 0; index < 512; index++) {
      if (++state.entries > MAX_ENTRIES) return;
      const address = table + index * 8;
      memory.readWords(address, entry);
      const lo = entry[0]!;
      const hi = entry[1]!;
      tables.format.decodeEntry(lo, hi, level, d);
      if (d.kind === EntryKind.Invalid) continue;
      // The top first-level table's upper half maps the canonical upper half (bits 63:N-1 set).
      const upper = tables.firstLevel && level === tables.levels && index >= 256;
      const iova = upper ? 2 ** 64 - 2 ** (shift + 9) + index * size : base + index * size;
      if (d.kind === EntryKind.Fault) {
        state.visited++;
        visit({ iova, output: address64(lo, hi, 12, 51), size, read: (lo & 1) !== 0, write: (lo & 2) !== 0, entryAddress: address, anomalies: [`reserved bits set (fault ${tables.reservedReason})`] });
        continue;
      }
      if (d.kind === EntryKind.Table) {
        if (!memory.contains(d.address, 4096)) {
          state.visited++;
          visit({ iova, output: d.address, size, read: false, write: false, entryAddress: address, anomalies: [`table pointer ${hex(d.address)} outside guest RAM`] });
          continue;
        }
        this.table(tables, d.address, level - 1, iova, visit, state);
        continue;
      }
      const leafSize = 2 ** d.pageShift;
      state.visited++;
      const far = memory.contains(d.address, leafSize) ? undefined : [`output ${hex(d.address)} outside guest RAM`];
      visit({ iova, output: d.address, size: leafSize, read: (d.perms & Perm.Read) !== 0, write: (d.perms & Perm.Write) !== 0, entryAddress: address, ...(far !== undefined ? { anomalies: far } : {}) });
    }
  }
}
