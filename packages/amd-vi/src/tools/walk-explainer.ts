import { EntryKind, newEntryDecode, Perm, WalkFault, type GuestMemory, type PageTableFormat, type PermBits, type TableGeometry, type WalkStep } from "@viommu/core";
import { decodeDte, dteGcr3Root, dteProblem, DTE_BYTES } from "../format/device-table-entry.js";
import { EventCode } from "../format/event-log-entry.js";
import { excluded } from "../format/exclusion-registers.js";
import { gcr3Index } from "../format/gcr3-table-entry.js";
import { amdV1Geometries, amdV1PageTableFormat } from "../format/page-table-v1.js";
import { amdV2Geometry, amdV2PageTableFormat } from "../format/page-table-v2.js";
import type { DeviceTableLocation } from "../vmm/guest-dte-walker.js";

/** A walk as `viommu walk` explains it: the answer, and every entry read, in the specification's terms. */
export interface ExplainedWalk {
  ok: boolean;
  /** The output address (ok), exact: translated outputs are below 2^52. */
  output: number;
  pageShift: number;
  perms: PermBits;
  /** 0 on success, else the event the IOMMU logs (EventCode). */
  eventCode: number;
  fault: WalkFault;
  /** The DTE's DomainID, when the DTE translated the request. */
  domainId: number | undefined;
  /** Why an untranslated output cannot be given (an address beyond what a number holds exactly). */
  note?: string;
  readonly steps: WalkStep[];
}

const v2Geometry4 = amdV2Geometry(4);
const v2Geometry5 = amdV2Geometry(5);
const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** The raw 64-bit words of `words` (lowest first) as hex text. */
function qwords(words: Uint32Array): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < words.length; i += 2) out.push(hex((BigInt(words[i + 1]!) << 32n) | BigInt(words[i]!)));
  return out;
}

/** A field value as a step shows it: small numbers as numbers, addresses and wide values as hex text. */
function shown(v: number | bigint | boolean | string): number | string | boolean {
  if (typeof v === "bigint") return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : hex(v);
  return v;
}

/** The DTE's fields by the specification's names (the three GCR3 root pieces shown joined). */
function dteFields(w: Uint32Array): Record<string, number | string | boolean> {
  const f = decodeDte(w);
  const out: Record<string, number | string | boolean> = {};
  for (const [name, value] of Object.entries(f)) {
    if (name.startsWith("GCR3TRP_")) continue;
    const v = shown(value as number | bigint | boolean);
    out[name === "HostPageTableRootPointer" ? "Host Page Table Root Pointer" : name === "InterruptTableRootPointer" ? "Interrupt Table Root Pointer" : name] =
      name.endsWith("Pointer") && typeof v === "number" ? hex(v) : v;
  }
  out["GCR3 Table Root Pointer"] = hex(dteGcr3Root(w));
  return out;
}

function v1Fields(lo: number, hi: number): Record<string, number | string | boolean> {
  const next = (lo >>> 9) & 7;
  const addr = ((lo & 0xfffff000) >>> 0) + (hi & 0xfffff) * 2 ** 32;
  const leaf = next === 0 || next === 7;
  const fields: Record<string, number | string | boolean> = { PR: lo & 1, A: (lo >>> 5) & 1 };
  if (leaf) fields["D"] = (lo >>> 6) & 1;
  fields["Next Level"] = next;
  fields[leaf ? "Page Address" : "Next Table Address"] = hex(addr);
  if (leaf) {
    fields["U"] = (hi >>> 27) & 1;
    fields["FC"] = (hi >>> 28) & 1;
  }
  fields["IR"] = (hi >>> 29) & 1;
  fields["IW"] = (hi >>> 30) & 1;
  return fields;
}

function v2Fields(lo: number, hi: number): Record<string, number | string | boolean> {
  return {
    P: lo & 1,
    "R/W": (lo >>> 1) & 1,
    "U/S": (lo >>> 2) & 1,
    PWT: (lo >>> 3) & 1,
    PCD: (lo >>> 4) & 1,
    A: (lo >>> 5) & 1,
    D: (lo >>> 6) & 1,
    PS: (lo >>> 7) & 1,
    G: (lo >>> 8) & 1,
    Address: hex(((lo & 0xfffff000) >>> 0) + (hi & 0xfffff) * 2 ** 32),
    NX: (hi >>> 31) & 1,
  };
}

/** The x86 long-mode names of the guest (v2) table levels. */
const V2_LEVEL_NAMES = ["", "PTE", "PDE", "PDPE", "PML4E", "PML5E"];

interface StageWalk {
  ok: boolean;
  output: number;
  pageShift: number;
  perms: PermBits;
  fault: WalkFault;
}

/**
 * Explains translations the way the emulated IOMMU (vmm/guest-dte-walker.ts) makes them, with every entry read
 * recorded and the input taken as all 64 bits: v1 tables of Mode 6 index IOVA bits [63:57], Mode 5 [56:48], and
 * an input at or above 2^(12 + 9·Mode) (2^48 / 2^57 for a 4- / 5-level guest table) is the IO_PAGE_FAULT the IOMMU
 * logs. Not a hot path: it allocates its steps and uses BigInt for the input. A test holds it to the emulated
 * walker on every input below 2^53.
 */
export class WalkExplainer {
  private readonly decoded = newEntryDecode();
  private readonly dte = new Uint32Array(8);

  constructor(private readonly memory: GuestMemory) {}

  private read(address: number): Uint32Array | undefined {
    if (!Number.isSafeInteger(address) || address < 0 || address % 8 !== 0 || !this.memory.hostReadable(address, 8)) return undefined;
    return this.memory.readWords(address, new Uint32Array(2));
  }

  explain(table: DeviceTableLocation, deviceId: number, pasid: number | undefined, input: bigint, write: boolean): ExplainedWalk {
    const r: ExplainedWalk = { ok: false, output: 0, pageShift: 0, perms: 0, eventCode: 0, fault: WalkFault.None, domainId: undefined, steps: [] };
    this.steps = r.steps;
    const failWith = (code: number, fault: WalkFault): ExplainedWalk => {
      r.ok = false;
      r.eventCode = code;
      r.fault = fault;
      return r;
    };
    const access = write ? Perm.Write : Perm.Read;
    if (!(Number.isInteger(deviceId) && deviceId >= 0 && deviceId <= 0xffff && deviceId < table.entries)) return failWith(EventCode.ILLEGAL_DEV_TABLE_ENTRY, WalkFault.Reserved);
    if (input < 0n || input > 0xffff_ffff_ffff_ffffn || (pasid !== undefined && !(Number.isInteger(pasid) && pasid >= 0 && pasid < 2 ** 20))) {
      return failWith(EventCode.IO_PAGE_FAULT, WalkFault.Translation);
    }
    const at = table.base + deviceId * DTE_BYTES;
    if (!this.memory.hostReadable(at, DTE_BYTES)) return failWith(EventCode.DEV_TAB_HARDWARE_ERROR, WalkFault.External);
    const w = this.memory.readWords(at, this.dte);
    r.steps.push({ what: "DTE", address: at, raw: qwords(w), fields: dteFields(w) });
    const untranslated = (perms: PermBits): ExplainedWalk => {
      if (input > BigInt(Number.MAX_SAFE_INTEGER)) {
        r.note = `untranslated: the system address ${hex(input)} is beyond the 52-bit system address space`;
        return failWith(EventCode.IO_PAGE_FAULT, WalkFault.AddressSize);
      }
      r.ok = (access & perms) === access;
      r.output = Number(input);
      r.pageShift = 12;
      r.perms = perms;
      r.fault = r.ok ? WalkFault.None : WalkFault.Permission;
      r.eventCode = r.ok ? 0 : EventCode.IO_PAGE_FAULT;
      return r;
    };
    if ((w[0]! & 1) === 0) return untranslated(Perm.All);
    r.domainId = w[2]! & 0xffff;
    if (dteProblem(w) !== undefined) return failWith(EventCode.ILLEGAL_DEV_TABLE_ENTRY, WalkFault.Reserved);
    if (pasid === undefined && input < 2n ** 53n && table.exclusion !== undefined && excluded(table.exclusion, w[3]!, Number(input))) {
      r.domainId = undefined;
      return untranslated(Perm.All);
    }
    if ((w[0]! & 2) === 0) return failWith(EventCode.IO_PAGE_FAULT, WalkFault.Translation);
    const dtePerms: PermBits = ((w[1]! >>> 29) & 1 ? Perm.Read : 0) | ((w[1]! >>> 30) & 1 ? Perm.Write : 0) | Perm.Exec | Perm.User;
    const mode = (w[0]! >>> 9) & 7;
    const hostRoot = ((w[0]! & 0xfffff000) >>> 0) + (w[1]! & 0xfffff) * 2 ** 32;
    const gv = ((w[1]! >>> 23) & 1) === 1;
    const giov = ((w[1]! >>> 22) & 1) === 1;
    if (pasid !== undefined && !gv) return failWith(EventCode.IO_PAGE_FAULT, WalkFault.Translation);
    let result: StageWalk;
    if (gv && (pasid !== undefined || giov)) {
      // Two-level translation (Mode ≠ 0): every guest-table fetch and the guest output go through the v1 table.
      const gpa = (address: number, stage: StageWalk): number | undefined => {
        if (mode === 0) return address;
        const s = this.walkTable(amdV1PageTableFormat, amdV1Geometries[mode - 1]!, hostRoot, BigInt(address), Perm.Read, 2, (level, lo, hi) => this.v1Step(level, lo, hi), undefined);
        if (!s.ok) {
          Object.assign(stage, s);
          return undefined;
        }
        return s.output;
      };
      const glx = (w[1]! >>> 24) & 3;
      const p = pasid ?? 0;
      if (p >= 2 ** (9 * (glx + 1))) return failWith(EventCode.IO_PAGE_FAULT, WalkFault.Translation);
      let gcr3 = dteGcr3Root(w);
      const stage: StageWalk = { ok: false, output: 0, pageShift: 0, perms: 0, fault: WalkFault.None };
      // GCR3 entries are read by their address as the DTE gives it (the emulated walker reads them directly).
      for (let level = glx; level >= 0; level--) {
        const entryAt = gcr3 + gcr3Index(p, level) * 8;
        const e = this.read(entryAt);
        if (e === undefined) return failWith(EventCode.PAGE_TAB_HARDWARE_ERROR, WalkFault.External);
        r.steps.push({ what: "GCR3 table entry", address: entryAt, raw: qwords(e), level, stage: 1, fields: { V: e[0]! & 1, GCR3: hex(((e[0]! & 0xfffff000) >>> 0) + (e[1]! & 0xfffff) * 2 ** 32) } });
        if ((e[0]! & 1) === 0) return failWith(EventCode.IO_PAGE_FAULT, WalkFault.Translation);
        gcr3 = ((e[0]! & 0xfffff000) >>> 0) + (e[1]! & 0xfffff) * 2 ** 32;
      }
      const geometry = ((w[5]! >>> 22) & 3) === 1 ? v2Geometry5 : v2Geometry4;
      result = this.walkTable(amdV2PageTableFormat, geometry, gcr3, input, access, mode === 0 ? undefined : 1, (level, lo, hi) => ({ what: V2_LEVEL_NAMES[level] ?? `level ${level}`, fields: v2Fields(lo, hi) }), mode === 0 ? undefined : (a) => gpa(a, stage));
      if (result.ok && mode !== 0) {
        const s = this.walkTable(amdV1PageTableFormat, amdV1Geometries[mode - 1]!, hostRoot, BigInt(result.output), access, 2, (level, lo, hi) => this.v1Step(level, lo, hi), undefined);
        if (!s.ok) result = { ...s, ok: false };
        else result = { ok: true, output: s.output, perms: result.perms & s.perms, pageShift: Math.min(result.pageShift, s.pageShift), fault: WalkFault.None };
      }
    } else if (mode === 0) {
      return untranslated(dtePerms);
    } else {
      result = this.walkTable(amdV1PageTableFormat, amdV1Geometries[mode - 1]!, hostRoot, input, access, undefined, (level, lo, hi) => this.v1Step(level, lo, hi), undefined);
    }
    r.ok = result.ok;
    r.output = result.output;
    r.pageShift = result.pageShift;
    r.perms = result.perms;
    r.fault = result.fault;
    if (result.ok || result.fault === WalkFault.Permission) {
      r.perms &= dtePerms;
      r.ok = (access & r.perms) === access;
      if (!r.ok) r.fault = WalkFault.Permission;
    }
    if (!r.ok) r.eventCode = r.fault === WalkFault.External ? EventCode.PAGE_TAB_HARDWARE_ERROR : EventCode.IO_PAGE_FAULT;
    return r;
  }

  private v1Step(level: number, lo: number, hi: number): { what: string; fields: Record<string, number | string | boolean> } {
    const next = (lo >>> 9) & 7;
    return { what: (lo & 1) === 1 && next !== 0 && next !== 7 ? "PDE" : "PTE", fields: v1Fields(lo, hi) };
  }

  /**
   * One table walk as the core walker makes it (PageWalker.walk), with the input as a BigInt and every entry
   * recorded. `fetch`: where an entry's GPA is read from (two-level translation), else the GPA itself.
   */
  private walkTable(
    format: PageTableFormat,
    geometry: TableGeometry,
    root: number,
    input: bigint,
    access: PermBits,
    stage: 1 | 2 | undefined,
    describe: (level: number, lo: number, hi: number) => { what: string; fields: Record<string, number | string | boolean> },
    fetch: ((address: number) => number | undefined) | undefined,
  ): StageWalk {
    const out: StageWalk = { ok: false, output: 0, pageShift: 0, perms: 0, fault: WalkFault.None };
    if (input >= 1n << BigInt(geometry.inputBits)) {
      out.fault = WalkFault.AddressSize;
      return out;
    }
    const outputLimit = geometry.outputBits === undefined ? Number.MAX_SAFE_INTEGER : 2 ** geometry.outputBits;
    if (root >= outputLimit) {
      out.fault = WalkFault.AddressSize;
      return out;
    }
    const d = this.decoded;
    let level = geometry.startLevel;
    let table = root;
    let perms: PermBits = Perm.All;
    for (let guard = 0; guard <= geometry.startLevel; guard++) {
      const shift = geometry.levelShift[level];
      const bits = geometry.indexBits[level];
      if (shift === undefined || bits === undefined || bits <= 0) {
        out.fault = WalkFault.Reserved;
        return out;
      }
      const index = Number((input >> BigInt(shift)) & ((1n << BigInt(bits)) - 1n));
      const address = table + index * 8;
      const from = fetch === undefined ? address : fetch(address);
      const e = from === undefined ? undefined : this.read(from);
      if (e === undefined) {
        out.fault = WalkFault.External;
        return out;
      }
      const lo = e[0]!;
      const hi = e[1]!;
      const step = describe(level, lo, hi);
      format.decodeEntry(lo, hi, level, d);
      const leaf = d.kind === EntryKind.Leaf;
      this.steps.push({ what: step.what, address, raw: qwords(e), level, ...(stage === undefined ? {} : { stage }), fields: step.fields, ...(leaf ? { pageSize: 2 ** d.pageShift } : {}) });
      if (d.kind === EntryKind.Invalid) {
        out.fault = WalkFault.Translation;
        return out;
      }
      if (d.kind === EntryKind.Fault) {
        out.fault = d.fault === WalkFault.None ? WalkFault.Reserved : d.fault;
        return out;
      }
      if (d.address >= outputLimit) {
        out.fault = WalkFault.AddressSize;
        return out;
      }
      perms &= d.perms;
      if (leaf) {
        out.pageShift = d.pageShift;
        out.perms = perms;
        out.output = d.address + Number(input & ((1n << BigInt(d.pageShift)) - 1n));
        if ((access & perms) !== access) {
          out.fault = WalkFault.Permission;
          return out;
        }
        out.ok = true;
        return out;
      }
      const next = d.nextLevel;
      if (!(next >= 1 && next < level)) {
        out.fault = WalkFault.Reserved;
        return out;
      }
      if (next < level - 1 && format.skippedLevelBitsMustBeZero) {
        const low = geometry.levelShift[next]! + geometry.indexBits[next]!;
        if (((input >> BigInt(low)) & ((1n << BigInt(shift - low)) - 1n)) !== 0n) {
          out.fault = WalkFault.Translation;
          return out;
        }
      }
      table = d.address;
      level = next;
    }
    out.fault = WalkFault.Reserved;
    return out;
  }

  /** The steps of the walk in progress, in the order the entries were read. */
  private steps: WalkStep[] = [];
}
