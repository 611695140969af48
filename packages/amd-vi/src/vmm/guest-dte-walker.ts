import { GuestTableReader, newWalkResult, PageWalker, Perm, WalkFault, type EntryReader, type GuestMemory, type PermBits, type TableGeometry, type WalkResult } from "@viommu/core";
import { dteGcr3Root, dteProblem, DTE_BYTES } from "../format/device-table-entry.js";
import { isAddress64, isDeviceId, isPasid } from "../format/bus-values.js";
import { EventCode } from "../format/event-log-entry.js";
import { excluded, type ExclusionRange } from "../format/exclusion-registers.js";
import { gcr3Index } from "../format/gcr3-table-entry.js";
import { amdV1Geometries, amdV1PageTableFormat } from "../format/page-table-v1.js";
import { amdV2Geometry, amdV2PageTableFormat } from "../format/page-table-v2.js";

/** The device table as the walker sees it: base GPA and how many DTEs it holds, and the exclusion range. */
export interface DeviceTableLocation {
  base: number;
  entries: number;
  /** Absent: no exclusion range (ExEn clear). */
  exclusion?: ExclusionRange;
}

/** What a walk through a guest DTE ended with, beyond the WalkResult. Reused per walk: nothing is allocated. */
export interface DteWalkOutcome {
  /** 0 on success, else the event the IOMMU logs (EventCode). */
  eventCode: number;
  /** The DTE's DomainID (or 0 when no DTE was read). */
  domainId: number;
  /** The DTE's address. */
  dteAddress: number;
  /** False when the DTE passed the request untranslated (V = 0). */
  translated: boolean;
  /** DTE.SA: the DTE suppresses every I/O page fault event. */
  suppressed: boolean;
}

export function newDteWalkOutcome(): DteWalkOutcome {
  return { eventCode: 0, domainId: 0, dteAddress: 0, translated: false, suppressed: false };
}

const v2Geometry4 = amdV2Geometry(4);
const v2Geometry5 = amdV2Geometry(5);

/** Reads guest v2 table entries whose GPAs the guest's own v1 table translates (DTE Mode ≠ 0 with GV = 1). */
class V1TranslatedReader implements EntryReader {
  root = 0;
  geometry: TableGeometry = amdV1Geometries[3]!;
  private readonly walker = new PageWalker();
  private readonly result = newWalkResult();

  constructor(private readonly inner: EntryReader) {}

  readEntry(address: number, out: Uint32Array): boolean {
    this.walker.walk(amdV1PageTableFormat, this.geometry, this.root, address, Perm.Read, this.inner, this.result);
    return this.result.ok && this.inner.readEntry(this.result.output, out);
  }
}

/**
 * Translates a request through a device table in guest memory, the way the IOMMU would (spec x86.md B3,
 * B4): V = 0 passes the request untranslated; a malformed DTE is ILLEGAL_DEV_TABLE_ENTRY; TV = 0 blocks;
 * with GV the guest's v2 table comes from the GCR3 table (the request's PASID, or PASID 0 with GIoV); else
 * Mode 1–6 walks the v1 table and Mode 0 passes with the DTE's IR/IW; both together are two-level
 * translation (every v2 fetch and the v2 output through v1). A request without PASID inside an enabled
 * exclusion range, from a device it applies to (Allow, or the DTE's EX), passes untranslated with full
 * access once its DTE is valid and well formed. Every structure is read only where the host
 * may read it (`hostReadable`), so an SNP guest's private pages give DEV_TAB_HARDWARE_ERROR or
 * PAGE_TAB_HARDWARE_ERROR, never ciphertext. Used by the emulated-device path and by `viommu walk`.
 */
export class GuestDteWalker {
  private readonly walker = new PageWalker();
  private readonly reader: GuestTableReader;
  private readonly checked: EntryReader;
  private readonly twoLevel: V1TranslatedReader;
  private readonly dte = new Uint32Array(8);
  private readonly entry = new Uint32Array(2);
  private readonly v1Result = newWalkResult();

  constructor(private readonly memory: GuestMemory) {
    this.reader = new GuestTableReader(memory);
    this.checked = { readEntry: (address, out) => memory.hostReadable(address, 8) && this.reader.readEntry(address, out) };
    this.twoLevel = new V1TranslatedReader(this.checked);
  }

  translate(table: DeviceTableLocation, deviceId: number, pasid: number | undefined, iova: number, access: PermBits, out: WalkResult, outcome: DteWalkOutcome): void {
    resetFault(out, iova);
    outcome.eventCode = 0;
    outcome.domainId = 0;
    outcome.translated = true;
    outcome.suppressed = false;
    const at = table.base + deviceId * DTE_BYTES;
    outcome.dteAddress = at;
    if (!isDeviceId(deviceId) || !(deviceId < table.entries)) return fail(out, outcome, EventCode.ILLEGAL_DEV_TABLE_ENTRY, WalkFault.Reserved);
    // A request names a 64-bit address and, optionally, a 20-bit PASID; anything else translates to nothing.
    if (!isAddress64(iova) || (pasid !== undefined && !isPasid(pasid))) return fail(out, outcome, EventCode.IO_PAGE_FAULT, WalkFault.Translation);
    if (!this.memory.hostReadable(at, DTE_BYTES)) return fail(out, outcome, EventCode.DEV_TAB_HARDWARE_ERROR, WalkFault.External);
    const w = this.memory.readWords(at, this.dte);
    if ((w[0]! & 1) === 0) {
      outcome.translated = false;
      out.ok = true;
      out.output = iova;
      out.pageShift = 12;
      out.perms = Perm.All;
      out.fault = WalkFault.None;
      return;
    }
    outcome.domainId = w[2]! & 0xffff;
    outcome.suppressed = ((w[3]! >>> 2) & 1) === 1;
    if (dteProblem(w) !== undefined) return fail(out, outcome, EventCode.ILLEGAL_DEV_TABLE_ENTRY, WalkFault.Reserved);
    // The exclusion range (untranslated: the address is the system address) is checked before translation.
    // It is the host's address space that is excluded, so only requests without a PASID (model's reading:
    // a PASID names a guest address space the exclusion registers do not describe).
    if (pasid === undefined && table.exclusion !== undefined && excluded(table.exclusion, w[3]!, iova)) {
      outcome.translated = false;
      out.ok = true;
      out.output = iova;
      out.pageShift = 12;
      out.perms = Perm.All;
      out.fault = WalkFault.None;
      return;
    }
    if ((w[0]! & 2) === 0) return fail(out, outcome, EventCode.IO_PAGE_FAULT, WalkFault.Translation);
    const dtePerms: PermBits = ((w[1]! >>> 29) & 1 ? Perm.Read : 0) | ((w[1]! >>> 30) & 1 ? Perm.Write : 0) | Perm.Exec | Perm.User;
    const mode = (w[0]! >>> 9) & 7;
    const hostRoot = ((w[0]! & 0xfffff000) >>> 0) + (w[1]! & 0xfffff) * 0x1_0000_0000;
    const gv = ((w[1]! >>> 23) & 1) === 1;
    const giov = ((w[1]! >>> 22) & 1) === 1;
    if (pasid !== undefined && !gv) return fail(out, outcome, EventCode.IO_PAGE_FAULT, WalkFault.Translation);
    if (gv && (pasid !== undefined || giov)) {
      const root = this.gcr3(w, pasid ?? 0, out, outcome);
      if (root === undefined) return;
      const geometry = ((w[5]! >>> 22) & 3) === 1 ? v2Geometry5 : v2Geometry4;
      if (mode === 0) {
        this.walker.walk(amdV2PageTableFormat, geometry, root, iova, access, this.checked, out);
      } else {
        this.twoLevel.root = hostRoot;
        this.twoLevel.geometry = amdV1Geometries[mode - 1]!;
        this.walker.walk(amdV2PageTableFormat, geometry, root, iova, access, this.twoLevel, out);
        if (out.ok) {
          this.walker.walk(amdV1PageTableFormat, amdV1Geometries[mode - 1]!, hostRoot, out.output, access, this.checked, this.v1Result);
          if (!this.v1Result.ok) copyFault(this.v1Result, out);
          else {
            out.output = this.v1Result.output;
            out.perms &= this.v1Result.perms;
            out.pageShift = Math.min(out.pageShift, this.v1Result.pageShift);
          }
        }
      }
    } else if (mode === 0) {
      out.ok = true;
      out.mapped = true;
      out.output = iova;
      out.pageShift = 12;
      out.perms = dtePerms;
      out.fault = WalkFault.None;
    } else {
      this.walker.walk(amdV1PageTableFormat, amdV1Geometries[mode - 1]!, hostRoot, iova, access, this.checked, out);
    }
    if (out.mapped || out.ok) {
      out.perms &= dtePerms;
      if ((access & out.perms) !== access) {
        out.ok = false;
        out.fault = WalkFault.Permission;
      }
    }
    if (!out.ok) outcome.eventCode = out.fault === WalkFault.External ? EventCode.PAGE_TAB_HARDWARE_ERROR : EventCode.IO_PAGE_FAULT;
  }

  /** The guest CR3 for `pasid` through the GCR3 table (GLX + 1 levels), or undefined with the fault set. */
  private gcr3(w: Uint32Array, pasid: number, out: WalkResult, outcome: DteWalkOutcome): number | undefined {
    const glx = (w[1]! >>> 24) & 3;
    if (pasid >= 2 ** (9 * (glx + 1))) {
      fail(out, outcome, EventCode.IO_PAGE_FAULT, WalkFault.Translation);
      return undefined;
    }
    let table = dteGcr3Root(w);
    for (let level = glx; level >= 0; level--) {
      const at = table + gcr3Index(pasid, level) * 8;
      out.entryAddress = at;
      if (!this.checked.readEntry(at, this.entry)) {
        fail(out, outcome, EventCode.PAGE_TAB_HARDWARE_ERROR, WalkFault.External);
        return undefined;
      }
      if ((this.entry[0]! & 1) === 0) {
        fail(out, outcome, EventCode.IO_PAGE_FAULT, WalkFault.Translation);
        return undefined;
      }
      table = ((this.entry[0]! & 0xfffff000) >>> 0) + (this.entry[1]! & 0xfffff) * 0x1_0000_0000;
    }
    return table;
  }
}

function resetFault(out: WalkResult, iova: number): void {
  out.ok = false;
  out.output = 0;
  out.pageShift = 0;
  out.perms = 0;
  out.fault = WalkFault.None;
  out.level = 0;
  out.stage = 1;
  out.faultInput = iova;
  out.tableFetch = false;
  out.mapped = false;
  out.fetches = 0;
}

function fail(out: WalkResult, outcome: DteWalkOutcome, eventCode: number, fault: WalkFault): void {
  out.ok = false;
  out.fault = fault;
  outcome.eventCode = eventCode;
}

function copyFault(from: WalkResult, to: WalkResult): void {
  to.ok = false;
  to.fault = from.fault;
  to.mapped = from.mapped;
  to.entryAddress = from.entryAddress;
  to.level = from.level;
}
