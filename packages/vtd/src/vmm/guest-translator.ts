import {
  address64,
  newWalkResult,
  NO_PASID,
  PageWalker,
  Perm,
  WalkFault,
  type EntryReader,
  type GuestMemory,
  type PageTableFormat,
  type TableGeometry,
  type WalkResult,
} from "@viommu/core";
import { capSupportsLevels, decodeCap, SLLPS_1G, SLLPS_2M } from "../format/cap.js";
import { contextEntryHasReservedBits, ContextTranslationType } from "../format/context-entry.js";
import { decodeEcap } from "../format/ecap.js";
import { faultReason, VtdFaultReason } from "../format/fault-reasons.js";
import { FlPteFormat } from "../format/fl-pte.js";
import { overlapsInterruptRange } from "../format/msi.js";
import { pasidDirEntryHasReservedBits } from "../format/pasid-dir-entry.js";
import { pasidEntryHasReservedBits, PasidGranularTranslationType } from "../format/pasid-entry.js";
import { TranslationTableMode } from "../format/registers.js";
import { rootEntryHasReservedBits } from "../format/root-entry.js";
import { SlPteFormat } from "../format/sl-pte.js";
import { smContextEntryHasReservedBits } from "../format/sm-context-entry.js";
import { smRootEntryHasReservedBits } from "../format/sm-root-entry.js";
import { vtdTableGeometry } from "../format/table-geometry.js";
import { firstLevelGuestReason, legacySecondLevelReason, scalableSecondLevelReason } from "./guest-fault-reason.js";

/** What the remapping unit supports, as the walk needs it (from the CAP and ECAP it advertises). */
export interface TranslatorConfig {
  /** Host address width: table and page address bits at and above it are reserved. */
  readonly haw: number;
  /** CAP.MGAW + 1. */
  readonly mgawBits: number;
  readonly sagaw: number;
  readonly sllps: number;
  readonly fl1gp: boolean;
  readonly fl5lp: boolean;
  readonly pt: boolean;
  readonly dt: boolean;
  readonly sc: boolean;
  readonly smts: boolean;
  readonly slts: boolean;
  readonly flts: boolean;
}

export function translatorConfig(cap: Uint32Array, ecap: Uint32Array, haw: number): TranslatorConfig {
  const c = decodeCap(cap);
  const e = decodeEcap(ecap);
  return {
    haw,
    mgawBits: c.MGAW + 1,
    sagaw: c.SAGAW,
    sllps: c.SLLPS,
    fl1gp: c.FL1GP === 1,
    fl5lp: c.FL5LP === 1,
    pt: e.PT === 1,
    dt: e.DT === 1,
    sc: e.SC === 1,
    smts: e.SMTS === 1,
    slts: e.SLTS === 1,
    flts: e.FLTS === 1,
  };
}

/** How a device's requests are translated, as its root/context(/PASID) entries say. */
export const ContextKind = { FAULT: 0, PASS_THROUGH: 1, SECOND_LEVEL: 2, FIRST_LEVEL: 3 } as const;
export type ContextKind = (typeof ContextKind)[keyof typeof ContextKind];

/** The resolved translation configuration of one (source id, PASID); one instance is reused per caller. */
export class DeviceContext {
  kind: ContextKind = ContextKind.FAULT;
  /** Fault reason when kind is FAULT. */
  reason = 0;
  /** Fault processing disabled by the context, PASID-directory or PASID entry. */
  fpd = false;
  /** Domain id (context entry in legacy mode, PASID entry in scalable mode). */
  did = 0;
  scalable = false;
  /** The PASID the entry was found for (RID_PASID for requests without one); NO_PASID in legacy mode. */
  pasid = NO_PASID;
  /** Table root and depth (second or first level). */
  root = 0;
  levels = 0;
  /** First level: PASID-entry SRE / WPE / EAFE. */
  sre = false;
  wpe = false;
  eafe = false;
  /** Requests without PASID are supervisor requests (scalable context RID_PRIV). */
  ridPriv = false;
  /** Scalable context PRE: page requests allowed. */
  pre = false;
  /** Scalable context PASIDE (requests with PASID allowed), and the PASID directory the context points at. */
  paside = false;
  pasidDir = 0;
  /** PASID-directory entries the context's PDTS allows: 2^(PDTS + 7). */
  pasidDirEntries = 0;
  /** The request carried a PASID (privilege then comes with the request, not from RID_PRIV). */
  withPasid = false;
  /** Device-TLB (ATS) enabled: legacy context TT = 1, scalable context DTE. */
  ats = false;

  fault(reason: number): this {
    this.kind = ContextKind.FAULT;
    this.reason = reason;
    return this;
  }

  /** Same configuration as `other` (used to keep a host binding when a re-read changes nothing). */
  sameAs(other: DeviceContext): boolean {
    return (
      this.kind === other.kind &&
      this.reason === other.reason &&
      this.did === other.did &&
      this.root === other.root &&
      this.levels === other.levels &&
      this.scalable === other.scalable &&
      this.pasid === other.pasid &&
      this.sre === other.sre &&
      this.wpe === other.wpe &&
      this.eafe === other.eafe &&
      this.fpd === other.fpd &&
      this.pre === other.pre
    );
  }

  copyFrom(other: DeviceContext): this {
    this.kind = other.kind;
    this.reason = other.reason;
    this.fpd = other.fpd;
    this.did = other.did;
    this.scalable = other.scalable;
    this.pasid = other.pasid;
    this.root = other.root;
    this.levels = other.levels;
    this.sre = other.sre;
    this.wpe = other.wpe;
    this.eafe = other.eafe;
    this.ridPriv = other.ridPriv;
    this.pre = other.pre;
    this.paside = other.paside;
    this.pasidDir = other.pasidDir;
    this.pasidDirEntries = other.pasidDirEntries;
    this.withPasid = other.withPasid;
    this.ats = other.ats;
    return this;
  }
}

/** The outcome of one translation through a guest's tables. */
export class GuestTranslation {
  readonly walk: WalkResult = newWalkResult();
  ok = false;
  /** Fault reason (0 on success). */
  reason = 0;
  did = 0;
  fpd = false;
  /** The PASID the tables were walked for (RID_PASID for requests without one in scalable mode). */
  pasid = NO_PASID;
  scalable = false;

  /** Whether the fault must be recorded: unqualified faults always, qualified ones only without FPD. */
  get reportable(): boolean {
    if (this.ok) return false;
    return !(this.fpd && (faultReason(this.reason)?.qualified ?? false));
  }
}

/** The structures a translation reads, by the VT-d specification's names. */
export type VtdStructureName = "root entry" | "context entry" | "PASID directory entry" | "PASID table entry" | "SL-PTE" | "FL-PTE";

/** Sees every entry a translation reads, in order (for `viommu walk`'s steps). */
export type TranslatorTrace = (what: VtdStructureName, address: number, words: Uint32Array) => void;

/** Reads guest table entries only where the host may read the guest's memory. */
class HostReadableReader implements EntryReader {
  trace: TranslatorTrace | undefined;
  /** What the walk in progress reads (second- or first-level entries), for the trace. */
  what: VtdStructureName = "SL-PTE";

  constructor(private readonly memory: GuestMemory) {}

  readEntry(address: number, out: Uint32Array): boolean {
    if (address % 8 !== 0 || !this.memory.hostReadable(address, 8)) return false;
    this.memory.read64Halves(address, out);
    if (this.trace !== undefined) this.trace(this.what, address, out);
    return true;
  }
}

/**
 * Translation through a guest's VT-d structures in guest memory, as the remapping hardware does it: the root
 * table at RTADDR (legacy or scalable per RTADDR.TTM), context entries, PASID directory and table, then the
 * second- or first-level walk, each step with the architecture's fault reason. Every guest address is checked
 * before it is read; nothing here throws for any memory contents. Used by the emulated unit (emulated devices,
 * shadowing, binding passthrough devices) and by `viommu walk`.
 */
export class GuestTranslator {
  /** Root table address and mode latched by SRTP (or given to `viommu walk`). */
  rootTable = 0;
  ttm: number = TranslationTableMode.LEGACY;
  private readonly words = new Uint32Array(16);
  /** Views of `words` by entry size, made once so a walk allocates nothing. */
  private readonly views = new Map<number, Uint32Array>([2, 4, 8, 16].map((n) => [n, this.words.subarray(0, n)]));
  private readonly walker = new PageWalker();
  /** Reads guest table entries where the host may read guest memory (for walks and shadowing). */
  readonly reader: EntryReader;
  private readonly tracedReader: HostReadableReader;
  /** With a trace: every entry read is shown to it (`viommu walk`); the emulated unit has none. */
  private trace: TranslatorTrace | undefined;
  readonly legacySl: SlPteFormat;
  readonly scalableSl: SlPteFormat;
  readonly fl: FlPteFormat;
  private readonly stages = new Map<number, { format: PageTableFormat; geometry: TableGeometry }>();
  private readonly scratch = new DeviceContext();

  constructor(
    readonly memory: GuestMemory,
    readonly config: TranslatorConfig,
  ) {
    this.tracedReader = new HostReadableReader(memory);
    this.reader = this.tracedReader;
    const sllps = config.sllps & (SLLPS_2M | SLLPS_1G);
    this.legacySl = new SlPteFormat({ haw: config.haw, sllps, snoop: config.sc });
    this.scalableSl = new SlPteFormat({ haw: config.haw, sllps, snoop: true });
    this.fl = new FlPteFormat({ haw: config.haw, fl1gp: config.fl1gp });
  }

  /** Latches an RTADDR value (RTA and TTM). */
  setRootTable(rtaddr: bigint): void {
    this.rootTable = Number((rtaddr & 0x000f_ffff_ffff_f000n) % (1n << 52n));
    this.ttm = Number((rtaddr >> 10n) & 3n);
  }

  get scalable(): boolean {
    return this.ttm === TranslationTableMode.SCALABLE;
  }

  /** Shows every entry read from now on to `trace` (undefined: none). */
  setTrace(trace: TranslatorTrace | undefined): void {
    this.trace = trace;
    this.tracedReader.trace = trace;
  }

  private read(address: number, count: number, what: VtdStructureName): boolean {
    if (address % 8 !== 0 || !this.memory.hostReadable(address, count * 4)) return false;
    const view = this.views.get(count)!;
    this.memory.readWords(address, view);
    if (this.trace !== undefined) this.trace(what, address, view);
    return true;
  }

  /** The format and geometry a resolved second- or first-level context walks with (cached: no allocation per walk). */
  stageOf(ctx: DeviceContext): { format: PageTableFormat; geometry: TableGeometry } {
    const first = ctx.kind === ContextKind.FIRST_LEVEL;
    const key = (first ? 100 : ctx.scalable ? 200 : 300) + ctx.levels;
    let stage = this.stages.get(key);
    if (stage === undefined) {
      const levels = ctx.levels as 3 | 4 | 5;
      // First level: the full 48- or 57-bit index space; translateWith folds canonical upper-half addresses into it.
      if (first) stage = { format: this.fl, geometry: vtdTableGeometry(levels) };
      else stage = { format: ctx.scalable ? this.scalableSl : this.legacySl, geometry: vtdTableGeometry(levels, Math.min(30 + 9 * (levels - 2), this.config.mgawBits)) };
      this.stages.set(key, stage);
    }
    return stage;
  }

  /** Finds the translation configuration of requests from `sid` (with `pasid`, or NO_PASID). */
  resolve(sid: number, pasid: number, out: DeviceContext): DeviceContext {
    // Every field is set afresh: a reason left from an earlier fault would make equal configurations differ.
    out.reason = 0;
    out.fpd = false;
    out.did = 0;
    out.root = 0;
    out.levels = 0;
    out.sre = out.wpe = out.eafe = out.ridPriv = out.pre = out.ats = out.paside = false;
    out.pasidDir = 0;
    out.pasidDirEntries = 0;
    out.pasid = NO_PASID;
    out.withPasid = pasid !== NO_PASID;
    out.scalable = this.ttm === TranslationTableMode.SCALABLE;
    if (this.ttm === TranslationTableMode.LEGACY) return this.resolveLegacy(sid & 0xffff, pasid, out);
    if (this.ttm !== TranslationTableMode.SCALABLE || !this.config.smts) return out.fault(VtdFaultReason.RTADDR_INV_TTM);
    return this.resolveScalable(sid & 0xffff, pasid, out);
  }

  private resolveLegacy(sid: number, pasid: number, out: DeviceContext): DeviceContext {
    if (pasid !== NO_PASID) return out.fault(VtdFaultReason.RTADDR_TTM0_PASID);
    const w = this.words;
    if (!this.read(this.rootTable + (sid >>> 8) * 16, 4, "root entry")) return out.fault(VtdFaultReason.ROOT_TABLE_INV);
    if ((w[0]! & 1) === 0) return out.fault(VtdFaultReason.ROOT_ENTRY_P);
    if (rootEntryHasReservedBits(this.views.get(4)!, this.config.haw)) return out.fault(VtdFaultReason.ROOT_ENTRY_RSVD);
    const ctp = address64(w[0]!, w[1]!, 12, 51);
    if (!this.read(ctp + (sid & 0xff) * 16, 4, "context entry")) return out.fault(VtdFaultReason.CONTEXT_TABLE_INV);
    if ((w[0]! & 1) === 0) return out.fault(VtdFaultReason.CONTEXT_ENTRY_P);
    out.fpd = (w[0]! & 2) !== 0;
    if (contextEntryHasReservedBits(this.views.get(4)!, this.config.haw)) return out.fault(VtdFaultReason.CONTEXT_ENTRY_RSVD);
    out.did = (w[2]! >>> 8) & 0xffff;
    const tt = (w[0]! >>> 2) & 3;
    if (tt === ContextTranslationType.PASS_THROUGH) {
      if (!this.config.pt) return out.fault(VtdFaultReason.CONTEXT_ENTRY_INV);
      out.kind = ContextKind.PASS_THROUGH;
      return out;
    }
    if (tt === ContextTranslationType.RESERVED || (tt === ContextTranslationType.DEV_IOTLB && !this.config.dt)) return out.fault(VtdFaultReason.CONTEXT_ENTRY_INV);
    out.ats = tt === ContextTranslationType.DEV_IOTLB;
    const levels = (w[2]! & 7) + 2;
    if (levels > 5 || !capSupportsLevels(this.config.sagaw, levels)) return out.fault(VtdFaultReason.CONTEXT_ENTRY_INV);
    out.kind = ContextKind.SECOND_LEVEL;
    out.levels = levels;
    out.root = address64(w[0]!, w[1]!, 12, 51);
    return out;
  }

  private resolveScalable(sid: number, pasid: number, out: DeviceContext): DeviceContext {
    const w = this.words;
    const devfn = sid & 0xff;
    if (!this.read(this.rootTable + (sid >>> 8) * 16, 4, "root entry")) return out.fault(VtdFaultReason.SM_ROOT_ENTRY_ACCESS);
    const upper = devfn >= 0x80;
    const lo = upper ? w[2]! : w[0]!;
    const hi = upper ? w[3]! : w[1]!;
    if ((lo & 1) === 0) return out.fault(VtdFaultReason.SM_ROOT_ENTRY_P);
    if (smRootEntryHasReservedBits(this.views.get(4)!, devfn, this.config.haw)) return out.fault(VtdFaultReason.SM_ROOT_ENTRY_RSVD);
    const ctp = address64(lo, hi, 12, 51);
    if (!this.read(ctp + (devfn & 0x7f) * 32, 8, "context entry")) return out.fault(VtdFaultReason.SM_CONTEXT_ENTRY_ACCESS);
    if ((w[0]! & 1) === 0) return out.fault(VtdFaultReason.SM_CONTEXT_ENTRY_P);
    out.fpd = (w[0]! & 2) !== 0;
    if (smContextEntryHasReservedBits(this.views.get(8)!, this.config.haw)) return out.fault(VtdFaultReason.SM_CONTEXT_ENTRY_RSVD);
    const paside = (w[0]! & 8) !== 0;
    out.pre = (w[0]! & 0x10) !== 0;
    out.ats = (w[0]! & 4) !== 0;
    out.ridPriv = (w[2]! & (1 << 20)) !== 0;
    out.paside = paside;
    const pdts = (w[0]! >>> 9) & 7;
    const dir = address64(w[0]!, w[1]!, 12, 51);
    out.pasidDir = dir;
    out.pasidDirEntries = 2 ** (pdts + 7);
    if (pasid !== NO_PASID && !paside) return out.fault(VtdFaultReason.SM_CONTEXT_PASIDE);
    const p = pasid === NO_PASID ? w[2]! & 0xfffff : pasid;
    // A PASID is 20 bits: anything else no directory holds.
    if (!Number.isInteger(p) || p < 0 || p > 0xfffff) return out.fault(VtdFaultReason.SM_PASID_BEYOND_PDTS);
    out.pasid = p;
    if (p >>> 6 >= out.pasidDirEntries) return out.fault(VtdFaultReason.SM_PASID_BEYOND_PDTS);
    if (!this.read(dir + 8 * (p >>> 6), 2, "PASID directory entry")) return out.fault(VtdFaultReason.PASID_DIR_ACCESS_ERR);
    if ((w[0]! & 1) === 0) return out.fault(VtdFaultReason.PASID_DIR_ENTRY_P);
    out.fpd ||= (w[0]! & 2) !== 0;
    if (pasidDirEntryHasReservedBits(this.views.get(2)!, this.config.haw)) return out.fault(VtdFaultReason.PASID_DIR_ENTRY_RSVD);
    const table = address64(w[0]!, w[1]!, 12, 51);
    if (!this.read(table + 64 * (p & 0x3f), 16, "PASID table entry")) return out.fault(VtdFaultReason.PASID_TABLE_ACCESS_ERR);
    if ((w[0]! & 1) === 0) return out.fault(VtdFaultReason.PASID_ENTRY_P);
    out.fpd ||= (w[0]! & 2) !== 0;
    if (pasidEntryHasReservedBits(w, this.config.haw)) return out.fault(VtdFaultReason.PASID_ENTRY_RSVD);
    out.did = w[2]! & 0xffff;
    const pgtt = (w[0]! >>> 6) & 7;
    switch (pgtt) {
      case PasidGranularTranslationType.FL_ONLY: {
        const flpm = (w[4]! >>> 2) & 3;
        if (!this.config.flts || flpm > 1 || (flpm === 1 && !this.config.fl5lp)) return out.fault(VtdFaultReason.PASID_TABLE_ENTRY_INV);
        out.kind = ContextKind.FIRST_LEVEL;
        out.levels = 4 + flpm;
        out.root = address64(w[4]!, w[5]!, 12, 51);
        out.sre = (w[4]! & 1) !== 0;
        out.wpe = (w[4]! & 0x10) !== 0;
        out.eafe = (w[4]! & 0x80) !== 0;
        return out;
      }
      case PasidGranularTranslationType.SL_ONLY: {
        const levels = ((w[0]! >>> 2) & 7) + 2;
        if (!this.config.slts || levels > 5 || !capSupportsLevels(this.config.sagaw, levels)) return out.fault(VtdFaultReason.PASID_TABLE_ENTRY_INV);
        out.kind = ContextKind.SECOND_LEVEL;
        out.levels = levels;
        out.root = address64(w[0]!, w[1]!, 12, 51);
        return out;
      }
      case PasidGranularTranslationType.PT:
        if (!this.config.pt) return out.fault(VtdFaultReason.PASID_TABLE_ENTRY_INV);
        out.kind = ContextKind.PASS_THROUGH;
        return out;
      default:
        // Nested (3) is not offered to the guest (ECAP.NEST = 0); 0, 5, 6 and 7 are reserved.
        return out.fault(VtdFaultReason.PASID_TABLE_ENTRY_INV);
    }
  }

  /**
   * The PASIDs below `limit` whose PASID-table entries are present, in order, under a scalable context that
   * enables PASIDs (`ctx` resolved for the device's RID): what a PASID-cache invalidation wider than one PASID
   * makes hardware re-read. At most `max` + 1 are listed (the caller refuses beyond `max`); directory entries or
   * tables outside readable guest memory list nothing. Bounded by the directory PDTS allows: one dword per
   * directory entry and per PASID-table entry is read.
   */
  presentPasids(ctx: DeviceContext, limit: number, max: number, out: number[]): void {
    out.length = 0;
    if (!ctx.scalable || !ctx.paside) return;
    const dirEntries = Math.min(ctx.pasidDirEntries, Math.ceil(limit / 64));
    const w = this.words;
    for (let d = 0; d < dirEntries; d++) {
      if (!this.read(ctx.pasidDir + 8 * d, 2, "PASID directory entry") || (w[0]! & 1) === 0) continue;
      const table = address64(w[0]!, w[1]!, 12, 51);
      if (!this.memory.hostReadable(table, 4096)) continue;
      for (let i = 0; i < 64; i++) {
        const p = d * 64 + i;
        if (p >= limit) return;
        if ((this.memory.read32(table + 64 * i) & 1) === 0) continue;
        out.push(p);
        if (out.length > max) return;
      }
    }
  }

  /**
   * Translates one request. `supervisor` marks a privileged request (only requests with PASID can be; a
   * request without PASID takes the context's RID_PRIV).
   */
  translate(sid: number, pasid: number, iova: number, write: boolean, out: GuestTranslation, supervisor = false): void {
    const ctx = this.resolve(sid, pasid, this.scratch);
    this.translateWith(ctx, iova, write, out, supervisor);
  }

  /** Translates through an already resolved context. */
  translateWith(ctx: DeviceContext, iova: number, write: boolean, out: GuestTranslation, supervisor = false): void {
    const walk = out.walk;
    out.ok = false;
    out.reason = 0;
    out.did = ctx.did;
    out.fpd = ctx.fpd;
    out.pasid = ctx.pasid;
    out.scalable = ctx.scalable;
    walk.ok = false;
    walk.faultInput = iova;
    if (ctx.kind === ContextKind.FAULT) {
      out.reason = ctx.reason;
      walk.fault = WalkFault.Translation;
      return;
    }
    const access = write ? Perm.Write : Perm.Read;
    if (ctx.kind === ContextKind.PASS_THROUGH) {
      if (!(iova >= 0) || iova >= 2 ** this.config.haw) {
        out.reason = ctx.scalable ? VtdFaultReason.SM_ADDR_BEYOND_MAX : VtdFaultReason.ADDR_BEYOND_MGAW;
        walk.fault = WalkFault.AddressSize;
        return;
      }
      walk.ok = true;
      walk.output = iova;
      walk.pageShift = 12;
      walk.perms = Perm.All;
      walk.fault = WalkFault.None;
    } else {
      const { format, geometry } = this.stageOf(ctx);
      if (ctx.kind === ContextKind.FIRST_LEVEL) {
        const user = ctx.withPasid ? !supervisor : !ctx.ridPriv;
        if (!user && !ctx.sre) {
          out.reason = VtdFaultReason.PASID_ENTRY_SRE;
          walk.fault = WalkFault.Permission;
          return;
        }
        const input = canonicalIndex(iova, ctx.levels);
        if (input < 0) {
          out.reason = VtdFaultReason.FS_NON_CANONICAL;
          walk.fault = WalkFault.AddressSize;
          return;
        }
        if (this.trace !== undefined) this.tracedReader.what = "FL-PTE";
        this.walker.walk(format, geometry, ctx.root, input, user ? access | Perm.User : access, this.reader, walk);
        walk.faultInput = iova;
        if (!walk.ok) {
          out.reason = firstLevelGuestReason(walk, write, geometry.startLevel);
          return;
        }
      } else {
        if (this.trace !== undefined) this.tracedReader.what = "SL-PTE";
        this.walker.walk(format, geometry, ctx.root, iova, access, this.reader, walk);
        if (!walk.ok) {
          out.reason = ctx.scalable ? scalableSecondLevelReason(walk, write, geometry.startLevel) : legacySecondLevelReason(walk, write, geometry.startLevel);
          return;
        }
      }
    }
    // Untranslated requests whose result lands in the interrupt range are blocked (VT-d 3.14, LGN.4 / SGN.8).
    const size = 2 ** walk.pageShift;
    const base = walk.output - (walk.output % size);
    if (overlapsInterruptRange(base, size)) {
      walk.ok = false;
      walk.fault = WalkFault.Permission;
      out.reason = ctx.scalable ? VtdFaultReason.SM_INTERRUPT_ADDR : VtdFaultReason.INTERRUPT_ADDR;
      return;
    }
    out.ok = true;
  }
}

/** 2^64 less the upper canonical half of a 48- and a 57-bit first-level address space, exact as doubles. */
const UPPER_HALF_48 = 2 ** 64 - 2 ** 47;
const UPPER_HALF_57 = 2 ** 64 - 2 ** 56;

/**
 * The index-space address a first-level walk of `levels` levels uses for `iova`, or -1 when `iova` is not
 * canonical (fault 0x80, SGN.1): bits 63:N-1 must all equal bit N-1 (N = 48, or 57 with 5 levels), and an
 * upper-half address walks the top table's upper half (QEMU's vtd_iova_fl_check_canonical in
 * hw/i386/intel_iommu.c accepts both halves the same way). Inputs at or above 2^53 are page-aligned doubles
 * here (the edge splits the offset off), so the subtraction is exact.
 */
function canonicalIndex(iova: number, levels: number): number {
  const half = levels === 5 ? 2 ** 56 : 2 ** 47;
  if (iova >= 0 && iova < half) return iova;
  const upper = levels === 5 ? UPPER_HALF_57 : UPPER_HALF_48;
  if (iova >= upper && iova < 2 ** 64) return iova - upper + half;
  return -1;
}
