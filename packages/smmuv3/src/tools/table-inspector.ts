import { EntryKind, newEntryDecode, NO_PASID, Perm, type GuestMemory, type MappingLeaf, type PageTableFormat, type TableGeometry, type TableInspector, type TranslationContext, WalkFault } from "@viommu/core";
import { eventName, EventType } from "../format/event-record.js";
import { L1STD_BYTES, STE_BYTES } from "../format/stream-table.js";
import { SteConfig, SteS1Dss, SteS1Fmt } from "../format/stream-table-entry.js";
import { CD_BYPASS, decodeCdSettings, readCd, type CdSettings } from "../translate/cd-config.js";
import { GuestMemoryReader } from "../translate/guest-memory-reader.js";
import type { SmmuFeatures } from "../translate/smmu-features.js";
import { decodeSteSettings } from "../translate/ste-config.js";
import type { StreamTableConfig } from "../translate/stream-table-lookup.js";
import { newSmmuWalkInfo } from "../translate/walk-info.js";
import { hex64 } from "./walk-steps.js";

const hex = (x: number): string => `0x${x.toString(16)}`;
/** CDs per level-2 CD table (S1Fmt 1: 4 KiB leaves; 2: 64 KiB leaves). */
const CDS_PER_LEAF = { [SteS1Fmt.TwoLevel4K]: 64, [SteS1Fmt.TwoLevel64K]: 1024 } as Record<number, number>;

function read64(memory: GuestMemory, address: number, halves: Uint32Array): boolean {
  if (address % 8 !== 0 || !memory.hostReadable(address, 8)) return false;
  memory.read64Halves(address, halves);
  return true;
}

/**
 * `viommu mappings --vendor smmuv3`: every StreamID with a valid STE (in StreamID order), and for a stage-1 STE
 * every valid CD (no SubstreamID first, then each SubstreamID), as the SMMU would read them; the leaves of each
 * CD's TTB0 then TTB1 half in IOVA order. TTB1 leaves are at 2^64 − 2^(64 − T1SZ) and up: granule-aligned, so exact
 * as numbers. Anomalies: an STE or CD the SMMU would refuse (C_BAD_STE, C_BAD_CD), a context or table pointer or
 * a leaf's output outside guest RAM, a descriptor with reserved encodings or bits (shown as a leaf without
 * permissions over the range it would cover). Invalid STEs and CDs are not contexts.
 */
export function smmuv3Inspector(memory: GuestMemory, table: StreamTableConfig, features: SmmuFeatures): TableInspector {
  const reader = new GuestMemoryReader(memory);
  const settingsOf = new Map<TranslationContext, CdSettings>();
  const halves = new Uint32Array(2);
  const info = newSmmuWalkInfo();

  const steAddresses = (): { sid: number; address: number }[] => {
    const out: { sid: number; address: number }[] = [];
    if (!table.twoLevel) {
      for (let sid = 0; sid < 2 ** table.log2Size; sid++) out.push({ sid, address: table.base + sid * STE_BYTES });
      return out;
    }
    const perL1 = 2 ** table.split;
    for (let l1 = 0; l1 < 2 ** (table.log2Size - table.split); l1++) {
      if (!read64(memory, table.base + l1 * L1STD_BYTES, halves)) continue;
      const span = halves[0]! & 0x1f;
      if (span === 0 || span > table.split + 1) continue;
      const l2 = ((halves[0]! & 0xffffffc0) >>> 0) + (halves[1]! & 0xfffff) * 2 ** 32;
      for (let i = 0; i < Math.min(perL1, 2 ** (span - 1)); i++) out.push({ sid: l1 * perL1 + i, address: l2 + i * STE_BYTES });
    }
    return out;
  };

  const contexts = (): TranslationContext[] => {
    const found: TranslationContext[] = [];
    const ste = new Uint32Array(16);
    const cd = new Uint32Array(16);
    for (const { sid, address } of steAddresses()) {
      let readable = true;
      for (let i = 0; i < 8 && readable; i++) {
        readable = read64(memory, address + i * 8, halves);
        ste[2 * i] = halves[0]!;
        ste[2 * i + 1] = halves[1]!;
      }
      if (!readable) {
        found.push({ rid: sid, root: 0, mode: "unreadable", anomalies: [`STE at ${hex(address)} outside guest RAM`] });
        continue;
      }
      if ((ste[0]! & 1) === 0) continue;
      const settings = decodeSteSettings(ste, features);
      if (typeof settings === "number") {
        found.push({ rid: sid, root: 0, mode: "illegal", anomalies: [`${eventName(settings) ?? "C_BAD_STE"}: the SMMU refuses this STE (${hex64(ste[0]!, ste[1]!)} ${hex64(ste[2]!, ste[3]!)})`] });
        continue;
      }
      if (settings.config === SteConfig.Abort) continue;
      const s1 = settings.stage1;
      if (s1 === undefined) {
        found.push({ rid: sid, root: 0, mode: "bypass" });
        continue;
      }
      if (!memory.hostReadable(s1.contextPtr, 8)) {
        found.push({ rid: sid, root: 0, mode: "stage 1", anomalies: [`S1ContextPtr ${hex(s1.contextPtr)} outside guest RAM`] });
        continue;
      }
      const ssids: number[] = [NO_PASID];
      const count = s1.cdMax === 0 ? 0 : 2 ** s1.cdMax;
      for (let ssid = s1.dss === SteS1Dss.Ssid0 ? 1 : 0; ssid < count; ssid++) ssids.push(ssid);
      for (let k = 0; k < ssids.length; k++) {
        const ssid = ssids[k]!;
        const r = readCd(s1, ssid, reader, cd, info);
        if (r === CD_BYPASS) {
          found.push({ rid: sid, root: 0, mode: "bypass" });
          continue;
        }
        if (r === EventType.C_BAD_SUBSTREAMID && ssid !== NO_PASID && s1.fmt !== SteS1Fmt.Linear) {
          // An invalid L1CD: skip the SubstreamIDs of its leaf table.
          const per = CDS_PER_LEAF[s1.fmt] ?? 1;
          while (k + 1 < ssids.length && Math.floor(ssids[k + 1]! / per) === Math.floor(ssid / per)) k++;
          continue;
        }
        if (r !== 0 || (cd[0]! & 0x8000_0000) === 0) continue;
        const pasid = ssid === NO_PASID ? {} : { pasid: ssid };
        const decoded = decodeCdSettings(cd, features, s1.stallDisabled);
        if (typeof decoded === "number") {
          found.push({ rid: sid, ...pasid, root: 0, mode: "illegal", anomalies: [`${eventName(decoded) ?? "C_BAD_CD"}: the SMMU refuses this CD (${hex64(cd[0]!, cd[1]!)} ${hex64(cd[2]!, cd[3]!)})`] });
          continue;
        }
        const anomalies: string[] = [];
        if (!decoded.epd0 && !memory.hostReadable(decoded.ttb0, 8)) anomalies.push(`TTB0 ${hex(decoded.ttb0)} outside guest RAM`);
        if (decoded.ttb1 !== undefined && !memory.hostReadable(decoded.ttb1.ttb1, 8)) anomalies.push(`TTB1 ${hex(decoded.ttb1.ttb1)} outside guest RAM`);
        const context: TranslationContext = { rid: sid, ...pasid, domain: decoded.asid, root: decoded.epd0 ? (decoded.ttb1?.ttb1 ?? 0) : decoded.ttb0, mode: "stage 1", ...(anomalies.length > 0 ? { anomalies } : {}) };
        settingsOf.set(context, decoded);
        found.push(context);
      }
    }
    return found;
  };

  const leaves = (context: TranslationContext, visit: (leaf: MappingLeaf) => void): number => {
    const cd = settingsOf.get(context);
    if (cd === undefined) return 0;
    let visited = 0;
    const entry = newEntryDecode();
    const words = new Uint32Array(2);
    const walk = (format: PageTableFormat, geometry: TableGeometry, root: number, level: number, base: number): void => {
      const shift = geometry.levelShift[level]!;
      const entries = 2 ** geometry.indexBits[level]!;
      const start = root - (root % (entries * 8));
      for (let i = 0; i < entries; i++) {
        const at = start + i * 8;
        if (!read64(memory, at, words)) return;
        const lo = words[0]!;
        const hi = words[1]!;
        if ((lo & 1) === 0) continue;
        const iova = base + i * 2 ** shift;
        format.decodeEntry(lo, hi, level, entry);
        if (entry.kind === EntryKind.Table) {
          if (!memory.hostReadable(entry.address, 8)) {
            visited++;
            visit({ iova, output: 0, size: 2 ** shift, read: false, write: false, entryAddress: at, anomalies: [`table descriptor ${hex64(lo, hi)} points at ${hex(entry.address)}, outside guest RAM`] });
          } else walk(format, geometry, entry.address, level - 1, iova);
          continue;
        }
        visited++;
        if (entry.kind === EntryKind.Leaf) {
          const anomalies = memory.hostReadable(entry.address, 1) ? undefined : [`output ${hex(entry.address)} outside guest RAM`];
          visit({ iova, output: entry.address, size: 2 ** entry.pageShift, read: (entry.perms & Perm.Read) !== 0, write: (entry.perms & Perm.Write) !== 0, entryAddress: at, ...(anomalies ? { anomalies } : {}) });
        } else {
          const why = entry.kind === EntryKind.Fault && entry.fault === WalkFault.AccessFlag ? "access flag clear (an access faults)" : "reserved encoding or bits set";
          visit({ iova, output: 0, size: 2 ** shift, read: false, write: false, entryAddress: at, anomalies: [`descriptor ${hex64(lo, hi)}: ${why}`] });
        }
      }
    };
    if (!cd.epd0) walk(cd.format, cd.geometry, cd.ttb0, cd.geometry.startLevel, 0);
    const t1 = cd.ttb1;
    if (t1 !== undefined) walk(t1.format, t1.geometry, t1.ttb1, t1.geometry.startLevel, 2 ** 64 - 2 ** t1.geometry.inputBits);
    return visited;
  };

  return { contexts, leaves };
}
