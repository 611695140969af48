import {
  decodeLayout,
  encodeLayout,
  err,
  fail,
  GuestTableStore,
  ok,
  Perm,
  type GuestContext,
  type GuestDomainId,
  type GuestEvent,
  type GuestIommuDriver,
  type GuestInitOptions,
  type SkippedInvalidation,
  type GuestProcess,
  type PermBits,
  type RawBits,
  type Result,
} from "@viommu/core";
import { CdTable } from "../format/cd-table.js";
import { linuxCdTableShape } from "../format/cd-table-shape.js";
import { LINUX_MAIR_EL1 } from "../format/aarch64-user-pte.js";
import { encodeCd, Tg0 } from "../format/context-descriptor.js";
import { CFGI_ALL_RANGE, encodeCommand } from "../format/command.js";
import { cr1Layout, Cr1Cache, GERROR_ERR_MASK, GerrorBit, gerrorLayout, Shareability, SmmuMemAttr } from "../format/control-registers.js";
import { gicrSetlpirAddress } from "../format/gic-doorbell.js";
import { addressSizeBits, idr0Layout, idr1Layout, idr3Layout, idr5Layout } from "../format/id-registers.js";
import { decodeIort } from "../format/iort.js";
import { IDR4_MODEL_MAP_NOTIFY } from "../format/model-registers.js";
import { encodeSte, SteConfig, SteEats, SteS1Dss } from "../format/stream-table-entry.js";
import { PriResp, ResumeAction } from "../format/command.js";
import { IdrStallModel } from "../format/id-registers.js";
import type { GranuleShift } from "../format/vmsa-geometry.js";
import { GuestCommandQueue } from "./guest-command-queue.js";
import { GuestEventQueue, guestEventOf } from "./guest-event-queue.js";
import { GuestPriQueue, guestPageRequestOf, PRIQ_ENTRY_NAME } from "./guest-pri-queue.js";
import { GuestPageTable, LINUX_S1_T0SZ, tg0Of } from "./guest-page-table.js";
import { GuestCpuProcess, PROCESS_T0SZ } from "./guest-process.js";
import { GuestStreamTable, linuxAbortSte } from "./guest-stream-table.js";
import type { Smmuv3DriverImplOps, Smmuv3ProbeInfo } from "./impl-ops.js";
import { SmmuMmio } from "./smmu-mmio.js";
import { MAX_RANGE_COMMANDS, tlbiRangeCommands } from "../format/tlbi-commands.js";

export interface Smmuv3DriverOptions {
  /** Stage-1 granule in bytes (default 4096). `GuestInitOptions.variant` "16k" / "64k" selects it too. */
  readonly granule?: 4096 | 16384 | 65536;
  /** Stream table layout (default linear). `GuestInitOptions.variant` "2level" selects 2-level. */
  readonly streamTable?: "linear" | "2level";
}

/** The CMDQ size the driver allocates (256 commands, one page). */
const CMDQ_LOG2 = 8;
/** Linux's MAIR for stage 1: attr0 0x44 NC, attr1 0xFF WB, attr2 0x04 Device-nGnRE, attr3 0xF4; bytes 4–7 0xFF as 6.1 writes them. */
const LINUX_MAIR0 = 0xf404ff44;
const LINUX_MAIR1 = 0xffffffff;
/** CD.IR0/OR0 write-back read/write-allocate (TCR encoding 1). */
const TCR_WBWA = 1;
/** CR2: PTM (ignore broadcast TLB maintenance) and RECINVSID (record C_BAD_STREAMID), as Linux sets them. */
const CR2_LINUX = (1 << 2) | (1 << 1);
const CR0 = { SMMUEN: 1 << 0, PRIQEN: 1 << 1, EVTQEN: 1 << 2, CMDQEN: 1 << 3 } as const;
const IRQ_CTRL = { GERROR: 1 << 0, PRIQ: 1 << 1, EVTQ: 1 << 2 } as const;
/** The PRI queue the driver allocates (256 entries, one page). */
const PRIQ_LOG2 = 8;
/** Linux's MSI_IOVA_BASE and MSI_IOVA_LENGTH (arm-smmu-v3.c): the IOVA window its SW_MSI reserved region holds. */
const MSI_IOVA_BASE = 0x0800_0000;
const MSI_IOVA_LENGTH = 0x10_0000;
/** An opcode the architecture does not define: the driver's deliberately illegal command. */
const UNDEFINED_OPCODE = 0x7f;

interface Domain {
  readonly asid: number;
  readonly table: GuestPageTable;
  /** MSI doorbell pages mapped in the domain's MSI window: doorbell page → IOVA. */
  readonly msiPages: Map<number, number>;
}

interface Stream {
  /** The stream's CD table: one CD (S1CDMax 0) until a PASID is attached, then sized for the SMMU's SubstreamIDs. */
  table: CdTable;
  /** The domain at the RID (CD 0), if any. */
  domain: GuestDomainId | undefined;
  /** Domains attached and processes bound at PASIDs (their CDs at those SubstreamIDs). */
  readonly pasids: Map<number, GuestDomainId | GuestCpuProcess>;
  /** SubstreamIDs whose CD is valid. */
  readonly valid: Set<number>;
  /** ATS (and PRI with it) enabled for the master: STE.EATS translate, ATC invalidations after TLB ones. */
  ats: boolean;
  /** The master may stall (Linux master->stall_enabled): S1STALLD clear, CD.S set. */
  stall: boolean;
}

/** The SVA domain of a process (Linux's IOMMU_DOMAIN_SVA for one mm): its ASID from the SMMU's ASID space. */
interface SvaDomain {
  readonly asid: number;
  readonly process: GuestCpuProcess;
  /** Stream PASIDs it is bound at. */
  bindings: number;
}

/** ID_AA64MMFR0_EL1.PARange of the guest's CPUs: 48-bit physical addresses (the SVA CD's IPS). */
const CPU_PARANGE = 5;
/** Linux's CMDQ_MAX_TLBI_OPS (1 << (PAGE_SHIFT - 3)): without range invalidation, more pages than this go by ASID. */
const CMDQ_MAX_TLBI_OPS = 512;

/** One CD: the table of a stream before any PASID (Linux's master without SubstreamIDs). */
const SINGLE_CD = { s1fmt: 0, s1cdmax: 0, entries: 1 } as const;

function parseVariant(variant: string | undefined): Smmuv3DriverOptions {
  const tokens = (variant ?? "").toLowerCase().split(/[,+\s]+/).filter((t) => t !== "");
  const granule = tokens.includes("64k") ? 65536 : tokens.includes("16k") ? 16384 : tokens.includes("4k") ? 4096 : undefined;
  const streamTable = tokens.includes("2level") ? "2level" : tokens.includes("linear") ? "linear" : undefined;
  return { ...(granule !== undefined ? { granule } : {}), ...(streamTable !== undefined ? { streamTable } : {}) };
}

/**
 * The reference SMMUv3 guest driver: it programs the device as Linux's arm-smmu-v3 does. Probe reads the ID
 * registers; reset disables the SMMU, sets CR1/CR2, installs the stream table (linear, or 2-level) full of abort
 * STEs, the command queue (CFGI_ALL and TLBI_NSNH_ALL first), the event queue, the event and GERROR MSIs, then
 * SMMUEN. A domain is an ASID and a stage-1 table (4K, 16K or 64K granule); attaching writes the stream's CD
 * (dw1–3, CFGI_CD + SYNC, then dw0) and its STE (dw1–7, CFGI_STE + SYNC, then dw0, CFGI_STE, PREFETCH_CONFIG +
 * SYNC). Unmapping is strict: the range is invalidated (range TLBIs with TTL) before unmap returns. Events are
 * consumed with the overflow acknowledged; command and global errors are handled as Linux's GERROR handler.
 * An SMMUv3 implementation extends it through `setImplOps` (Linux `arm_smmu_impl_ops`): its `getSecondaryCmdq`
 * may take any batch off the main CMDQ.
 */
export class Smmuv3GuestDriver implements GuestIommuDriver {
  readonly vendor = "smmuv3";
  private mmio: SmmuMmio | undefined;
  private cmdq: GuestCommandQueue | undefined;
  private evtq: GuestEventQueue | undefined;
  private priq: GuestPriQueue | undefined;
  /** IDR0.STALL_MODEL 0: the SMMU can both stall and terminate (Linux ARM_SMMU_FEAT_STALLS). */
  private stalls = false;
  private strtab: GuestStreamTable | undefined;
  private readonly domains = new Map<GuestDomainId, Domain>();
  private readonly streams = new Map<number, Stream>();
  private readonly globalEvents: GuestEvent[] = [];
  private nextAsid = 1;
  /** The OS's ASIDs for processes (arm64's per-mm context id). */
  private nextCpuAsid = 1;
  private readonly sva = new Map<GuestProcess, SvaDomain>();
  private cr0 = 0;
  private granuleShift: GranuleShift = 12;
  private oasCode = 5;
  private rangeInvalidation = false;
  /**
   * The one class of invalidation this driver deliberately omits (GuestInitOptions.skipInvalidation, for the
   * stale-translation audit): "iotlb" the TLBIs (and ATC invalidations) after an unmap, "context" CMD_CFGI_CD after
   * a CD is written. CMD_CFGI_STE is kept: under a nested VMM it is how the host learns the STE at all.
   */
  private skip: SkippedInvalidation | undefined;
  private ssidBits = 0;
  private twoLevelCd = false;
  private mapNotify = false;
  private evtqMaxLog2 = 0;
  private implOps: Smmuv3DriverImplOps | undefined;
  private probed: Smmuv3ProbeInfo | undefined;

  constructor(
    private readonly context: GuestContext,
    private readonly options: Smmuv3DriverOptions = {},
  ) {}

  /** Where the SMMU is: the IORT's SMMUv3 node when the firmware published one, else the VMM's address. */
  private findSmmu(): { base: number; iortIdentifier: number | undefined } {
    for (const table of this.context.acpi) {
      if (table.signature !== "IORT") continue;
      const iort = decodeIort(table.bytes);
      if (!iort.ok) continue;
      const node = iort.table.nodes.find((n) => n.type === "smmuv3");
      if (node !== undefined && node.type === "smmuv3") return { base: Number(node.baseAddress), iortIdentifier: node.identifier };
    }
    return { base: this.context.mmioBase, iortIdentifier: undefined };
  }

  private alloc(pages: number): Result<number> {
    const at = this.context.pages.allocate(pages, pages);
    return at === undefined ? err("ENOMEM", "guest driver memory exhausted") : ok(at);
  }

  init(init: GuestInitOptions): Result<void> {
    const chosen = { ...parseVariant(init.variant), ...this.options };
    this.skip = init.skipInvalidation;
    const found = this.findSmmu();
    const mmio = new SmmuMmio(this.context.vm, found.base);
    this.mmio = mmio;
    const idr0 = decodeLayout(idr0Layout, Uint32Array.of(mmio.read32("IDR0")));
    const idr1 = decodeLayout(idr1Layout, Uint32Array.of(mmio.read32("IDR1")));
    const idr3 = decodeLayout(idr3Layout, Uint32Array.of(mmio.read32("IDR3")));
    const idr5 = decodeLayout(idr5Layout, Uint32Array.of(mmio.read32("IDR5")));
    if (idr0.S1P !== 1 || (idr0.TTF & 2) === 0) return err("ENODEV", "no AArch64 stage-1 SMMU at the expected address");
    this.granuleShift = chosen.granule === 65536 ? 16 : chosen.granule === 16384 ? 14 : 12;
    const granuleOk = this.granuleShift === 12 ? idr5.GRAN4K : this.granuleShift === 14 ? idr5.GRAN16K : idr5.GRAN64K;
    if (granuleOk !== 1) return err("EINVAL", `the SMMU lacks the ${2 ** (this.granuleShift - 10)}K granule`);
    this.oasCode = idr5.OAS;
    this.rangeInvalidation = idr3.RIL === 1;
    this.ssidBits = idr1.SSIDSIZE;
    this.twoLevelCd = idr0.CD2L === 1;
    this.stalls = idr0.STALL_MODEL === IdrStallModel.StallAndTerminate;
    this.mapNotify = (mmio.read32("IDR4") & IDR4_MODEL_MAP_NOTIFY) !== 0;
    this.evtqMaxLog2 = idr1.EVENTQS;
    const msiPoll = idr0.MSI === 1 && idr0.COHACC === 1;
    this.probed = { ...found, cmdqs: idr1.CMDQS, msiPoll };

    // Reset: disable, then program tables and queues while disabled.
    if (mmio.read32("CR0") !== 0 && !mmio.writeAcked("CR0", "CR0ACK", 0)) return err("ETIMEDOUT", "CR0ACK did not clear");
    this.cr0 = 0;
    const cacheable = { QUEUE_IC: Cr1Cache.WB, QUEUE_OC: Cr1Cache.WB, QUEUE_SH: Shareability.ISH, TABLE_IC: Cr1Cache.WB, TABLE_OC: Cr1Cache.WB, TABLE_SH: Shareability.ISH };
    mmio.write32("CR1", encodeLayout(cr1Layout, cacheable)[0]!);
    mmio.write32("CR2", CR2_LINUX);
    const twoLevel = chosen.streamTable === "2level" && idr0.ST_LEVEL === 1;
    const strtab = GuestStreamTable.create(this.context.memory, this.context.pages, idr1.SIDSIZE, twoLevel);
    if (!strtab.ok) return fail(strtab);
    this.strtab = strtab.value;
    mmio.write64("STRTAB_BASE", BigInt(strtab.value.base) | (1n << 62n));
    mmio.write32("STRTAB_BASE_CFG", strtab.value.baseCfg);

    const cmdqLog2 = Math.min(CMDQ_LOG2, idr1.CMDQS);
    const cmdqMemory = this.alloc(Math.max(1, (2 ** cmdqLog2 * 16) / 4096));
    if (!cmdqMemory.ok) return fail(cmdqMemory);
    this.cmdq = new GuestCommandQueue(mmio, this.context.memory, cmdqMemory.value, cmdqLog2, msiPoll);
    this.cmdq.program();
    if (!this.setCr0(CR0.CMDQEN)) return err("ETIMEDOUT", "CMDQEN not acknowledged");
    const cfgiAll = this.issue(this.cmdq, [encodeCommand("CMD_CFGI_STE_RANGE", { SID: 0, Range: CFGI_ALL_RANGE })]);
    if (!cfgiAll.ok) return cfgiAll;
    const tlbiAll = this.issue(this.cmdq, [encodeCommand("CMD_TLBI_NSNH_ALL", {})]);
    if (!tlbiAll.ok) return tlbiAll;

    const evtq = this.programEventQueue(init.eventLogEntries ?? 64);
    if (!evtq.ok) return evtq;
    if (!this.setCr0(this.cr0 | CR0.EVTQEN)) return err("ETIMEDOUT", "EVTQEN not acknowledged");
    // With PRI, the PRI queue is programmed and enabled at reset as well (arm_smmu_device_reset).
    this.priq = undefined;
    if (idr0.PRI === 1) {
      const log2 = Math.min(PRIQ_LOG2, idr1.PRIQS);
      const memory = this.alloc(Math.max(1, (2 ** log2 * 16) / 4096));
      if (!memory.ok) return fail(memory);
      this.priq = new GuestPriQueue(mmio, this.context.memory, memory.value, log2);
      this.priq.program();
      if (!this.setCr0(this.cr0 | CR0.PRIQEN)) return err("ETIMEDOUT", "PRIQEN not acknowledged");
    }

    if (!mmio.writeAcked("IRQ_CTRL", "IRQ_CTRLACK", 0)) return err("ETIMEDOUT", "IRQ_CTRLACK did not clear");
    // Linux requests the event and GERROR interrupts always: as MSIs where the SMMU has them and the platform
    // gave a target, otherwise the wired interrupts the IORT names (CFGx left 0).
    if (init.eventVector !== undefined && idr0.MSI === 1) {
      const destination = init.eventDestination ?? 0;
      mmio.write64("EVTQ_IRQ_CFG0", gicrSetlpirAddress(destination));
      mmio.write32("EVTQ_IRQ_CFG1", init.eventVector);
      mmio.write32("EVTQ_IRQ_CFG2", SmmuMemAttr.DeviceNGnRE);
      mmio.write64("GERROR_IRQ_CFG0", gicrSetlpirAddress(destination));
      mmio.write32("GERROR_IRQ_CFG1", init.eventVector + 1);
      mmio.write32("GERROR_IRQ_CFG2", SmmuMemAttr.DeviceNGnRE);
      if (this.priq !== undefined) {
        mmio.write64("PRIQ_IRQ_CFG0", gicrSetlpirAddress(destination));
        mmio.write32("PRIQ_IRQ_CFG1", init.eventVector + 2);
        mmio.write32("PRIQ_IRQ_CFG2", SmmuMemAttr.DeviceNGnRE);
      }
    }
    const irqs = IRQ_CTRL.GERROR | IRQ_CTRL.EVTQ | (this.priq !== undefined ? IRQ_CTRL.PRIQ : 0);
    if (!mmio.writeAcked("IRQ_CTRL", "IRQ_CTRLACK", irqs)) return err("ETIMEDOUT", "IRQ_CTRLACK did not follow");
    if (init.translation && !this.setCr0(this.cr0 | CR0.SMMUEN)) return err("ETIMEDOUT", "SMMUEN not acknowledged");
    return ok();
  }

  /**
   * Sets (or, with undefined, clears) an implementation's ops (Linux `smmu->impl_ops`, set by the implementation's
   * probe). They take effect from the next batch; a plain SMMUv3 driver has none.
   */
  setImplOps(ops: Smmuv3DriverImplOps | undefined): void {
    this.implOps = ops;
  }

  /**
   * Issues a batch with its CMD_SYNC (Linux `arm_smmu_cmdq_issue_cmdlist` on the queue `arm_smmu_get_cmdq` picks):
   * on the secondary queue the implementation hands out for it, else on the main CMDQ.
   */
  private issue(cmdq: GuestCommandQueue, commands: readonly RawBits[]): Result<void> {
    const secondary = this.implOps?.getSecondaryCmdq?.(this, commands);
    return (secondary ?? cmdq).submit(commands);
  }

  private setCr0(value: number): boolean {
    if (!this.mmio!.writeAcked("CR0", "CR0ACK", value)) return false;
    this.cr0 = value;
    return true;
  }

  private programEventQueue(entries: number): Result<void> {
    const log2 = Math.max(1, Math.min(Math.ceil(Math.log2(Math.max(2, entries))), this.evtqMaxLog2));
    const memory = this.alloc(Math.max(1, (2 ** log2 * 32) / 4096));
    if (!memory.ok) return fail(memory);
    this.evtq = new GuestEventQueue(this.mmio!, this.context.memory, memory.value, log2);
    this.evtq.program();
    return ok();
  }

  private ready(): Result<{ cmdq: GuestCommandQueue; strtab: GuestStreamTable }> {
    if (this.cmdq === undefined || this.strtab === undefined) return err("ENODEV", "driver not initialised");
    return ok({ cmdq: this.cmdq, strtab: this.strtab });
  }

  // ---- domains ----

  createDomain(): Result<GuestDomainId> {
    if (this.nextAsid > 0xffff) return err("ENOSPC", "ASIDs exhausted");
    const table = GuestPageTable.create(this.context.memory, this.context.pages, this.granuleShift, addressSizeBits(this.oasCode) ?? 48);
    if (!table.ok) return fail(table);
    const asid = this.nextAsid++;
    this.domains.set(asid, { asid, table: table.value, msiPages: new Map() });
    return ok(asid);
  }

  private domain(id: GuestDomainId): Result<Domain> {
    const d = this.domains.get(id);
    return d === undefined ? err("ENOENT", `no domain ${id}`) : ok(d);
  }

  /** The CD Linux writes for a stage-1 domain (spec §1.7; the real 6.1 dw0 is 0x0001e204c0003510 for ASID 1, IPS 4). */
  private cdFor(domain: Domain, stall = false): RawBits {
    return encodeCd({
      S: stall ? 1 : 0,
      T0SZ: LINUX_S1_T0SZ,
      TG0: tg0Of(this.granuleShift),
      IR0: TCR_WBWA,
      OR0: TCR_WBWA,
      SH0: Shareability.ISH,
      EPD1: 1,
      V: 1,
      IPS: this.oasCode,
      AA64: 1,
      R: 1,
      A: 1,
      ASET: 1,
      ASID: domain.asid,
      TTB0: domain.table.root,
      MAIR0: LINUX_MAIR0,
      MAIR1: LINUX_MAIR1,
    });
  }

  /** Writes words [from, to) of a 64-byte structure (16 halves). */
  private writeWords(address: number, words: RawBits, from: number, to: number): void {
    for (let i = from; i < to; i += 2) this.context.memory.write64Halves(address + i * 4, words[i]!, words[i + 1]!);
  }

  private get tableStore(): GuestTableStore {
    return new GuestTableStore(this.context.memory, this.context.pages);
  }

  /** The stream's state, created with a one-CD table on first use. */
  private stream(rid: number): Result<Stream> {
    const existing = this.streams.get(rid);
    if (existing !== undefined) return ok(existing);
    const table = CdTable.create(this.tableStore, SINGLE_CD);
    if (table === undefined) return err("ENOMEM", "guest driver memory exhausted");
    const created: Stream = { table, domain: undefined, pasids: new Map(), valid: new Set(), ats: false, stall: false };
    this.streams.set(rid, created);
    return ok(created);
  }

  /**
   * Writes the CD of `ssid` as Linux's arm_smmu_write_cd_entry does: a valid CD is first made invalid (dw0 = 0,
   * CFGI_CD), dw1..dw7 are written and invalidated, then dw0 with V, and CFGI_CD again; `cd` undefined clears it
   * (dw0 = 0, CFGI_CD). CFGI_CD names the SubstreamID, Leaf 1.
   */
  private writeCd(rid: number, stream: Stream, ssid: number, cd: RawBits | undefined): Result<void> {
    const r = this.ready();
    if (!r.ok) return fail(r);
    const at = stream.table.cdAddress(ssid, true);
    if (at === undefined) return err("ENOMEM", "guest driver memory exhausted");
    const cfgiCd = this.skip === "context" ? [] : [encodeCommand("CMD_CFGI_CD", { SID: rid, SSID: ssid, Leaf: 1 })];
    if (stream.valid.has(ssid) || cd === undefined) {
      this.context.memory.write64Halves(at, 0, 0);
      stream.valid.delete(ssid);
      const off = this.issue(r.value.cmdq, cfgiCd);
      if (!off.ok || cd === undefined) return off;
    }
    this.writeWords(at, cd, 2, 16);
    const body = this.issue(r.value.cmdq, cfgiCd);
    if (!body.ok) return body;
    this.writeWords(at, cd, 0, 2);
    const live = this.issue(r.value.cmdq, cfgiCd);
    if (!live.ok) return live;
    stream.valid.add(ssid);
    return ok();
  }

  /**
   * Writes the stream's STE for its CD table (Linux arm_smmu_make_cdtable_ste): dw1..dw7, CFGI_STE, then dw0,
   * CFGI_STE and PREFETCH_CONFIG. S1DSS is SSID0 with a domain at the RID (CD 0), terminate with PASIDs alone.
   */
  private writeCdTableSte(rid: number, stream: Stream): Result<void> {
    const r = this.ready();
    if (!r.ok) return fail(r);
    const steAddress = r.value.strtab.steAddress(rid);
    if (!steAddress.ok) return fail(steAddress);
    const shape = stream.table.shape;
    const ste = encodeSte({
      V: 1,
      Config: SteConfig.S1Translate,
      S1Fmt: shape.s1fmt,
      S1ContextPtr: stream.table.base,
      S1CDMax: shape.s1cdmax,
      S1DSS: stream.domain !== undefined || shape.s1cdmax === 0 ? SteS1Dss.Ssid0 : SteS1Dss.Terminate,
      S1CIR: TCR_WBWA,
      S1COR: TCR_WBWA,
      S1CSH: Shareability.ISH,
      S1STALLD: this.stalls && !stream.stall ? 1 : 0,
      EATS: stream.ats ? SteEats.Translate : SteEats.Abort,
    });
    const cfgiSte = encodeCommand("CMD_CFGI_STE", { SID: rid, Leaf: 1 });
    this.writeWords(steAddress.value, ste, 2, 16);
    const staged = this.issue(r.value.cmdq, [cfgiSte]);
    if (!staged.ok) return staged;
    this.writeWords(steAddress.value, ste, 0, 2);
    return this.issue(r.value.cmdq, [cfgiSte, encodeCommand("CMD_PREFETCH_CONFIG", { SID: rid })]);
  }

  attach(rid: number, domainId: GuestDomainId): Result<void> {
    const r = this.ready();
    if (!r.ok) return fail(r);
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    const steAddress = r.value.strtab.steAddress(rid);
    if (!steAddress.ok) return fail(steAddress);
    const stream = this.stream(rid);
    if (!stream.ok) return fail(stream);
    const cd = this.writeCd(rid, stream.value, 0, this.cdFor(d.value, stream.value.stall));
    if (!cd.ok) return cd;
    stream.value.domain = domainId;
    return this.writeCdTableSte(rid, stream.value);
  }

  /**
   * Blocks the stream's traffic without a SubstreamID: the abort STE Linux writes for a blocked master, or, with
   * PASIDs attached, CD 0 cleared and the CD-table STE with S1DSS terminate (arm_smmu_attach_dev_blocked).
   */
  detach(rid: number): Result<void> {
    const r = this.ready();
    if (!r.ok) return fail(r);
    const steAddress = r.value.strtab.steAddress(rid);
    if (!steAddress.ok) return fail(steAddress);
    const stream = this.streams.get(rid);
    if (stream !== undefined && stream.pasids.size > 0) {
      stream.domain = undefined;
      const cleared = this.writeCd(rid, stream, 0, undefined);
      if (!cleared.ok) return cleared;
      return this.writeCdTableSte(rid, stream);
    }
    this.writeWords(steAddress.value, linuxAbortSte(), 0, 16);
    if (stream !== undefined) stream.domain = undefined;
    return this.issue(r.value.cmdq, [encodeCommand("CMD_CFGI_STE", { SID: rid, Leaf: 1 })]);
  }

  /**
   * Gives the stream a CD table for the SMMU's SubstreamIDs (arm_smmu_alloc_cd_tables with the master's SSID width:
   * linear up to 1024 CDs, else 2-level with 64 KiB leaves) and moves CD 0 into it. Linux sizes a PASID-capable
   * master's table at probe; this driver does it when the first PASID is attached (it learns the master's PASID use
   * then), so masters without PASIDs keep the one-CD table Linux gives them. EOPNOTSUPP without SubstreamIDs.
   */
  private withSubstreams(rid: number, stream: Stream): Result<void> {
    if (stream.table.shape.s1cdmax > 0) return ok();
    if (this.ssidBits === 0) return err("EOPNOTSUPP", "the SMMU has no SubstreamIDs (IDR1.SSIDSIZE 0)");
    const table = CdTable.create(this.tableStore, linuxCdTableShape(this.ssidBits, this.twoLevelCd));
    if (table === undefined) return err("ENOMEM", "guest driver memory exhausted");
    const old = stream.table;
    stream.table = table;
    stream.valid.clear();
    if (stream.domain !== undefined) {
      const d = this.domain(stream.domain);
      const at = table.cdAddress(0, true);
      if (!d.ok || at === undefined) return err("ENOMEM", "guest driver memory exhausted");
      this.writeWords(at, this.cdFor(d.value, stream.stall), 0, 16);
      stream.valid.add(0);
    }
    const ste = this.writeCdTableSte(rid, stream);
    old.destroy();
    return ste;
  }

  /**
   * Attaches a domain at a PASID (Linux arm_smmu_set_pasid for a stage-1 domain): the domain's CD at that SubstreamID
   * of the stream's CD table, then (when the STE did not point at the table yet) the CD-table STE. EINVAL for
   * PASID 0 (the RID's CD) or one beyond the table.
   */
  attachPasid(rid: number, pasid: number, domainId: GuestDomainId): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    const stream = this.streams.get(rid);
    return this.installCd(rid, pasid, this.cdFor(d.value, stream?.stall === true), domainId);
  }

  private installCd(rid: number, pasid: number, cd: RawBits, owner: GuestDomainId | GuestCpuProcess): Result<void> {
    const r = this.ready();
    if (!r.ok) return fail(r);
    const steAddress = r.value.strtab.steAddress(rid);
    if (!steAddress.ok) return fail(steAddress);
    const stream = this.stream(rid);
    if (!stream.ok) return fail(stream);
    const sized = this.withSubstreams(rid, stream.value);
    if (!sized.ok) return sized;
    if (!Number.isInteger(pasid) || pasid <= 0 || pasid >= stream.value.table.contexts) return err("EINVAL", `PASID ${pasid} outside the stream's ${stream.value.table.contexts} SubstreamIDs`);
    const firstUse = stream.value.domain === undefined && stream.value.pasids.size === 0;
    const written = this.writeCd(rid, stream.value, pasid, cd);
    if (!written.ok) return written;
    stream.value.pasids.set(pasid, owner);
    return firstUse ? this.writeCdTableSte(rid, stream.value) : ok();
  }

  /**
   * Detaches whatever is at a PASID (arm_smmu_remove_dev_pasid): its CD cleared with CFGI_CD; when that was the last
   * thing the CD table served (the RID blocked), the stream gets the abort STE. A PASID with nothing attached is
   * not an error.
   */
  detachPasid(rid: number, pasid: number): Result<void> {
    const stream = this.streams.get(rid);
    if (stream === undefined || !stream.pasids.has(pasid)) return ok();
    stream.pasids.delete(pasid);
    const cleared = this.writeCd(rid, stream, pasid, undefined);
    if (!cleared.ok) return cleared;
    return stream.domain === undefined && stream.pasids.size === 0 ? this.detach(rid) : ok();
  }

  // ---- shared virtual addressing ----

  /** A process: an arm64 4-level user page table in guest memory (TTBR0) and the CPU ASID the kernel gave it. */
  createProcess(): Result<GuestProcess> {
    if (this.nextCpuAsid > 0xffff) return err("ENOSPC", "CPU ASIDs exhausted");
    const process = GuestCpuProcess.create(this.context.memory, this.context.pages, this.nextCpuAsid);
    if (!process.ok) return fail(process);
    this.nextCpuAsid++;
    return ok(process.value);
  }

  /**
   * The CD Linux writes for an SVA domain (arm-smmu-v3-sva.c, arm_smmu_make_sva_cd): EPD1, V, IPS from the CPUs'
   * PARange, AA64, R, A, ASET, the SVA domain's ASID; T0SZ 64 − vabits_actual, TG0 of PAGE_SIZE, IRGN0/ORGN0 WBWA,
   * SH0 inner shareable; TTB0 the process's pgd; MAIR the CPUs' MAIR_EL1. No HA/HD (the CPU's own page table).
   */
  private svaCd(d: SvaDomain, stall: boolean): RawBits {
    return encodeCd({
      S: stall ? 1 : 0,
      T0SZ: PROCESS_T0SZ,
      TG0: Tg0.Granule4K,
      IR0: TCR_WBWA,
      OR0: TCR_WBWA,
      SH0: Shareability.ISH,
      EPD1: 1,
      V: 1,
      IPS: CPU_PARANGE,
      AA64: 1,
      R: 1,
      A: 1,
      ASET: 1,
      ASID: d.asid,
      TTB0: d.process.root,
      MAIR0: Number(LINUX_MAIR_EL1 & 0xffff_ffffn),
      MAIR1: Number(LINUX_MAIR_EL1 >> 32n),
    });
  }

  /**
   * Binds a process at a PASID (iommu_sva_bind_device): the process's SVA domain (one per process, its ASID from the
   * SMMU's ASID space as arm_smmu_sva_domain_alloc takes it) gets its CD at the SubstreamID, as any PASID attach.
   */
  bindProcess(rid: number, pasid: number, process: GuestProcess): Result<void> {
    if (!(process instanceof GuestCpuProcess)) return err("EINVAL", "not a process of this guest");
    let d = this.sva.get(process);
    if (d === undefined) {
      if (this.nextAsid > 0xffff) return err("ENOSPC", "ASIDs exhausted");
      d = { asid: this.nextAsid++, process, bindings: 0 };
      this.sva.set(process, d);
    }
    const installed = this.installCd(rid, pasid, this.svaCd(d, this.streams.get(rid)?.stall === true), process);
    if (!installed.ok) {
      if (d.bindings === 0) this.sva.delete(process);
      return installed;
    }
    d.bindings++;
    return ok();
  }

  /**
   * Unbinds whatever process is at the PASID (iommu_sva_unbind_device): its CD cleared; when the process's SVA domain
   * has no binding left it is freed, after a CMD_TLBI_NH_ASID of its ASID (arm_smmu_sva_domain_free).
   */
  unbindProcess(rid: number, pasid: number): Result<void> {
    const owner = this.streams.get(rid)?.pasids.get(pasid);
    if (!(owner instanceof GuestCpuProcess)) return ok();
    const detached = this.detachPasid(rid, pasid);
    if (!detached.ok) return detached;
    const d = this.sva.get(owner);
    if (d === undefined || --d.bindings > 0) return ok();
    this.sva.delete(owner);
    const r = this.ready();
    return r.ok ? this.issue(r.value.cmdq, [encodeCommand("CMD_TLBI_NH_ASID", { ASID: d.asid })]) : fail(r);
  }

  /**
   * The MMU notifier's invalidation for a process's SVA domain (arm_smmu_mm_arch_invalidate_secondary_tlbs): a
   * CMD_TLBI_NH_VA per page (Leaf 0, the granule only nominal) over [va, va + length), as range commands with
   * IDR3.RIL; by ASID (CMD_TLBI_NH_ASID) without RIL from CMDQ_MAX_TLBI_OPS pages on. Nothing for a process bound
   * nowhere (no notifier registered).
   */
  invalidateProcess(process: GuestProcess, va: number, length: number): Result<void> {
    const d = this.sva.get(process);
    if (d === undefined) return ok();
    const r = this.ready();
    if (!r.ok) return fail(r);
    const byAsid = length <= 0 || (!this.rangeInvalidation && length >= CMDQ_MAX_TLBI_OPS * 4096);
    // Linux issues every command of the range (fewer than CMDQ_MAX_TLBI_OPS per page without RIL), in batches.
    const commands = byAsid ? undefined : tlbiRangeCommands(d.asid, va, length, 12, undefined, this.rangeInvalidation, false, Number.POSITIVE_INFINITY);
    const tlbi = this.issue(r.value.cmdq, commands ?? [encodeCommand("CMD_TLBI_NH_ASID", { ASID: d.asid })]);
    if (!tlbi.ok) return tlbi;
    return this.invalidateAtcs(d.asid, va, byAsid ? 0 : length);
  }

  // ---- page requests ----

  /**
   * Lets a master issue page requests. With IDR0.PRI: PCIe PRI, which rides on ATS (IHI0070 §3.9.1): the stream's
   * STE gets EATS translate (Linux enables ATS for the master, arm_smmu_enable_ats), and ATC invalidations follow its
   * TLB invalidations; the requests arrive in the PRI queue, programmed at init. Otherwise, on an SMMU that can stall
   * (STALL_MODEL 0): the master is stall-enabled (Linux master->stall_enabled: S1STALLD clear, CD.S set, so its
   * faults stall and are reported as stall events). EOPNOTSUPP when the SMMU offers neither. The stream's STE and
   * valid CDs are rewritten when it has them already.
   */
  enablePageRequests(rid: number): Result<void> {
    const r = this.ready();
    if (!r.ok) return fail(r);
    if (this.priq === undefined && !this.stalls) return err("EOPNOTSUPP", "the SMMU offers neither PRI nor stalls");
    const stream = this.stream(rid);
    if (!stream.ok) return fail(stream);
    const st = stream.value;
    if (this.priq !== undefined) st.ats = true;
    else st.stall = true;
    if (this.priq === undefined) {
      for (const ssid of [...st.valid]) {
        const owner = ssid === 0 ? st.domain : st.pasids.get(ssid);
        if (owner === undefined) continue;
        const cd = owner instanceof GuestCpuProcess ? this.svaCd(this.sva.get(owner)!, true) : this.cdFor(this.domains.get(owner)!, true);
        const written = this.writeCd(rid, st, ssid, cd);
        if (!written.ok) return written;
      }
    }
    return st.domain !== undefined || st.pasids.size > 0 ? this.writeCdTableSte(rid, st) : ok();
  }

  /**
   * Answers a page request the driver read (Linux's IOPF response, arm_smmu_page_response): a PRI queue entry's group
   * with CMD_PRI_RESP for its StreamID, PRGIndex and (when it had one) SubstreamID — Success, or InvalidRequest for a
   * page that could not be paged in (iommu_page_response INVALID); a stall event with CMD_RESUME for its StreamID and
   * STAG — retry, or terminate with abort. EINVAL for an event that is no page request.
   */
  respondPageRequest(request: GuestEvent, success: boolean): Result<void> {
    const r = this.ready();
    if (!r.ok) return fail(r);
    if (request.kind !== "page-request" || request.rid === undefined || request.group === undefined) return err("EINVAL", "not a page request");
    if (request.name === PRIQ_ENTRY_NAME) {
      const pasid = request.pasid !== undefined ? { SSV: 1, SSID: request.pasid } : {};
      const resp = encodeCommand("CMD_PRI_RESP", { SID: request.rid, ...pasid, PRGIndex: request.group, Resp: success ? PriResp.Success : PriResp.InvalidRequest });
      return this.issue(r.value.cmdq, [resp]);
    }
    const resume = encodeCommand("CMD_RESUME", { SID: request.rid, STAG: request.group, Action: success ? ResumeAction.Retry : ResumeAction.Abort });
    return this.issue(r.value.cmdq, [resume]);
  }

  // ---- mappings ----

  map(domainId: GuestDomainId, iova: number, gpa: number, length: number, perms: PermBits): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    // Linux's DMA API maps unprivileged and executable (no IOMMU_PRIV, no IOMMU_NOEXEC).
    const mapped = d.value.table.builder.map(iova, gpa, length, perms | Perm.User | Perm.Exec);
    if (!mapped.ok) return mapped;
    return this.mapNotify ? this.invalidateRange(d.value, iova, length, undefined) : ok();
  }

  /**
   * Maps an MSI doorbell (a GIC frame's physical address) into a domain as Linux's iommu_dma_prepare_msi does for
   * a device's MSIs: the doorbell's page at an IOVA of the domain's MSI window (MSI_IOVA_BASE, the SW_MSI reserved
   * region arm-smmu-v3 declares), once per page, write-enabled (IOMMU_WRITE | IOMMU_MMIO; VMSA has no write-only
   * permission). Returns the IOVA the device must write; ENOSPC when the window is full.
   */
  mapMsiDoorbell(domainId: GuestDomainId, doorbell: number): Result<number> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    const granule = 2 ** this.granuleShift;
    const page = doorbell - (doorbell % granule);
    let iova = d.value.msiPages.get(page);
    if (iova === undefined) {
      iova = MSI_IOVA_BASE + d.value.msiPages.size * granule;
      if (iova + granule > MSI_IOVA_BASE + MSI_IOVA_LENGTH) return err("ENOSPC", "the domain's MSI window is full");
      const mapped = this.map(domainId, iova, page, granule, Perm.ReadWrite);
      if (!mapped.ok) return mapped;
      d.value.msiPages.set(page, iova);
    }
    return ok(iova + (doorbell % granule));
  }

  unmap(domainId: GuestDomainId, iova: number, length: number): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    const leafShift = this.uniformLeafShift(d.value, iova, length);
    d.value.table.builder.unmap(iova, length);
    if (this.skip === "iotlb") return ok();
    return this.invalidateRange(d.value, iova, length, leafShift);
  }

  /** The one leaf size mapped over the range (for the TTL hint), or undefined when sizes differ or it is too long to look. */
  private uniformLeafShift(domain: Domain, iova: number, length: number): number | undefined {
    let shift: number | undefined;
    const step = 2 ** this.granuleShift;
    let looked = 0;
    for (let at = iova; at < iova + length; looked++) {
      if (looked > 4096) return undefined;
      const leaf = domain.table.builder.lookupLeaf(at);
      if (leaf === undefined) {
        at += step;
        continue;
      }
      if (shift !== undefined && shift !== leaf.pageShift) return undefined;
      shift = leaf.pageShift;
      const size = 2 ** leaf.pageShift;
      at = at - (at % size) + size;
    }
    return shift;
  }

  private invalidateRange(domain: Domain, iova: number, length: number, leafShift: number | undefined): Result<void> {
    const r = this.ready();
    if (!r.ok) return fail(r);
    const commands = length > 0 ? tlbiRangeCommands(domain.asid, iova, length, this.granuleShift, leafShift, this.rangeInvalidation) : [];
    const tlbi = this.issue(r.value.cmdq, commands === undefined || commands.length > MAX_RANGE_COMMANDS ? [encodeCommand("CMD_TLBI_NH_ASID", { ASID: domain.asid })] : commands);
    if (!tlbi.ok) return tlbi;
    return this.invalidateAtcs(domain.asid, iova, length);
  }

  /**
   * The ATC invalidations after a TLB invalidation (Linux arm_smmu_atc_inv_domain): a CMD_ATC_INV for every stream
   * with ATS that uses the ASID's domain, at the RID (SSV 0) or at a PASID (SSV 1 with the SubstreamID), over the
   * naturally aligned power-of-two span covering the range (arm_smmu_atc_inv_to_cmd; Size 52 for everything).
   */
  private invalidateAtcs(asid: number, iova: number, length: number): Result<void> {
    const r = this.ready();
    if (!r.ok) return fail(r);
    const commands: RawBits[] = [];
    let span: ReturnType<typeof atcSpan> | undefined;
    for (const [rid, stream] of this.streams) {
      if (!stream.ats) continue;
      span ??= atcSpan(iova, length);
      if (stream.domain !== undefined && this.domains.get(stream.domain)?.asid === asid) commands.push(encodeCommand("CMD_ATC_INV", { SID: rid, ...span }));
      for (const [pasid, owner] of stream.pasids) {
        const ownerAsid = owner instanceof GuestCpuProcess ? this.sva.get(owner)?.asid : this.domains.get(owner)?.asid;
        if (ownerAsid === asid) commands.push(encodeCommand("CMD_ATC_INV", { SID: rid, SSV: 1, SSID: pasid, ...span }));
      }
    }
    return commands.length === 0 ? ok() : this.issue(r.value.cmdq, commands);
  }

  flush(domainId: GuestDomainId, iova?: number, length?: number): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    if (iova === undefined || length === undefined) {
      const r = this.ready();
      return r.ok ? this.issue(r.value.cmdq, [encodeCommand("CMD_TLBI_NH_ASID", { ASID: d.value.asid })]) : fail(r);
    }
    return this.invalidateRange(d.value, iova, length, undefined);
  }

  // ---- events and errors ----

  /** GERROR errors other than the command queue's: reported as global errors and acknowledged. */
  private handleGlobalErrors(): void {
    const mmio = this.mmio;
    if (mmio === undefined) return;
    this.cmdq?.handleErrors();
    const gerror = mmio.read32("GERROR");
    const gerrorn = mmio.read32("GERRORN");
    const active = (gerror ^ gerrorn) & GERROR_ERR_MASK & ~GerrorBit.CMDQ_ERR;
    if (active === 0) return;
    const bits = decodeLayout(gerrorLayout, Uint32Array.of(active)) as Readonly<Record<string, number>>;
    const names = Object.keys(bits).filter((k) => bits[k] === 1);
    this.globalEvents.push({ kind: "global-error", code: active, name: names.join("|") || "GERROR", raw: [`0x${gerror.toString(16).padStart(16, "0")}`, `0x${gerrorn.toString(16).padStart(16, "0")}`] });
    mmio.write32("GERRORN", (gerrorn ^ active) >>> 0);
  }

  readEvents(): GuestEvent[] {
    this.handleGlobalErrors();
    const out: GuestEvent[] = [...(this.cmdq?.errors.splice(0) ?? []), ...this.globalEvents.splice(0)];
    for (const record of this.evtq?.drain() ?? []) out.push(guestEventOf(record));
    for (const entry of this.priq?.drain() ?? []) out.push(guestPageRequestOf(entry));
    return out;
  }

  takeOverflow(): boolean {
    return this.evtq?.takeOverflow() ?? false;
  }

  resetEventLog(entries: number): Result<void> {
    if (this.mmio === undefined) return err("ENODEV", "driver not initialised");
    if (!this.setCr0(this.cr0 & ~CR0.EVTQEN)) return err("ETIMEDOUT", "EVTQEN not cleared");
    const programmed = this.programEventQueue(entries);
    if (!programmed.ok) return programmed;
    return this.setCr0(this.cr0 | CR0.EVTQEN) ? ok() : err("ETIMEDOUT", "EVTQEN not acknowledged");
  }

  /** Submits a command with an opcode the architecture does not define; ok once the SMMU reported it (CERROR_ILL) and recovered. */
  submitIllegalCommand(): Result<void> {
    const r = this.ready();
    if (!r.ok) return fail(r);
    const before = r.value.cmdq.errors.length;
    const submitted = this.issue(r.value.cmdq, [Uint32Array.of(UNDEFINED_OPCODE, 0, 0, 0)]);
    if (!submitted.ok) return submitted;
    return r.value.cmdq.errors.length > before ? ok() : err("EIO", "the illegal command was accepted");
  }

  /**
   * Issues raw commands followed by a CMD_SYNC and waits (Linux `arm_smmu_cmdq_issue_cmdlist` with sync), on a
   * secondary queue when the implementation's `getSecondaryCmdq` hands one out for them.
   */
  submitCommands(commands: readonly RawBits[]): Result<void> {
    const r = this.ready();
    return r.ok ? this.issue(r.value.cmdq, commands) : fail(r);
  }

  /**
   * Issues raw commands and a CMD_SYNC on the SMMU's own CMDQ, never a secondary queue: an implementation's
   * flush before it takes its own queue down (Linux issues those on `smmu->cmdq` directly).
   */
  submitOnMainCmdq(commands: readonly RawBits[]): Result<void> {
    const r = this.ready();
    return r.ok ? r.value.cmdq.submit(commands) : fail(r);
  }

  /** Per-stream CD table address, for tests that inspect what the driver wrote. */
  cdTableOf(rid: number): number | undefined {
    return this.streams.get(rid)?.table.base;
  }

  /** A domain's ASID and stage-1 root, for tests. */
  domainInfo(id: GuestDomainId): { asid: number; root: number } | undefined {
    const d = this.domains.get(id);
    return d === undefined ? undefined : { asid: d.asid, root: d.table.root };
  }

  /** What init's probe found (undefined before init), for an implementation that sizes its own queues by it. */
  get probeInfo(): Smmuv3ProbeInfo | undefined {
    return this.probed;
  }

  get streamTableBase(): number | undefined {
    return this.strtab?.base;
  }
}

/** CMD_ATC_INV's Addr and Size for [iova, iova + length) (Linux arm_smmu_atc_inv_to_cmd): everything for length 0. */
function atcSpan(iova: number, length: number): { Addr: bigint; Size: number } {
  if (length <= 0) return { Addr: 0n, Size: 52 };
  const first = BigInt(Math.floor(iova / 4096));
  const last = BigInt(Math.floor((iova + length - 1) / 4096));
  const log2Span = (first ^ last).toString(2).length - ((first ^ last) === 0n ? 1 : 0);
  const start = first & ~((1n << BigInt(log2Span)) - 1n);
  return { Addr: start << 12n, Size: log2Span };
}
