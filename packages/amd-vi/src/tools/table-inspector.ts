import { EntryKind, newEntryDecode, Perm, type GuestMemory, type MappingLeaf, type PageTableFormat, type PermBits, type TableGeometry, type TableInspector, type TranslationContext } from "@viommu/core";
import { dteGcr3Root, dteProblem, DTE_BYTES } from "../format/device-table-entry.js";
import { gcr3Index } from "../format/gcr3-table-entry.js";
import { amdV1Geometries, amdV1PageTableFormat } from "../format/page-table-v1.js";
import { amdV2Geometry, amdV2PageTableFormat } from "../format/page-table-v2.js";
import type { DeviceTableLocation } from "../vmm/guest-dte-walker.js";

/** At most this many entries are read per context's leaves: a hostile table cannot make the tool run unbounded. */
const ENTRY_BUDGET = 1 << 22;
const hex = (v: number): string => `0x${v.toString(16)}`;

interface AmdContext extends TranslationContext {
  readonly format: PageTableFormat;
  readonly geometry: TableGeometry;
  /** DTE IR/IW (v1), ANDed into every leaf. */
  readonly dtePerms: PermBits;
}

/**
 * `viommu mappings` for AMD-Vi: every valid DTE with translation (V and TV set) in DeviceID order — a v1 table
 * (Mode 1–6) as one context, a GCR3 table as one context per valid GCR3 entry in PASID order (PASID 0 is also
 * what DMA without a PASID uses under GIoV), Mode 0 as an untranslated context without leaves. Leaves come in
 * IOVA order with permissions ANDed over the levels (and the DTE's IR/IW for v1); a size-encoded page
 * (NextLevel 7, repeated in every slot it covers) is one leaf at its start; a level-skipping PDE covers only the
 * IOVAs its skipped bits leave zero. Anomalies: reserved bits set (a malformed DTE, or an entry the IOMMU would
 * refuse), a table or page outside guest RAM. Two-level translation (GV with Mode ≠ 0) lists the guest table's
 * leaves with their guest-physical outputs. Leaves at IOVAs of 2^53 and above (Mode 5/6 upper halves) are not
 * listed: a leaf's IOVA is a number.
 */
export function amdViTableInspector(memory: GuestMemory, table: DeviceTableLocation): TableInspector {
  const inRam = (address: number, bytes: number): boolean => memory.contains(address) && memory.contains(address + bytes - 1);
  const entry = new Uint32Array(2);
  const read = (address: number): boolean => inRam(address, 8) && memory.hostReadable(address, 8) && (memory.readWords(address, entry), true);

  const contexts = (): AmdContext[] => {
    const out: AmdContext[] = [];
    const dte = new Uint32Array(8);
    for (let rid = 0; rid < Math.min(table.entries, 0x10000); rid++) {
      const at = table.base + rid * DTE_BYTES;
      if (!inRam(at, DTE_BYTES) || !memory.hostReadable(at, DTE_BYTES)) continue;
      const w = memory.readWords(at, dte);
      if ((w[0]! & 3) !== 3) continue;
      const anomalies: string[] = [];
      const problem = dteProblem(w);
      if (problem !== undefined) anomalies.push(`DTE at ${hex(at)}: ${problem}`);
      const domain = w[2]! & 0xffff;
      const mode = (w[0]! >>> 9) & 7;
      const gv = ((w[1]! >>> 23) & 1) === 1;
      const dtePerms: PermBits = ((w[1]! >>> 29) & 1 ? Perm.Read : 0) | ((w[1]! >>> 30) & 1 ? Perm.Write : 0) | Perm.Exec | Perm.User;
      const hostRoot = ((w[0]! & 0xfffff000) >>> 0) + (w[1]! & 0xfffff) * 2 ** 32;
      if (gv) {
        const glx = (w[1]! >>> 24) & 3;
        const levels = ((w[5]! >>> 22) & 3) === 1 ? 5 : 4;
        const gcr3 = dteGcr3Root(w);
        if (!inRam(gcr3, 4096)) anomalies.push(`GCR3 table ${hex(gcr3)} outside guest RAM`);
        const visitGcr3 = (t: number, level: number, base: number): void => {
          for (let i = 0; i < 512; i++) {
            const pasid = base + i * 2 ** (9 * level);
            const entryAt = t + gcr3Index(pasid, level) * 8;
            if (!read(entryAt) || (entry[0]! & 1) === 0) continue;
            const next = ((entry[0]! & 0xfffff000) >>> 0) + (entry[1]! & 0xfffff) * 2 ** 32;
            if (level > 0) {
              visitGcr3(next, level - 1, pasid);
              continue;
            }
            const own = [...anomalies];
            if (!inRam(next, 4096)) own.push(`guest page table ${hex(next)} (PASID ${pasid}) outside guest RAM`);
            out.push({
              rid,
              pasid,
              domain,
              root: next,
              mode: `v2 ${levels}-level${mode === 0 ? "" : ` over v1 Mode ${mode}`}`,
              format: amdV2PageTableFormat,
              geometry: amdV2Geometry(levels),
              dtePerms: Perm.All,
              ...(own.length > 0 ? { anomalies: own } : {}),
            });
          }
        };
        if (inRam(gcr3, 4096)) visitGcr3(gcr3, glx, 0);
        continue;
      }
      if (mode === 0) {
        out.push({ rid, domain, root: 0, mode: `untranslated (Mode 0, ${dtePerms & Perm.Read ? "IR" : ""}${dtePerms & Perm.Write ? "IW" : ""})`, format: amdV1PageTableFormat, geometry: amdV1Geometries[0]!, dtePerms, ...(anomalies.length > 0 ? { anomalies } : {}) });
        continue;
      }
      if (mode === 7) continue;
      if (!inRam(hostRoot, 4096)) anomalies.push(`page table root ${hex(hostRoot)} outside guest RAM`);
      out.push({ rid, domain, root: hostRoot, mode: `v1 Mode ${mode}`, format: amdV1PageTableFormat, geometry: amdV1Geometries[mode - 1]!, dtePerms, ...(anomalies.length > 0 ? { anomalies } : {}) });
    }
    return out;
  };

  const leaves = (context: TranslationContext, visit: (leaf: MappingLeaf) => void): number => {
    const c = context as AmdContext;
    if (c.format === undefined || c.mode.startsWith("untranslated")) return 0;
    const d = newEntryDecode();
    let budget = ENTRY_BUDGET;
    let visited = 0;
    const walk = (t: number, level: number, base: number, perms: PermBits): void => {
      const shift = c.geometry.levelShift[level]!;
      const count = 2 ** c.geometry.indexBits[level]!;
      const span = 2 ** shift;
      let skipUntil = -1;
      for (let i = 0; i < count; i++) {
        const iova = base + i * span;
        if (iova > Number.MAX_SAFE_INTEGER || --budget < 0) return;
        if (iova < skipUntil) continue;
        const at = t + i * 8;
        if (!read(at)) return;
        const lo = entry[0]!;
        const hi = entry[1]!;
        c.format.decodeEntry(lo, hi, level, d);
        if (d.kind === EntryKind.Invalid) continue;
        if (d.kind === EntryKind.Fault) {
          visited++;
          visit({ iova, output: 0, size: span, read: false, write: false, entryAddress: at, anomalies: [`reserved bits set or invalid level encoding in ${hex(at)} (0x${hi.toString(16).padStart(8, "0")}${lo.toString(16).padStart(8, "0")})`] });
          continue;
        }
        const p = perms & d.perms;
        if (d.kind === EntryKind.Leaf) {
          const size = 2 ** d.pageShift;
          // A page larger than its slot is repeated in every slot it covers: one leaf, from its start.
          const start = iova - (iova % size);
          skipUntil = start + size;
          const anomalies = inRam(d.address, size) ? undefined : [`page ${hex(d.address)} (+${hex(size)}) outside guest RAM`];
          visited++;
          visit({ iova: start, output: d.address, size, read: (p & Perm.Read) !== 0, write: (p & Perm.Write) !== 0, entryAddress: at, ...(anomalies ? { anomalies } : {}) });
          continue;
        }
        if (d.kind !== EntryKind.Table || !(d.nextLevel >= 1 && d.nextLevel < level)) continue;
        if (!inRam(d.address, 4096)) {
          visited++;
          visit({ iova, output: 0, size: span, read: false, write: false, entryAddress: at, anomalies: [`table ${hex(d.address)} outside guest RAM`] });
          continue;
        }
        // A level-skipping PDE's table covers only the start of the slot (the skipped index bits are zero).
        walk(d.address, d.nextLevel, iova, p);
      }
    };
    walk(c.root, c.geometry.startLevel, 0, c.dtePerms);
    return visited;
  };

  return { contexts, leaves };
}
