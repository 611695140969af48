import {
  err,
  fail,
  GuestTableStore,
  ok,
  PageTableBuilder,
  Perm,
  toHex64,
  type GuestContext,
  type GuestDomainId,
  type GuestEvent,
  type GuestIommuDriver,
  type GuestInitOptions,
  type GuestProcess,
  type MsiMessage,
  type PermBits,
  type Result,
  type SkippedInvalidation,
  type TableGeometry,
  type WritableFormat,
} from "@viommu/core";
import { capSupportsLevels, decodeCap, faultRecordOffset, type CapFields } from "../format/cap.js";
import { encodeContextEntry, ContextTranslationType } from "../format/context-entry.js";
import { decodeDmar } from "../format/dmar.js";
import { decodeEcap, type EcapFields } from "../format/ecap.js";
import { FlPteFormat } from "../format/fl-pte.js";
import { encodeIotlbInvInto, encodePIotlbInvInto } from "../format/inv-desc-encode.js";
import { encodeInvDesc, InvDescType, ContextCacheGranularity, IotlbGranularity, PageResponseCode, PasidCacheGranularity, PasidIotlbGranularity } from "../format/inv-desc.js";
import { encodeIrteRemapped, irteBusRangeSid, irteDst, SourceValidationType } from "../format/irte.js";
import { encodeRemappableMsi, remappableMsiIndex } from "../format/msi.js";
import { encodePasidEntry, PasidGranularTranslationType } from "../format/pasid-entry.js";
import { encodeRootEntry } from "../format/root-entry.js";
import { SlPteFormat } from "../format/sl-pte.js";
import { encodeSmContextEntry } from "../format/sm-context-entry.js";
import { vtdTableGeometry } from "../format/table-geometry.js";
import { CpuProcess } from "./cpu-process.js";
import { readFaultRecords } from "./fault-reader.js";
import { GuestPageRequests } from "./page-requests.js";
import { DevicePasidTables, PDTS_ONE_PAGE, pdtsForPasidBits } from "./pasid-tables.js";
import { FaultStatus, Global, Reg, RegisterWindow } from "./mmio.js";
import { GuestInvalidationQueue, QUEUE_ENTRIES } from "./queued-invalidation.js";

export type VtdVariant = "legacy" | "scalable";

/** Defaults the platform wiring chooses for the driver (options passed to `init` win). */
export interface VtdDriverDefaults {
  readonly variant?: VtdVariant;
}

interface GuestDomain {
  readonly did: number;
  readonly table: PageTableBuilder;
  /** Scalable mode: the PASIDs it is attached at (RID_PASID for a device's RID), with how many devices each. */
  readonly tags: Map<number, number>;
}

/** How a device's scalable-mode context entry is set: the bits beyond its PASID directory. */
interface ContextBits {
  paside: boolean;
  pre: boolean;
}

/** Interrupt remapping table size Linux uses: 65536 entries (IRTA.S = 0xF), 1 MiB. */
const IRT_SIZE_FIELD = 0xf;
const IRT_ENTRIES = 65536;
/** Linux reserves domain ids 0 (caching mode) and 1 (FLPT_DEFAULT_DID); domains start at 2. */
const FIRST_DID = 2;
/** The PASID used for requests without PASID (Linux IOMMU_NO_PASID). */
const RID_PASID = 0;
/** Linux's domain id for first-level translations of no domain of its own: pass-through and SVA (FLPT_DEFAULT_DID). */
const FLPT_DEFAULT_DID = 1;
/** Page request queue of one page (Linux PRQ_ORDER 0 in older kernels): 128 descriptors. */
const PRQ_PQS = 0;
/** Ranges flushed page-selectively before a domain-selective flush is cheaper (Linux falls back the same way). */
const MAX_PSI_DESCRIPTORS = 16;

/**
 * The reference VT-d guest driver: it programs the unit as Linux's intel-iommu does, in legacy mode (root and
 * context tables, second-level page tables) or scalable mode (scalable root/context tables, a PASID directory
 * and table per device, first-level page tables for RID_PASID), with queued invalidation (wait descriptors
 * polled), caching-mode flushes after maps, interrupt remapping (a 65536-entry IRT, IRTEs with source-id
 * verification, x2APIC when asked) and fault handling from the fault-recording registers.
 */
export class VtdGuestDriver implements GuestIommuDriver {
  readonly vendor = "vtd";
  variant: VtdVariant = "legacy";
  private regs!: RegisterWindow;
  private cap!: CapFields;
  private ecap!: EcapFields;
  private gcmd = 0;
  /** Descriptor buffers of the flush being built (see `nextDescriptor`). */
  private readonly descriptorPool: Uint32Array[] = [];
  private poolNext = 0;
  private qi: GuestInvalidationQueue | undefined;
  private readonly store: GuestTableStore;
  private root = 0;
  /** Context tables by bus (legacy) or by bus × 2 + upper half (scalable). */
  private readonly contextTables = new Map<number, number>();
  /** Scalable mode: each device's PASID directory and tables, and its context entry's PASIDE and PRE. */
  private readonly pasidTables = new Map<number, DevicePasidTables>();
  private readonly contextBits = new Map<number, ContextBits>();
  /** The domain id each requester id is attached with. */
  private readonly attached = new Map<number, number>();
  /** Scalable mode: what is attached at each device's PASIDs (other than RID_PASID): a domain, or a process. */
  private readonly pasidAttached = new Map<number, Map<number, { did: number; domain?: GuestDomain; process?: GuestProcess }>>();
  /** Each bound process's (requester id, PASID) pairs: where its invalidations go. */
  private readonly processBindings = new Map<GuestProcess, { rid: number; pasid: number }[]>();
  private nextPcid = 1;
  private readonly domains = new Map<GuestDomainId, GuestDomain>();
  private nextDid = FIRST_DID;
  private levels = 4;
  private format!: WritableFormat;
  private geometry!: TableGeometry;
  private irt = 0;
  private eime = false;
  private readonly irtUsed = new Set<number>();
  private prq: GuestPageRequests | undefined;
  private overflowSeen = false;
  /** GuestInitOptions.skipInvalidation: the one class of invalidation this (deliberately broken) driver forgets. */
  private skip: SkippedInvalidation | undefined;
  /** Set while a present context or PASID entry is being changed: the flushes a "context" skip drops. */
  private changingLiveEntry = false;

  constructor(
    private readonly context: GuestContext,
    private readonly defaults: VtdDriverDefaults = {},
  ) {
    this.store = new GuestTableStore(context.memory, context.pages);
  }

  private alloc(pages: number): Result<number> {
    const at = this.context.pages.allocate(pages, pages);
    return at === undefined ? err("ENOMEM", "guest driver memory exhausted") : ok(at);
  }

  /** The register base: the first DRHD of the DMAR the firmware published, else where the VMM said. */
  private registerBase(): number {
    const dmar = this.context.acpi.find((t) => t.signature === "DMAR");
    if (dmar !== undefined) {
      const decoded = decodeDmar(dmar.bytes);
      if (decoded.ok) {
        const drhd = decoded.table.structures.find((s) => s.type === "DRHD");
        if (drhd !== undefined && drhd.type === "DRHD") return Number(drhd.registerBase);
      }
    }
    return this.context.mmioBase;
  }

  private command(bit: number, on: boolean, status: number): Result<void> {
    this.gcmd = on ? (this.gcmd | bit) >>> 0 : (this.gcmd & ~bit) >>> 0;
    this.regs.write32(Reg.GCMD, this.gcmd);
    return this.regs.waitFor(Reg.GSTS, (s) => ((s & status) !== 0) === on) ? ok() : err("ETIMEDOUT", `GSTS did not follow GCMD 0x${bit.toString(16)}`);
  }

  /** One-shot commands (SRTP, SIRTP): written with the current command state, not kept in it. */
  private oneShot(bit: number, status: number): Result<void> {
    this.regs.write32(Reg.GCMD, (this.gcmd | bit) >>> 0);
    return this.regs.waitFor(Reg.GSTS, (s) => (s & status) !== 0) ? ok() : err("ETIMEDOUT", `GSTS did not report 0x${status.toString(16)}`);
  }

  private submit(descs: readonly Uint32Array[]): Result<void> {
    if (this.qi === undefined) return err("ENODEV", "queued invalidation is not enabled");
    if (this.skip === "context" && this.changingLiveEntry) descs = descs.filter((d) => !isContextClassFlush(d));
    return descs.length > 0 ? this.qi.submit(descs) : ok();
  }

  /**
   * Runs `change` (which rewrites or clears a present context or PASID entry) with the context-class flushes
   * dropped when the driver is told to forget them. A first programming (not present → present) keeps its
   * caching-mode flush: that is the announcement the VMM needs, not the invalidation of a cached entry.
   */
  private liveEntryChange<T>(change: () => Result<T>): Result<T> {
    const was = this.changingLiveEntry;
    this.changingLiveEntry = true;
    try {
      return change();
    } finally {
      this.changingLiveEntry = was;
    }
  }

  init(options: GuestInitOptions): Result<void> {
    this.regs = new RegisterWindow(this.context.vm, this.registerBase());
    if (this.regs.read32(Reg.VER) === 0xffff_ffff) return err("ENODEV", "no VT-d unit at the register base");
    this.cap = decodeCap(Uint32Array.of(this.regs.read32(Reg.CAP), this.regs.read32(Reg.CAP + 4)));
    this.ecap = decodeEcap(Uint32Array.of(this.regs.read32(Reg.ECAP), this.regs.read32(Reg.ECAP + 4)));
    if (!this.ecap.QI) return err("ENODEV", "the unit has no queued invalidation");
    this.skip = options.skipInvalidation;
    const wanted = (options.variant as VtdVariant | undefined) ?? this.defaults.variant ?? "legacy";
    this.variant = wanted === "scalable" && this.ecap.SMTS && this.ecap.FLTS ? "scalable" : "legacy";
    const q = this.enableQueuedInvalidation();
    if (!q.ok) return q;
    this.programFaultEvent(options);
    // Clear faults left from before (Linux runs dmar_fault once at setup).
    readFaultRecords(this.regs, faultRecordOffset(this.cap.FRO, 0), this.cap.NFR + 1);
    if (options.interruptRemapping) {
      if (!this.ecap.IR) return err("ENODEV", "the unit has no interrupt remapping");
      const ir = this.enableInterruptRemapping(options.x2apic === true);
      if (!ir.ok) return ir;
    }
    if (options.translation) {
      const t = this.enableTranslation();
      if (!t.ok) return t;
    }
    return ok();
  }

  /** `dmar_enable_qi`: IQT = 0, IQA (256-bit descriptors in scalable mode), then QIE. */
  private enableQueuedInvalidation(): Result<void> {
    const wide = this.variant === "scalable";
    const queue = this.alloc((QUEUE_ENTRIES * (wide ? 32 : 16)) / 4096);
    const status = this.alloc(1);
    if (!queue.ok || !status.ok) return err("ENOMEM", "no memory for the invalidation queue");
    this.qi = new GuestInvalidationQueue(this.regs, this.context.memory, queue.value, wide, status.value);
    this.regs.write32(Reg.IQT, 0);
    this.regs.write64(Reg.IQA, this.qi.iqa);
    return this.command(Global.QIE, true, Global.QIE);
  }

  /** `dmar_set_interrupt`: the fault event MSI (vector in FEDATA, APIC id in FEADDR, x2APIC high bits in FEUADDR), unmasked. */
  private programFaultEvent(options: GuestInitOptions): void {
    if (options.eventVector === undefined) return;
    const dest = options.eventDestination ?? 0;
    this.regs.write32(Reg.FEDATA, options.eventVector & 0xff);
    this.regs.write32(Reg.FEADDR, 0xfee0_0000 | ((dest & 0xff) << 12));
    this.regs.write32(Reg.FEUADDR, this.ecap.EIM ? dest & 0xffff_ff00 : 0);
    this.regs.write32(Reg.FECTL, 0);
  }

  /**
   * `intel_setup_irq_remapping` + `iommu_set_irq_remapping` + `iommu_enable_irq_remapping`: the IRT, IRTA with
   * EIME in x2APIC mode, SIRTP, a global interrupt-entry-cache flush, IRE, and compatibility format blocked.
   */
  private enableInterruptRemapping(x2apic: boolean): Result<void> {
    const table = this.alloc((IRT_ENTRIES * 16) / 4096);
    if (!table.ok) return fail(table);
    this.irt = table.value;
    this.eime = x2apic && this.ecap.EIM === 1;
    this.regs.write64(Reg.IRTA, BigInt(this.irt) | (this.eime ? 1n << 11n : 0n) | BigInt(IRT_SIZE_FIELD));
    const set = this.oneShot(Global.SIRTP, Global.SIRTP);
    if (!set.ok) return set;
    if (!this.cap.ESIRTPS) {
      const flushed = this.submit([encodeInvDesc("IEC_INV", { G: 0 })]);
      if (!flushed.ok) return flushed;
    }
    const enabled = this.command(Global.IRE, true, Global.IRE);
    if (!enabled.ok) return enabled;
    if (this.regs.read32(Reg.GSTS) & Global.CFI) return this.command(Global.CFI, false, Global.CFI);
    return ok();
  }

  /** Root table, SRTP, global context / PASID / IOTLB flushes, TE; in scalable mode also the page request queue. */
  private enableTranslation(): Result<void> {
    const root = this.alloc(1);
    if (!root.ok) return fail(root);
    this.root = root.value;
    const scalable = this.variant === "scalable";
    this.levels = capSupportsLevels(this.cap.SAGAW, 4) ? 4 : 3;
    const haw = this.cap.MGAW + 1;
    if (scalable) {
      this.format = new FlPteFormat({ haw, fl1gp: this.cap.FL1GP === 1 });
      this.geometry = vtdTableGeometry(4, 47);
    } else {
      this.format = new SlPteFormat({ haw, sllps: this.cap.SLLPS, snoop: false });
      this.geometry = vtdTableGeometry(this.levels as 3 | 4, Math.min(30 + 9 * (this.levels - 2), haw));
    }
    this.regs.write64(Reg.RTADDR, BigInt(this.root) | (scalable ? 1n << 10n : 0n));
    const set = this.oneShot(Global.SRTP, Global.SRTP);
    if (!set.ok) return set;
    const flushes = [encodeInvDesc("CC_INV", { G: ContextCacheGranularity.GLOBAL }), encodeInvDesc("IOTLB_INV", { G: IotlbGranularity.GLOBAL, ...this.drain })];
    if (scalable) flushes.push(encodeInvDesc("PC_INV", { G: PasidCacheGranularity.GLOBAL }));
    const flushed = this.submit(flushes);
    if (!flushed.ok) return flushed;
    if (scalable && this.ecap.PRS) {
      const prq = this.enablePageRequestQueue();
      if (!prq.ok) return prq;
    }
    return this.command(Global.TE, true, Global.TE);
  }

  /** `intel_iommu_enable_prq`: PQH = PQT = 0, PQA with the size, and the page request event. */
  private enablePageRequestQueue(): Result<void> {
    const pages = 2 ** PRQ_PQS;
    const base = this.alloc(pages);
    if (!base.ok) return fail(base);
    this.prq = new GuestPageRequests(this.regs, this.context.memory, base.value, pages * 4096);
    this.regs.write64(Reg.PQH, 0n);
    this.regs.write64(Reg.PQT, 0n);
    this.regs.write64(Reg.PQA, BigInt(base.value) | BigInt(PRQ_PQS));
    return ok();
  }

  /** Linux sets the drain bits of IOTLB invalidations when the unit can drain (CAP.DRD / CAP.DWD). */
  private get drain(): { DR: number; DW: number } {
    return { DR: this.cap.DRD, DW: this.cap.DWD };
  }

  private get caching(): boolean {
    return this.cap.CM === 1;
  }

  // ---- domains ----

  createDomain(): Result<GuestDomainId> {
    if (this.root === 0) return err("ENODEV", "DMA translation is not enabled");
    if (this.nextDid > 0xffff) return err("ENOSPC", "domain ids exhausted");
    const table = PageTableBuilder.create(this.format, this.geometry, this.store);
    if (table === undefined) return err("ENOMEM", "no memory for a page table");
    const did = this.nextDid++;
    this.domains.set(did, { did, table, tags: new Map() });
    return ok(did);
  }

  private domain(id: GuestDomainId): Result<GuestDomain> {
    const d = this.domains.get(id);
    return d === undefined ? err("ENOENT", `no domain ${id}`) : ok(d);
  }

  private contextTable(key: number): Result<{ table: number; fresh: boolean }> {
    const known = this.contextTables.get(key);
    if (known !== undefined) return ok({ table: known, fresh: false });
    const t = this.alloc(1);
    if (!t.ok) return fail(t);
    this.contextTables.set(key, t.value);
    return ok({ table: t.value, fresh: true });
  }

  attach(rid: number, domainId: GuestDomainId): Result<void> {
    if (!Number.isInteger(rid) || rid < 0 || rid > 0xffff) return err("EINVAL", `requester id ${rid}`);
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    return this.attached.has(rid) ? this.liveEntryChange(() => this.replaceAttachment(rid, d.value)) : this.attachFresh(rid, d.value);
  }

  /** A device attached elsewhere is detached first, then attached to `d` (one change of a present entry). */
  private replaceAttachment(rid: number, d: GuestDomain): Result<void> {
    const detached = this.detach(rid);
    if (!detached.ok) return detached;
    return this.attachFresh(rid, d);
  }

  private attachFresh(rid: number, d: GuestDomain): Result<void> {
    const r = this.variant === "scalable" ? this.attachScalable(rid, d) : this.attachLegacy(rid, d);
    if (r.ok) {
      this.attached.set(rid, d.did);
      if (this.variant === "scalable") tag(d, RID_PASID, 1);
    }
    return r;
  }

  /** `domain_context_mapping_one`: root entry, context entry, then (caching mode) device-selective context and domain IOTLB flushes. */
  private attachLegacy(rid: number, d: GuestDomain): Result<void> {
    const bus = rid >>> 8;
    const ctx = this.contextTable(bus);
    if (!ctx.ok) return fail(ctx);
    if (ctx.value.fresh) this.context.memory.writeWords(this.root + bus * 16, encodeRootEntry({ P: 1, CTP: BigInt(ctx.value.table) }));
    const entry = encodeContextEntry({ P: 1, TT: ContextTranslationType.MULTI_LEVEL, SLPTPTR: BigInt(d.table.root), AW: this.levels - 2, DID: d.did });
    this.context.memory.writeWords(ctx.value.table + (rid & 0xff) * 16, entry);
    if (!this.caching) return ok();
    return this.submit([
      encodeInvDesc("CC_INV", { G: ContextCacheGranularity.DEVICE, DID: 0, SID: rid, FM: 0 }),
      encodeInvDesc("IOTLB_INV", { G: IotlbGranularity.DOMAIN, DID: d.did, ...this.drain }),
    ]);
  }

  /**
   * Scalable mode: the context entry points at the device's PASID directory (RID_PASID 0); the RID_PASID entry
   * holds the first-level table (PGTT 1, 4-level) with the domain id; then, in caching mode, the PASID-cache
   * and PASID-IOTLB flushes of `pasid_flush_caches`.
   */
  private attachScalable(rid: number, d: GuestDomain): Result<void> {
    const tables = this.deviceTables(rid);
    if (!tables.ok) return fail(tables);
    const flushes: Uint32Array[] = [...tables.value.flushes];
    const at = tables.value.tables.entryAddress(RID_PASID);
    if (!at.ok) return fail(at);
    this.context.memory.writeWords(at.value, this.firstLevelEntry(d.did, d.table.root));
    if (this.caching) flushes.push(...this.pasidFlushes(d.did, RID_PASID));
    return flushes.length > 0 ? this.submit(flushes) : ok();
  }

  /**
   * The device's scalable context table slot and PASID tables, written the first time it is attached (a root
   * entry half for a new context table, then the context entry; in caching mode its context-cache flush is
   * returned for the caller to submit).
   */
  private deviceTables(rid: number): Result<{ tables: DevicePasidTables; flushes: Uint32Array[] }> {
    const known = this.pasidTables.get(rid);
    if (known !== undefined) return ok({ tables: known, flushes: [] });
    const bus = rid >>> 8;
    const upper = (rid & 0x80) !== 0;
    const ctx = this.contextTable(bus * 2 + (upper ? 1 : 0));
    if (!ctx.ok) return fail(ctx);
    const mem = this.context.memory;
    if (ctx.value.fresh) {
      const rootAt = this.root + bus * 16;
      const existing = mem.readWords(rootAt, new Uint32Array(4));
      if (upper) {
        existing[2] = (ctx.value.table | 1) >>> 0;
        existing[3] = Math.floor(ctx.value.table / 2 ** 32);
      } else {
        existing[0] = (ctx.value.table | 1) >>> 0;
        existing[1] = Math.floor(ctx.value.table / 2 ** 32);
      }
      mem.writeWords(rootAt, existing);
    }
    const tables = DevicePasidTables.create(mem, (pages) => this.alloc(pages), PDTS_ONE_PAGE);
    if (!tables.ok) return fail(tables);
    this.pasidTables.set(rid, tables.value);
    this.contextBits.set(rid, { paside: false, pre: false });
    this.writeContext(rid);
    return ok({ tables: tables.value, flushes: this.caching ? [encodeInvDesc("CC_INV", { G: ContextCacheGranularity.DEVICE, DID: 0, SID: rid, FM: 0 })] : [] });
  }

  /** Writes a device's scalable context entry from its PASID directory and context bits. */
  private writeContext(rid: number): void {
    const tables = this.pasidTables.get(rid)!;
    const bits = this.contextBits.get(rid)!;
    const table = this.contextTables.get((rid >>> 8) * 2 + ((rid & 0x80) !== 0 ? 1 : 0))!;
    const entry = encodeSmContextEntry({ P: 1, PASIDE: bits.paside ? 1 : 0, PRE: bits.pre ? 1 : 0, PDTS: tables.pdts, PASIDDIRPTR: BigInt(tables.dir), RID_PASID });
    this.context.memory.writeWords(table + (rid & 0x7f) * 32, entry);
  }

  /**
   * A PASID entry for first-level translation as `intel_pasid_setup_first_level` writes it
   * (drivers/iommu/intel/pasid.c): the table pointer, FLPM 0 (4-level), the domain id, AW = the unit's AGAW,
   * PWSNP as ECAP.SMPWCS says, NXE (XD honoured), PGTT first-level only, present. No SRE or WPE: Linux sets
   * neither for DMA domains or for SVA (intel_svm_set_dev_pasid passes only FL5LP, for LA57 CPUs).
   */
  private firstLevelEntry(did: number, root: number): Uint32Array {
    return encodePasidEntry({ P: 1, AW: this.levels - 2, PGTT: PasidGranularTranslationType.FL_ONLY, DID: did, PWSNP: this.ecap.SMPWCS, NXE: 1, FLPM: 0, FLPTPTR: BigInt(root) });
  }

  /** `pasid_flush_caches` in caching mode: the entry's PASID-cache and PASID-based IOTLB flushes. */
  private pasidFlushes(did: number, pasid: number): Uint32Array[] {
    return [
      encodeInvDesc("PC_INV", { G: PasidCacheGranularity.PASID, DID: did, PASID: pasid }, 256),
      encodeInvDesc("P_IOTLB_INV", { G: PasidIotlbGranularity.NON_GLOBAL, DID: did, PASID: pasid }, 256),
    ];
  }

  /** `device_block_translation`: the context entry (legacy) or the RID_PASID entry (scalable) cleared and flushed. */
  detach(rid: number): Result<void> {
    return this.liveEntryChange(() => this.clearAttachment(rid));
  }

  private clearAttachment(rid: number): Result<void> {
    const did = this.attached.get(rid);
    const mem = this.context.memory;
    if (this.variant === "scalable") {
      const tables = this.pasidTables.get(rid);
      if (tables === undefined) return ok();
      const at = tables.entryAddress(RID_PASID);
      if (!at.ok) return fail(at);
      mem.fill(at.value, 64, 0);
      this.attached.delete(rid);
      if (did !== undefined) {
        const d = this.domains.get(did);
        if (d !== undefined) tag(d, RID_PASID, -1);
      }
      return this.submit(this.pasidFlushes(did ?? 0, RID_PASID));
    }
    const table = this.contextTables.get(rid >>> 8);
    if (table === undefined) return ok();
    mem.fill(table + (rid & 0xff) * 16, 16, 0);
    this.attached.delete(rid);
    return this.submit([
      encodeInvDesc("CC_INV", { G: ContextCacheGranularity.DEVICE, DID: did ?? 0, SID: rid, FM: 0 }),
      encodeInvDesc("IOTLB_INV", { G: IotlbGranularity.DOMAIN, DID: did ?? 0, ...this.drain }),
    ]);
  }

  map(domainId: GuestDomainId, iova: number, gpa: number, length: number, perms: PermBits): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    // First-level leaves carry U/S (Linux sets DMA_FL_PTE_US): device requests without PASID are user requests.
    const leafPerms = this.variant === "scalable" ? perms | Perm.User : perms;
    const r = d.value.table.map(iova, gpa, length, leafPerms);
    if (!r.ok) return r;
    // Caching mode: a not-present → present change is announced too, so the VMM sees it. As Linux's
    // iotlb_sync_map does, the map succeeds whatever the flush met: a queue error it met is in readEvents
    // (qi_check_fault's report), and DMA to a page the VMM could not install faults.
    if (this.caching) this.flush(domainId, iova, length);
    return ok();
  }

  unmap(domainId: GuestDomainId, iova: number, length: number): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    d.value.table.unmap(iova, length);
    // The deliberately broken driver of the "iotlb" class forgets exactly this flush.
    if (this.skip === "iotlb") return ok();
    return this.flush(domainId, iova, length);
  }

  /**
   * IOTLB flush of a range: naturally aligned power-of-two chunks of at most 2^MAMV pages, one page-selective
   * descriptor each (PASID-based in scalable mode), or a domain-selective flush when that would take too many.
   */
  flush(domainId: GuestDomainId, iova?: number, length?: number): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    const did = d.value.did;
    this.poolNext = 0;
    if (this.variant !== "scalable") return this.submit(this.iotlbFlush(did, undefined, iova, length));
    // First-level domains are flushed per cache tag (Linux cache.c): one PASID-based flush for each PASID the
    // domain is attached at (RID_PASID alone while it is attached nowhere, as caching mode announces maps).
    const pasids = d.value.tags.size > 0 ? [...d.value.tags.keys()] : [RID_PASID];
    return this.submit(pasids.flatMap((pasid) => this.iotlbFlush(did, pasid, iova, length)));
  }

  /**
   * The IOTLB flush of [iova, iova + length) in domain `did` (PASID-based when `pasid` is given): naturally
   * aligned power-of-two chunks of at most 2^MAMV pages, one page-selective descriptor each, or the whole domain
   * (PASID) when that would take too many, or for everything.
   */
  private iotlbFlush(did: number, pasid: number | undefined, iova?: number, length?: number): Uint32Array[] {
    // Encoded with 32-bit operations into buffers the queue copies at once (the flush path: no BigInt, no field records).
    const drain = this.drain;
    const whole = (): Uint32Array =>
      pasid !== undefined
        ? encodePIotlbInvInto(this.nextDescriptor(8), PasidIotlbGranularity.NON_GLOBAL, did, pasid)
        : encodeIotlbInvInto(this.nextDescriptor(4), IotlbGranularity.DOMAIN, did, drain.DW, drain.DR);
    if (iova === undefined || length === undefined || length <= 0) return [whole()];
    const descs: Uint32Array[] = [];
    let page = Math.floor(iova / 4096);
    const end = Math.ceil((iova + length) / 4096);
    while (page < end && descs.length <= MAX_PSI_DESCRIPTORS) {
      let am = 0;
      while (am < this.cap.MAMV && page % 2 ** (am + 1) === 0 && page + 2 ** (am + 1) <= end) am++;
      const addr = page * 4096;
      descs.push(
        pasid !== undefined
          ? encodePIotlbInvInto(this.nextDescriptor(8), PasidIotlbGranularity.PAGE_IN_PASID, did, pasid, am, 0, addr)
          : encodeIotlbInvInto(this.nextDescriptor(4), IotlbGranularity.PAGE, did, drain.DW, drain.DR, am, 0, addr),
      );
      page += 2 ** am;
    }
    return descs.length > MAX_PSI_DESCRIPTORS || !this.cap.PSI ? [whole()] : descs;
  }

  /**
   * A descriptor buffer of `words` 32-bit words (128-bit IOTLB_INV, 256-bit P_IOTLB_INV, as `encodeInvDesc` gives
   * them) for one flush's descriptors, reused flush after flush: the queue has copied them into the ring before the
   * flush returns, and `flush` rewinds the pool.
   */
  private nextDescriptor(words: 4 | 8): Uint32Array {
    let d = this.descriptorPool[this.poolNext];
    if (d === undefined || d.length !== words) {
      d = new Uint32Array(words);
      this.descriptorPool[this.poolNext] = d;
    }
    this.poolNext++;
    return d;
  }

  // ---- PASIDs and processes ----

  /**
   * Turns on requests with PASID for a device (the context's PASIDE, as Linux sets it for a device whose PCI
   * PASID capability it enabled) and sizes its PASID directory for the unit's PASID width (ECAP.PSS), as
   * `intel_pasid_alloc_table` sizes it for such a device. The model gives the guest no view of the device's PASID
   * capability, so this happens when a PASID is first used: the tables in use move to the larger directory, the
   * context entry is rewritten and its context-cache entry invalidated.
   */
  private enablePasid(rid: number): Result<DevicePasidTables> {
    if (this.variant !== "scalable" || this.root === 0) return err("EOPNOTSUPP", "PASIDs need scalable-mode translation");
    if (!this.ecap.PASID) return err("EOPNOTSUPP", "the unit has no PASID support (ECAP.PASID = 0)");
    if (!Number.isInteger(rid) || rid < 0 || rid > 0xffff) return err("EINVAL", `requester id ${rid}`);
    const known = this.deviceTables(rid);
    if (!known.ok) return fail(known);
    const tables = known.value.tables;
    const bits = this.contextBits.get(rid)!;
    if (bits.paside) return known.value.flushes.length > 0 ? this.submitThen(known.value.flushes, tables) : ok(tables);
    const old = tables.resize(pdtsForPasidBits(this.ecap.PSS + 1));
    if (!old.ok) return fail(old);
    bits.paside = true;
    this.writeContext(rid);
    const flushed = this.submit([...known.value.flushes, encodeInvDesc("CC_INV", { G: ContextCacheGranularity.DEVICE, DID: this.attached.get(rid) ?? 0, SID: rid, FM: 0 })]);
    if (old.value !== undefined) this.context.memory.fill(old.value.dir, old.value.bytes, 0);
    return flushed.ok ? ok(tables) : fail(flushed);
  }

  private submitThen<T>(descs: readonly Uint32Array[], value: T): Result<T> {
    const r = this.submit(descs);
    return r.ok ? ok(value) : fail(r);
  }

  /**
   * Writes a first-level PASID entry for `pasid` of `rid` (tearing down what was there first, as Linux replaces
   * an entry) and flushes its caches (`pasid_flush_caches`).
   */
  private setPasidEntry(rid: number, pasid: number, did: number, root: number, what: { domain?: GuestDomain; process?: GuestProcess }): Result<void> {
    if (!Number.isInteger(pasid) || pasid <= 0 || pasid > 0xfffff) return err("EINVAL", `PASID ${pasid}`);
    const tables = this.enablePasid(rid);
    if (!tables.ok) return fail(tables);
    const at = tables.value.entryAddress(pasid);
    if (!at.ok) return fail(at);
    if (this.pasidAttached.get(rid)?.has(pasid)) return this.liveEntryChange(() => this.replacePasidEntry(rid, pasid, did, root, what, at.value));
    return this.writePasidEntry(rid, pasid, did, root, what, at.value);
  }

  private replacePasidEntry(rid: number, pasid: number, did: number, root: number, what: { domain?: GuestDomain; process?: GuestProcess }, at: number): Result<void> {
    const torn = this.tearDownPasid(rid, pasid);
    if (!torn.ok) return torn;
    return this.writePasidEntry(rid, pasid, did, root, what, at);
  }

  private writePasidEntry(rid: number, pasid: number, did: number, root: number, what: { domain?: GuestDomain; process?: GuestProcess }, at: number): Result<void> {
    this.context.memory.writeWords(at, this.firstLevelEntry(did, root));
    let byPasid = this.pasidAttached.get(rid);
    if (byPasid === undefined) {
      byPasid = new Map();
      this.pasidAttached.set(rid, byPasid);
    }
    byPasid.set(pasid, { did, ...what });
    if (what.domain !== undefined) tag(what.domain, pasid, 1);
    return this.caching ? this.submit(this.pasidFlushes(did, pasid)) : ok();
  }

  /**
   * `intel_pasid_tear_down_entry`: the entry cleared, its PASID-cache entry and (first-level) PASID-based IOTLB
   * flushed; no device-TLB flush in caching mode (the driver enables no ATS either).
   */
  private tearDownPasid(rid: number, pasid: number): Result<void> {
    const byPasid = this.pasidAttached.get(rid);
    const was = byPasid?.get(pasid);
    const tables = this.pasidTables.get(rid);
    if (was === undefined || tables === undefined) return err("ENOENT", `nothing is attached at PASID ${pasid} of 0x${rid.toString(16)}`);
    const at = tables.entryAddress(pasid);
    if (!at.ok) return fail(at);
    this.context.memory.fill(at.value, 64, 0);
    byPasid!.delete(pasid);
    if (was.domain !== undefined) tag(was.domain, pasid, -1);
    if (was.process !== undefined) {
      const left = (this.processBindings.get(was.process) ?? []).filter((b) => b.rid !== rid || b.pasid !== pasid);
      if (left.length > 0) this.processBindings.set(was.process, left);
      else this.processBindings.delete(was.process);
    }
    return this.submit(this.pasidFlushes(was.did, pasid));
  }

  /** `intel_iommu_set_dev_pasid` for a first-level domain: its table at the device's PASID, with its domain id. */
  attachPasid(rid: number, pasid: number, domainId: GuestDomainId): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    return this.setPasidEntry(rid, pasid, d.value.did, d.value.table.root, { domain: d.value });
  }

  detachPasid(rid: number, pasid: number): Result<void> {
    return this.tearDownPasid(rid, pasid);
  }

  /** A process with its own x86-64 page table and the next PCID. */
  createProcess(): Result<GuestProcess> {
    const p = CpuProcess.create(this.store, this.nextPcid);
    if (p.ok) this.nextPcid++;
    return p;
  }

  /**
   * `iommu_sva_bind_device` → `intel_svm_set_dev_pasid`: the process's page table as the PASID's first-level
   * table (the CPU's own root: CR3), with FLPT_DEFAULT_DID, as `intel_pasid_setup_first_level` writes it.
   */
  bindProcess(rid: number, pasid: number, process: GuestProcess): Result<void> {
    const r = this.setPasidEntry(rid, pasid, FLPT_DEFAULT_DID, process.root, { process });
    if (!r.ok) return r;
    this.processBindings.set(process, [...(this.processBindings.get(process) ?? []).filter((b) => b.rid !== rid || b.pasid !== pasid), { rid, pasid }]);
    return ok();
  }

  unbindProcess(rid: number, pasid: number): Result<void> {
    if (this.pasidAttached.get(rid)?.get(pasid)?.process === undefined) return err("ENOENT", `no process is bound at PASID ${pasid} of 0x${rid.toString(16)}`);
    return this.tearDownPasid(rid, pasid);
  }

  /**
   * The MMU notifier's secondary-TLB invalidation (`intel_arch_invalidate_secondary_tlbs` →
   * `intel_flush_svm_range_dev`): for every device PASID the process is bound to, PASID-based IOTLB invalidations
   * over the range rounded out to one power-of-two size, FLPT_DEFAULT_DID, IH 0; everything in the PASID when the
   * size exceeds CAP.MAMV. No device-TLB flush: the driver enables no ATS.
   */
  invalidateProcess(process: GuestProcess, va: number, length: number): Result<void> {
    const bound = this.processBindings.get(process);
    if (bound === undefined || bound.length === 0) return ok();
    if (!(length > 0) || !(va >= 0)) return err("EINVAL", "empty or negative range");
    const pages = Math.ceil(length / 4096);
    const shift = Math.ceil(Math.log2(pages));
    const align = 4096 * 2 ** shift;
    const start = va - (va % align);
    const end = Math.ceil((va + pages * 4096) / align) * align;
    const descs: Uint32Array[] = [];
    for (const { pasid } of bound) {
      if (shift > this.cap.MAMV) {
        descs.push(encodeInvDesc("P_IOTLB_INV", { G: PasidIotlbGranularity.NON_GLOBAL, DID: FLPT_DEFAULT_DID, PASID: pasid }, 256));
        continue;
      }
      for (let at = start; at < end; at += align) {
        descs.push(encodeInvDesc("P_IOTLB_INV", { G: PasidIotlbGranularity.PAGE_IN_PASID, DID: FLPT_DEFAULT_DID, PASID: pasid, AM: shift, IH: 0, ADDR: BigInt(at) }, 256));
      }
    }
    return this.submit(descs);
  }

  // ---- interrupts ----

  /**
   * `intel_irq_remapping_alloc` + `modify_irte`: a remapped IRTE (fixed delivery, physical destination,
   * source-id verification as `set_msi_sid` chooses it), an index-selective IEC flush, and the remappable MSI
   * (SHV = 1, sub-handle 0) the device is programmed with. `alias` is the requester id a bridge puts on the
   * device's requests (its last DMA alias, as `pci_for_each_dma_alias` finds it), when it differs from `rid`.
   */
  mapInterrupt(rid: number, vector: number, destination: number, alias?: number): Result<MsiMessage> {
    if (this.irt === 0) return err("ENODEV", "interrupt remapping is not enabled");
    if (!this.eime && destination > 0xff) return err("EINVAL", `APIC id ${destination} needs x2APIC mode`);
    let index = 0;
    while (index < IRT_ENTRIES && this.irtUsed.has(index)) index++;
    if (index >= IRT_ENTRIES) return err("ENOSPC", "interrupt remapping table full");
    this.irtUsed.add(index);
    const irte = encodeIrteRemapped({ P: 1, V: vector & 0xff, DST: irteDst(destination, this.eime), SQ: 0, ...msiSourceValidation(rid, alias) });
    this.context.memory.writeWords(this.irt + index * 16, irte);
    const flushed = this.skip === "interrupt" ? ok() : this.submit([encodeInvDesc("IEC_INV", { G: 1, IM: 0, IIDX: index })]);
    if (!flushed.ok) return fail(flushed);
    const msi = encodeRemappableMsi(index, 0);
    return ok({ address: msi.addressLo + msi.addressHi * 2 ** 32, data: msi.data });
  }

  unmapInterrupt(_rid: number, msi: MsiMessage): Result<void> {
    const index = remappableMsiIndex(msi.address >>> 0, Math.floor(msi.address / 2 ** 32), msi.data >>> 0);
    if (index < 0 || !this.irtUsed.has(index)) return err("ENOENT", "no remapping entry for that MSI");
    this.context.memory.fill(this.irt + index * 16, 16, 0);
    this.irtUsed.delete(index);
    // The deliberately broken driver of the "interrupt" class forgets the IEC flush after an IRTE change.
    if (this.skip === "interrupt") return ok();
    return this.submit([encodeInvDesc("IEC_INV", { G: 1, IM: 0, IIDX: index })]);
  }

  // ---- events ----

  /**
   * Queue errors the submissions met, the fault-recording registers (as `dmar_fault` reads them) and, in
   * scalable mode, page requests (`prq_event_thread`: the ones it cannot report are answered INVALID_REQUEST
   * here; the rest wait for `respondPageRequest`).
   */
  readEvents(): GuestEvent[] {
    const out: GuestEvent[] = [];
    if (this.qi !== undefined) out.push(...this.qi.errors.splice(0));
    const faults = readFaultRecords(this.regs, faultRecordOffset(this.cap.FRO, 0), this.cap.NFR + 1);
    if (faults.overflow) this.overflowSeen = true;
    out.push(...faults.events);
    if (this.prq !== undefined) {
      const drained = this.prq.drain();
      out.push(...drained.events);
      // As Linux's bad-request path, the answer is submitted and not waited on here: a queue error it met is kept
      // in the queue's errors and returned by the next readEvents.
      if (drained.responses.length > 0) this.submit(drained.responses);
    }
    return out;
  }

  /** `iopf_group_response` → `intel_iommu_page_response`: one page group response for the request's group, then waits. */
  respondPageRequest(request: GuestEvent, success: boolean): Result<void> {
    if (this.prq === undefined) return err("EOPNOTSUPP", "page requests are not enabled");
    const desc = this.prq.respond(request, success);
    return desc.ok ? this.submit([desc.value]) : fail(desc);
  }

  /** Whether faults were lost (FSTS.PFO) since the last call; reading acknowledges it. */
  takeOverflow(): boolean {
    const now = (this.regs.read32(Reg.FSTS) & FaultStatus.PFO) !== 0;
    if (now) this.regs.write32(Reg.FSTS, FaultStatus.PFO);
    const seen = this.overflowSeen || now;
    this.overflowSeen = false;
    return seen;
  }

  /** Submits a descriptor of a type VT-d does not define, then waits; the queue error (IQE) is the expected answer. */
  submitIllegalCommand(): Result<void> {
    const bad = new Uint32Array(4);
    bad[0] = 0xf;
    const r = this.submit([bad]);
    return r.ok ? err("EIO", "the invalid descriptor was accepted") : ok();
  }

  /**
   * Sets PRE in a device's scalable-mode context entry (as Linux does for a device with PRI enabled) and
   * flushes its context: page requests from it then reach the page request queue.
   */
  enablePageRequests(rid: number): Result<void> {
    if (this.variant !== "scalable") return err("EOPNOTSUPP", "page requests need scalable mode");
    if (this.prq === undefined) return err("EOPNOTSUPP", "the unit has no page request queue (ECAP.PRS = 0)");
    const tables = this.deviceTables(rid);
    if (!tables.ok) return fail(tables);
    this.contextBits.get(rid)!.pre = true;
    this.writeContext(rid);
    return this.submit([...tables.value.flushes, encodeInvDesc("CC_INV", { G: ContextCacheGranularity.DEVICE, DID: this.attached.get(rid) ?? 0, SID: rid, FM: 0 })]);
  }
}

/**
 * The source validation Linux's `set_msi_sid` (drivers/iommu/intel/irq_remapping.c) gives an MSI: the whole
 * requester id (SVT 01b, SQ 0) for a device that is its own requester; for a device whose requests carry a
 * bridge's alias on another bus, the bus range from the alias's bus to the device's (`set_irte_verify_bus`,
 * SVT 10b with the start bus in SID[15:8]); for an alias on the device's own bus, that one bus.
 */
function msiSourceValidation(rid: number, alias: number | undefined): { SVT: number; SID: number } {
  if (alias === undefined || alias === rid) return { SVT: SourceValidationType.VERIFY_SID, SID: rid & 0xffff };
  const bus = (rid >>> 8) & 0xff;
  return { SVT: SourceValidationType.VERIFY_BUS, SID: irteBusRangeSid((alias >>> 8) & 0xff, bus) };
}

/** Counts a device attachment of `d` at `pasid` (+1) or its end (−1): the domain's cache tags. */
/** A context-cache or PASID-cache invalidation descriptor (type in bits 3:0 and 11:9 of the first word). */
function isContextClassFlush(desc: Uint32Array): boolean {
  const type = (desc[0]! & 0xf) | ((desc[0]! >>> 5) & 0x70);
  return type === InvDescType.CC_INV || type === InvDescType.PC_INV;
}

function tag(d: GuestDomain, pasid: number, delta: number): void {
  const n = (d.tags.get(pasid) ?? 0) + delta;
  if (n > 0) d.tags.set(pasid, n);
  else d.tags.delete(pasid);
}
