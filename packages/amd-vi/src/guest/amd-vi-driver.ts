import {
  err,
  fail,
  ok,
  PageTableBuilder,
  rawBits,
  toHex64,
  type GuestContext,
  type GuestDomainId,
  type GuestEvent,
  type GuestIommuDriver,
  type GuestInitOptions,
  type GuestProcess,
  type MsiMessage,
  type PageSource,
  type PermBits,
  type RawBits,
  type Result,
} from "@viommu/core";
import {
  buildCompletePprRequest,
  buildInvalidateDevtabEntry,
  buildInvalidateInterruptTable,
  buildInvalidateIommuAll,
  buildInvalidateIommuPages,
  COMMAND_BYTES,
  INVALIDATE_ALL_PAGES_ADDRESS,
} from "../format/command.js";
import { encodeCompletionWaitInto, encodeInvalidateIommuPagesInto } from "../format/command-encode.js";
import { controlLayout, InvTimeOut } from "../format/control-register.js";
import { setDteGcr3Root, DTE_BYTES } from "../format/device-table-entry.js";
import { decodeEvent, EVENT_BYTES, EventCode, eventCodeOf, eventFlags, EventFlag, eventName } from "../format/event-log-entry.js";
import { efrLayout } from "../format/extended-feature-register.js";
import { encodeGcr3Entry } from "../format/gcr3-table-entry.js";
import { IRTE128_BYTES, linuxIrte128 } from "../format/irte128.js";
import { IRTE32_BYTES, linuxIrte32 } from "../format/irte32.js";
import { MmioOffset } from "../format/mmio-register-map.js";
import { capabilityHeaderLayout } from "../format/pci-capability.js";
import { MSI_ENABLE, MsiCapabilityOffset, PCI_CAP_ID_MSI, PciConfigOffset, type PciConfigAccess } from "../format/pci-config-header.js";
import { linuxMsiMessage, LINUX_INT_TAB_LEN, LINUX_INT_TAB_LEN_2K } from "../format/msi-remap.js";
import { amdV2Geometry, amdV2PageTableEncoder, amdV2PageTableFormat } from "../format/page-table-v2.js";
import { decodePprLogEntry, PPR_ENTRY_BYTES, PPR_TAG_LAST, PprType } from "../format/ppr-log-entry.js";
import { isDeviceId, isPasid, isPprTag } from "../format/bus-values.js";
import { StatusBit } from "../format/status-register.js";
import { encodeXtInterruptControl } from "../format/xt-interrupt-control-register.js";
import { CpuProcess } from "./cpu-process.js";
import { Gcr3Tables, type Gcr3Table } from "./gcr3-tables.js";
import { GuardedTableStore } from "./guarded-table-store.js";
import { discoverIommu, type DiscoveredIommu } from "./ivrs-discovery.js";
import { V1PageTable } from "./v1-page-table.js";

/** How the driver translates DMA (Linux amd_iommu_pgtable, plus the identity default domain of an SEV guest). */
export type GuestPageTableMode = "v1" | "v2" | "identity" | "none";

const ctrl = (name: Parameters<typeof controlLayout.field>[0]): bigint => 1n << BigInt(controlLayout.field(name).bit);
const efrBit = (efr: bigint, name: Parameters<typeof efrLayout.field>[0]): number => {
  const f = efrLayout.field(name);
  return Number((efr >> BigInt(f.bit)) & ((1n << BigInt(f.width)) - 1n));
};

/** Linux sizes (amd_iommu_types.h): 512 commands, 512 events, 512 PPR entries; a 4 KiB semaphore page. */
const CMD_BUFFER_BYTES = 8192;
const CMD_LEN_CODE = 9;
const DEFAULT_EVENT_ENTRIES = 512;
const PPR_LOG_BYTES = 8192;
const PPR_LEN_CODE = 9;
/** Linux keeps at least this much of the command buffer free. */
const CMD_BUFFER_SLACK = 0x20;
/** Linux's DMA aperture for v2 tables without a PASID: 47 bits, not sign-extended. */
const V2_IOVA_LIMIT = 2 ** 47;

/** Linux enum iommu_page_response_code, which amd_iommu_complete_ppr writes as the completion status. */
const PPR_RESPONSE_INVALID = 1;
const PPR_RESPONSE_FAILURE = 2;

/** One PPR log entry as the driver read it. */
export interface PageRequestEntry {
  readonly type: number;
  readonly deviceId: number;
  readonly pasid: number;
  readonly gn: boolean;
  readonly reservedSet: boolean;
  /** The page request group index (tag bits 8:0) and whether this is the group's last request (tag bit 9). */
  readonly group: number;
  readonly last: boolean;
  readonly address: bigint;
  readonly read: boolean;
  readonly write: boolean;
  readonly exec: boolean;
  readonly user: boolean;
  readonly raw: RawBits;
}

/** DTE word bits (32-bit words, word k holds DTE bits 32k..32k+31). */
const W0_V = 1;
const W0_TV = 2;
const W1_PPR = 1 << 20;
const W1_GIOV = 1 << 22;
const W1_GV = 1 << 23;
const W1_IR = 1 << 29;
const W1_IW = 1 << 30;
const W4_IV = 1;

interface Domain {
  readonly id: number;
  readonly kind: "v1" | "v2";
  readonly v1: V1PageTable | undefined;
  readonly v2: PageTableBuilder | undefined;
  /** Requester ids it is attached to. */
  readonly rids: Set<number>;
  /** v2: where its root sits in GCR3 tables, requester id → PASIDs (PASID 0: the requester id's domain). */
  readonly pasids: Map<number, Set<number>>;
}

/** What a GCR3 entry of a device holds: a v2 domain's table, or a bound process's CPU page table. */
type PasidOwner = { readonly kind: "domain"; readonly domain: Domain } | { readonly kind: "process"; readonly process: CpuProcess };

function addUser(users: Map<number, Set<number>>, rid: number, pasid: number): void {
  let set = users.get(rid);
  if (set === undefined) {
    set = new Set();
    users.set(rid, set);
  }
  set.add(pasid);
}

function removeUser(users: Map<number, Set<number>>, rid: number, pasid: number): void {
  const set = users.get(rid);
  set?.delete(pasid);
  if (set?.size === 0) users.delete(rid);
}

interface IrqTable {
  readonly address: number;
  readonly used: boolean[];
}

/**
 * The reference AMD-Vi guest driver, programming the device the way Linux's amd_iommu does: it finds the
 * IOMMU through IVRS, builds the device table (every DeviceID V = TV = 1, IV = 1 with remapping on), command
 * buffer with a completion-wait semaphore, event log (and PPR log when supported), enables it in Linux's
 * order, one tail write per command, and after every change the invalidation Linux sends followed by
 * COMPLETION_WAIT. Page tables are v1 by default; v2 behind a per-device GCR3 table (GV, GIoV, PASID 0) with
 * `variant: "v2"`, or when the IVHD says host translation is disabled (HATDis, Linux's "use v2 if
 * available"; otherwise no DMA translation at all). The emulated IOMMU reports NpCache as QEMU's does, so
 * maps are flushed too, in naturally aligned pieces. Interrupt remapping uses 128-bit IRTEs when the EFR
 * reports GASup (x2APIC destinations with XTSup), else 32-bit ones (`variant: "irte32"` forces them).
 *
 * SEV-SNP (`variant: "snp"`, or a confidential VM): the device table, command buffer, completion-wait
 * semaphore, event log and interrupt tables are allocated in shared pages (the April 2024 series), DMA uses
 * the identity domain (no translation; DMA goes through SWIOTLB) and only interrupt remapping is used. With
 * `variant: "snp-dma"` the confidential guest keeps DMA translation in the same shared-structure mode: its page
 * tables are shared too (the IOMMU walks them), so a device can be confined to buffers the guest shares in place
 * instead of bouncing them (see guest/shared-dma-buffers.ts).
 */
export class AmdViGuestDriver implements GuestIommuDriver {
  readonly vendor = "amd-vi";
  private base = 0;
  private desc: DiscoveredIommu | undefined;
  mode: GuestPageTableMode = "none";
  private snp = false;
  private ir = false;
  private irte128 = false;
  private xtMode = false;
  private twoK = false;
  private efr = 0n;
  private devtab = 0;
  private lastBdf = 0xff;
  private cmdBuf = 0;
  private cmdTail = 0;
  private cmdHead = 0;
  private sem = 0;
  /** The completion semaphore's last value (a number: it would take 2^53 waits to leave the exact range). */
  private semValue = 0;
  /** The COMPLETION_WAIT buffer, rewritten for every wait. */
  private readonly waitCommand = new Uint32Array(4);
  /** Command buffers of the flush being built (see `nextCommand`). */
  private readonly commandPool: Uint32Array[] = [];
  private poolNext = 0;
  private evt = 0;
  private evtBytes = 0;
  private evtHead = 0;
  private ppr = 0;
  private pprHead = 0;
  private control = 0n;
  private nextDomainId = 1;
  /** The capability header's NpCache: the IOMMU may cache not-present entries, so maps are flushed too. */
  private npCache = true;
  /** The class of invalidation this driver leaves out (GuestInitOptions.skipInvalidation: audit tests only). */
  private skip: GuestInitOptions["skipInvalidation"];
  private readonly priorDte = new Uint32Array(8);
  /** What Linux would print with FW_WARN about the firmware's tables disagreeing with the hardware. */
  readonly firmwareWarnings: string[] = [];
  private readonly domains = new Map<GuestDomainId, Domain>();
  private readonly domainOfRid = new Map<number, number>();
  private readonly gcr3: Gcr3Tables;
  /** What each device's PASIDs hold, requester id → PASID → owner. */
  private readonly pasidOwners = new Map<number, Map<number, PasidOwner>>();
  /** Bound processes: where each is installed (the MMU notifier's list of device PASIDs). */
  private readonly processes = new Map<CpuProcess, Map<number, Set<number>>>();
  private nextAsid = 1;
  /** Devices whose page requests are enabled (Linux dev_data->ppr: DTE.PPR set). */
  private readonly pageRequesters = new Set<number>();
  private readonly irqTables = new Map<number, IrqTable>();
  private readonly store: GuardedTableStore;
  private readonly words = new Uint32Array(4);
  private readonly dte = new Uint32Array(8);

  constructor(
    private readonly context: GuestContext,
    /** The platform's PCI configuration space (the IOMMU is a PCI function); absent: no function answers. */
    private readonly pci?: PciConfigAccess,
  ) {
    this.store = new GuardedTableStore(context.memory, this.tablePages);
    this.gcr3 = new Gcr3Tables(context.memory, (pages) => this.alloc(pages));
  }

  private config32(bdf: number, offset: number): number {
    return this.pci === undefined ? 0xffff_ffff : this.pci.read32(bdf, offset) >>> 0;
  }

  /**
   * iommu_init_pci (drivers/iommu/amd/init.c): the IOMMU's PCI function at the IVHD's DeviceID must exist
   * (else ENODEV), and its IOMMU capability header, at the IVHD's capability offset, says whether the IOMMU
   * caches not-present entries (NpCache: Linux then flushes maps too) and whether the EFR may be read
   * (EFRSup). Returns the capability header.
   */
  private probePci(desc: DiscoveredIommu): Result<number> {
    const id = this.config32(desc.deviceId, PciConfigOffset.VendorID);
    if ((id & 0xffff) === 0xffff) return err("ENODEV", `no PCI function at the IOMMU's DeviceID 0x${desc.deviceId.toString(16)}`);
    const cap = this.config32(desc.deviceId, desc.capabilityOffset);
    this.npCache = ((cap >>> capabilityHeaderLayout.field("NpCache").bit) & 1) === 1;
    return ok(cap);
  }

  /**
   * pci_enable_msi for the IOMMU's event interrupt (iommu_setup_msi): the MSI capability found on the
   * capability list, its address and data programmed, MsiEn set, INTx disabled. ENODEV without one, as
   * iommu_init_msi fails.
   */
  private enableMsi(bdf: number, vector: number, destination: number): Result<void> {
    let at = this.config32(bdf, PciConfigOffset.CapabilitiesPointer) & 0xfc;
    // PCI_FIND_CAP_TTL: a looping list ends after 48 capabilities.
    for (let ttl = 48; at >= 0x40 && ttl > 0; ttl--) {
      const header = this.config32(bdf, at);
      if ((header & 0xff) === PCI_CAP_ID_MSI) {
        this.pci!.write32(bdf, at + MsiCapabilityOffset.AddressLow, (0xfee0_0000 | ((destination & 0xff) << 12)) >>> 0);
        this.pci!.write32(bdf, at + MsiCapabilityOffset.AddressHigh, 0);
        this.pci!.write32(bdf, at + MsiCapabilityOffset.Data, vector & 0xff);
        this.pci!.write32(bdf, at, (header | MSI_ENABLE) >>> 0);
        const command = this.config32(bdf, PciConfigOffset.Command);
        this.pci!.write32(bdf, PciConfigOffset.Command, (command & 0xffff) | (1 << 10));
        return ok();
      }
      at = (header >>> 8) & 0xfc;
    }
    return err("ENODEV", "the IOMMU function has no MSI capability");
  }

  // ---- MMIO ----

  private read64(offset: number): bigint {
    return this.context.vm.mmioRead(this.base + offset, 8);
  }

  private read32(offset: number): number {
    return Number(this.context.vm.mmioRead(this.base + offset, 4));
  }

  private write64(offset: number, value: bigint): void {
    this.context.vm.mmioWrite(this.base + offset, 8, value);
  }

  private write32(offset: number, value: number): void {
    this.context.vm.mmioWrite(this.base + offset, 4, value >>> 0);
  }

  private writeControl(): void {
    this.write64(MmioOffset.Control, this.control);
  }

  /**
   * Pages for the driver's page tables: shared with the host in a confidential guest that translates DMA (the
   * IOMMU walks them), like every other structure it reads.
   */
  private readonly tablePages: PageSource = {
    allocate: (pages: number, align?: number): number | undefined => {
      const at = this.context.pages.allocate(pages, align);
      if (at !== undefined && this.snp) this.context.memory.setShared(at, pages * 4096, true);
      return at;
    },
  };

  /** Guest memory for one structure (zeroed; shared with the host when the guest is confidential). */
  private alloc(pages: number, align = pages): Result<number> {
    const at = this.context.pages.allocate(pages, align);
    if (at === undefined) return err("ENOMEM", "guest driver memory exhausted");
    if (this.snp) this.context.memory.setShared(at, pages * 4096, true);
    return ok(at);
  }

  // ---- bring-up ----

  init(options: GuestInitOptions): Result<void> {
    if (this.desc !== undefined) return err("EBUSY", "already initialised");
    this.skip = options.skipInvalidation;
    const desc = discoverIommu(this.context.acpi, this.context.mmioBase);
    this.desc = desc;
    this.base = desc.base;
    const cap = this.probePci(desc);
    if (!cap.ok) return fail(cap);
    // late_iommu_features_init: the EFR is read only with EFRSup; where the IVHD carries an image, that one is
    // used and a different register is a firmware warning.
    const efrSup = ((cap.value >>> capabilityHeaderLayout.field("EFRSup").bit) & 1) === 1;
    const mmioEfr = efrSup ? this.read64(MmioOffset.ExtendedFeature) : undefined;
    const mmioEfr2 = efrSup ? this.read64(MmioOffset.ExtendedFeature2) : undefined;
    if (mmioEfr === 0xffff_ffff_ffff_ffffn) return err("ENODEV", "no AMD-Vi IOMMU at the IVRS base address");
    this.efr = desc.efr ?? mmioEfr ?? 0n;
    const efr2 = desc.efr2 ?? mmioEfr2 ?? 0n;
    if (desc.efr !== undefined && mmioEfr !== undefined && (mmioEfr !== desc.efr || mmioEfr2 !== desc.efr2)) {
      this.firmwareWarnings.push(`EFR mismatch. Use IVHD EFR (0x${mmioEfr.toString(16)} : 0x${desc.efr.toString(16)}), EFR2 (0x${(mmioEfr2 ?? 0n).toString(16)} : 0x${(desc.efr2 ?? 0n).toString(16)})`);
    }
    const variant = options.variant ?? "";
    this.snp = variant.includes("snp") || this.context.memory.confidential;
    const gtUsable = efrBit(this.efr, "GTSup") === 1 && efrBit(this.efr, "GIoSup") === 1;
    if (!options.translation) this.mode = "none";
    else if (this.snp && !variant.includes("snp-dma")) this.mode = "identity";
    else if (desc.hatDis) this.mode = gtUsable ? "v2" : "none";
    else this.mode = variant.includes("v2") && gtUsable ? "v2" : "v1";
    this.ir = options.interruptRemapping;
    this.irte128 = this.ir && efrBit(this.efr, "GASup") === 1 && !variant.includes("irte32");
    this.xtMode = this.irte128 && (options.x2apic ?? false) && efrBit(this.efr, "XTSup") === 1;
    this.twoK = this.ir && Number((efr2 >> 8n) & 3n) === 1;
    this.lastBdf = desc.lastBdf;

    const tablePages = 2 ** Math.ceil(Math.log2(Math.max(1, ((this.lastBdf + 1) * DTE_BYTES) / 4096)));
    const devtab = this.alloc(tablePages);
    const cmd = this.alloc(CMD_BUFFER_BYTES / 4096);
    const sem = this.alloc(1);
    if (!devtab.ok || !cmd.ok || !sem.ok) return err("ENOMEM", "guest driver memory exhausted");
    this.devtab = devtab.value;
    this.cmdBuf = cmd.value;
    this.sem = sem.value;
    this.initDeviceTable();

    // early_enable_iommu: disable, flags, tables, command buffer, event log, GT/GA/XT, enable, flush.
    this.control = 0n;
    this.writeControl();
    const f = desc.flags;
    this.control =
      (f & 1 ? ctrl("HtTunEn") : 0n) |
      (f & 2 ? ctrl("PassPW") : 0n) |
      (f & 4 ? ctrl("ResPassPW") : 0n) |
      (f & 8 ? ctrl("Isoc") : 0n) |
      ctrl("Coherent") |
      (BigInt(InvTimeOut.S1) << BigInt(controlLayout.field("InvTimeOut").bit));
    this.writeControl();
    this.write64(MmioOffset.DeviceTableBase, BigInt(this.devtab) | BigInt(tablePages - 1));
    this.write64(MmioOffset.CommandBufferBase, BigInt(this.cmdBuf) | (BigInt(CMD_LEN_CODE) << 56n));
    this.write32(MmioOffset.CommandBufferHead, 0);
    this.write32(MmioOffset.CommandBufferTail, 0);
    this.control |= ctrl("CmdBufEn");
    this.writeControl();
    const events = this.programEventLog(options.eventLogEntries ?? DEFAULT_EVENT_ENTRIES);
    if (!events.ok) return events;
    if (efrBit(this.efr, "PPRSup") === 1 && !this.snp) {
      // The series gives the PPR log no shared mode, so an SNP guest leaves it off.
      const ppr = this.alloc(PPR_LOG_BYTES / 4096);
      if (!ppr.ok) return fail(ppr);
      this.ppr = ppr.value;
      this.write64(MmioOffset.PprLogBase, BigInt(this.ppr) | (BigInt(PPR_LEN_CODE) << 56n));
      this.write32(MmioOffset.PprLogHead, 0);
      this.write32(MmioOffset.PprLogTail, 0);
      this.control |= ctrl("PPRLogEn") | ctrl("PPREn");
    }
    if (this.mode === "v2") this.control |= ctrl("GTEn");
    if (this.irte128) this.control |= ctrl("GAEn");
    if (this.xtMode) this.control |= ctrl("XTEn");
    if (this.twoK) this.control |= 1n << BigInt(controlLayout.field("NumIntRemapMode").bit);
    this.control |= ctrl("IommuEn");
    this.writeControl();
    const flushed = this.flushAll();
    if (!flushed.ok) return flushed;
    if (options.eventVector !== undefined) {
      const destination = options.eventDestination ?? 0;
      if (this.xtMode) {
        const xt = encodeXtInterruptControl({ destination, vector: options.eventVector, logical: false });
        this.write64(MmioOffset.XtGeneralInterruptControl, (BigInt(xt[1]!) << 32n) | BigInt(xt[0]!));
        // The PPR log's interrupt has its own XT register (Linux programs one per interrupt source).
        if (this.ppr !== 0) this.write64(MmioOffset.XtPprInterruptControl, (BigInt(xt[1]!) << 32n) | BigInt(xt[0]!));
        this.control |= ctrl("IntCapXTEn");
      } else {
        const msi = this.enableMsi(desc.deviceId, options.eventVector, destination);
        if (!msi.ok) return msi;
      }
      this.control |= ctrl("EventIntEn") | (this.ppr !== 0 ? ctrl("PPRIntEn") : 0n);
      this.writeControl();
    }
    return ok();
  }

  /**
   * Every DeviceID starts blocked, V = TV = 1 with no translation and no permission (init_device_table_dma),
   * with IV = 1 when remapping is on; without DMA translation Linux leaves V clear (DMA passes untranslated);
   * an SNP guest's identity default domain gives every device pass-through (V, TV, IR, IW, Mode 0).
   */
  private initDeviceTable(): void {
    const w = this.dte;
    for (let devid = 0; devid <= this.lastBdf; devid++) {
      w.fill(0);
      if (this.mode === "identity") {
        w[0] = W0_V | W0_TV;
        w[1] = W1_IR | W1_IW;
      } else if (this.mode !== "none") w[0] = W0_V | W0_TV;
      if (this.ir) w[4] = W4_IV;
      this.context.memory.writeWords(this.devtab + devid * DTE_BYTES, w);
    }
  }

  private programEventLog(entries: number): Result<void> {
    const code = Math.max(1, Math.ceil(Math.log2(Math.max(2, entries))));
    const bytes = 2 ** code * EVENT_BYTES;
    const log = this.alloc(Math.max(1, bytes / 4096));
    if (!log.ok) return fail(log);
    this.evt = log.value;
    this.evtBytes = bytes;
    this.evtHead = 0;
    this.write64(MmioOffset.EventLogBase, BigInt(this.evt) | (BigInt(code) << 56n));
    this.write32(MmioOffset.EventLogHead, 0);
    this.write32(MmioOffset.EventLogTail, 0);
    this.control |= ctrl("EventLogEn");
    this.writeControl();
    return ok();
  }

  // ---- commands ----

  /** One command: copied at the tail, then the tail register written (Linux __iommu_queue_command_sync). */
  private queue(command: RawBits): Result<void> {
    let next = (this.cmdTail + COMMAND_BYTES) % CMD_BUFFER_BYTES;
    let left = (this.cmdHead - next + CMD_BUFFER_BYTES) % CMD_BUFFER_BYTES;
    if (left <= CMD_BUFFER_SLACK) {
      this.cmdHead = this.read32(MmioOffset.CommandBufferHead) % CMD_BUFFER_BYTES;
      next = (this.cmdTail + COMMAND_BYTES) % CMD_BUFFER_BYTES;
      left = (this.cmdHead - next + CMD_BUFFER_BYTES) % CMD_BUFFER_BYTES;
      if (left <= CMD_BUFFER_SLACK) return err("ETIMEDOUT", "command buffer timeout: the IOMMU stopped consuming");
    }
    this.context.memory.writeWords(this.cmdBuf + this.cmdTail, command);
    this.cmdTail = next;
    this.write32(MmioOffset.CommandBufferTail, this.cmdTail);
    return ok();
  }

  /** COMPLETION_WAIT on the semaphore with the next value, then the wait (iommu_completion_wait). */
  private completionWait(): Result<void> {
    this.semValue++;
    const queued = this.queue(encodeCompletionWaitInto(this.waitCommand, this.sem, this.semValue));
    if (!queued.ok) return queued;
    if (!this.semaphoreReached()) return err("ETIMEDOUT", "Completion-Wait loop timed out");
    return ok();
  }

  /** The IOMMU stored the last wait's value into the semaphore (its two 32-bit halves). */
  private semaphoreReached(): boolean {
    const memory = this.context.memory;
    return memory.read32(this.sem) === this.semValue >>> 0 && memory.read32(this.sem + 4) === Math.floor(this.semValue / 2 ** 32);
  }

  /** A command buffer for one flush's commands, reused flush after flush (queued before the flush returns; `flush` rewinds the pool). */
  private nextCommand(): Uint32Array {
    let c = this.commandPool[this.poolNext];
    if (c === undefined) {
      c = new Uint32Array(4);
      this.commandPool.push(c);
    }
    this.poolNext++;
    return c;
  }

  private submit(commands: RawBits[]): Result<void> {
    for (const c of commands) {
      const r = this.queue(c);
      if (!r.ok) return r;
    }
    return this.completionWait();
  }

  private flushAll(): Result<void> {
    if (efrBit(this.efr, "IASup") === 1) return this.submit([buildInvalidateIommuAll()]);
    const commands: RawBits[] = [];
    for (let devid = 0; devid <= this.lastBdf; devid++) commands.push(buildInvalidateDevtabEntry(devid));
    return this.submit(commands);
  }

  // ---- device table ----

  private readDte(rid: number): Uint32Array {
    return this.context.memory.readWords(this.devtab + rid * DTE_BYTES, this.dte);
  }

  private writeDte(rid: number, words: Uint32Array): Result<void> {
    const cached = this.translatingDte(rid);
    this.context.memory.writeWords(this.devtab + rid * DTE_BYTES, words);
    if (this.skip === "context" && cached) return ok();
    return this.submit([buildInvalidateDevtabEntry(rid)]);
  }

  /**
   * Whether the device's DTE translates now (V, TV and a host table or GV): what the IOMMU may hold cached for it,
   * which skipInvalidation "context" leaves stale. Other entries' changes are still announced (the VMM builds the
   * host side from them).
   */
  private translatingDte(rid: number): boolean {
    // Its own buffer: the DTE being written may be `this.dte` (clearedDte builds it there).
    const w = this.context.memory.readWords(this.devtab + rid * DTE_BYTES, this.priorDte);
    return (w[0]! & 3) === 3 && (((w[0]! >>> 9) & 7) !== 0 || ((w[1]! >>> 23) & 1) === 1);
  }

  private checkRid(rid: number): Result<void> {
    return Number.isInteger(rid) && rid >= 0 && rid <= this.lastBdf ? ok() : err("EINVAL", `DeviceID 0x${rid.toString(16)} beyond the device table`);
  }

  private translating(): Result<void> {
    if (this.mode === "v1" || this.mode === "v2") return ok();
    return err("EOPNOTSUPP", this.mode === "identity" ? "DMA translation is off in an SEV-SNP guest (identity domain; DMA bounces through SWIOTLB)" : "the IOMMU offers no DMA translation");
  }

  // ---- domains ----

  createDomain(): Result<GuestDomainId> {
    const t = this.translating();
    if (!t.ok) return fail(t);
    const id = this.nextDomainId++;
    if (id > 0xffff) return err("ENOSPC", "domain ids exhausted");
    let domain: Domain;
    if (this.mode === "v1") {
      const table = V1PageTable.create(this.context.memory, this.tablePages);
      if (table === undefined) return err("ENOMEM", "no memory for a page table");
      domain = { id, kind: "v1", v1: table, v2: undefined, rids: new Set(), pasids: new Map() };
    } else {
      const table = PageTableBuilder.create({ ...amdV2PageTableFormat, ...amdV2PageTableEncoder }, amdV2Geometry(4), this.store);
      if (table === undefined) return err("ENOMEM", "no memory for a page table");
      domain = { id, kind: "v2", v1: undefined, v2: table, rids: new Set(), pasids: new Map() };
    }
    this.domains.set(id, domain);
    return ok(id);
  }

  private domain(id: GuestDomainId): Result<Domain> {
    const d = this.domains.get(id);
    return d === undefined ? err("ENOENT", `no domain ${id}`) : ok(d);
  }

  /** The device's GCR3 table, created on first use with a DomainID of its own (setup_gcr3_table). */
  private gcr3Table(rid: number): Result<Gcr3Table> {
    const existing = this.gcr3.of(rid);
    if (existing !== undefined) return ok(existing);
    const id = this.nextDomainId++;
    if (id > 0xffff) return err("ENOSPC", "domain ids exhausted");
    return this.gcr3.create(rid, id);
  }

  /** The translation half of the DTE cleared (qwords 0–1 and GuestPagingMode); the interrupt half kept. */
  private clearedDte(rid: number): Uint32Array {
    const w = this.readDte(rid);
    w[0] = 0;
    w[1] = 0;
    w[2] = 0;
    w[3] = 0;
    w[5] = (w[5]! & ~(3 << 22)) >>> 0;
    return w;
  }

  /**
   * set_dte_gcr3_table: V, TV, GV, GIoV (every requester-id domain of this driver is v2), GLX, the split GCR3
   * root, IR, IW, PPR when the device's page requests are on, and the table's own DomainID.
   */
  private gcr3Dte(rid: number, t: Gcr3Table): Uint32Array {
    const w = this.clearedDte(rid);
    w[0] = W0_V | W0_TV;
    w[1] = (W1_IR | W1_IW | W1_GV | W1_GIOV | (t.glx << 24) | (this.pageRequesters.has(rid) ? W1_PPR : 0)) >>> 0;
    setDteGcr3Root(w, t.root);
    w[2] = (w[2]! | t.domainId) >>> 0;
    return w;
  }

  /** set_dte_entry for a v1 domain: V, TV, Mode, root, IR, IW, the domain's DomainID. */
  private v1Dte(rid: number, d: Domain): Uint32Array {
    const w = this.clearedDte(rid);
    const root = d.v1!.root;
    w[0] = (W0_V | W0_TV | (d.v1!.mode << 9) | (root % 0x1_0000_0000)) >>> 0;
    w[1] = (Math.floor(root / 0x1_0000_0000) | W1_IR | W1_IW) >>> 0;
    w[2] = (w[2]! | d.id) >>> 0;
    return w;
  }

  private ownerAt(rid: number, pasid: number): PasidOwner | undefined {
    return this.pasidOwners.get(rid)?.get(pasid);
  }

  /** Records what PASID `pasid` of `rid` now holds (undefined: nothing), updating the previous owner's lists. */
  private setOwner(rid: number, pasid: number, owner: PasidOwner | undefined): void {
    const previous = this.ownerAt(rid, pasid);
    if (previous?.kind === "domain") removeUser(previous.domain.pasids, rid, pasid);
    if (previous?.kind === "process") {
      const users = this.processes.get(previous.process);
      if (users !== undefined) removeUser(users, rid, pasid);
    }
    let byPasid = this.pasidOwners.get(rid);
    if (owner === undefined) {
      byPasid?.delete(pasid);
      if (byPasid?.size === 0) this.pasidOwners.delete(rid);
      return;
    }
    if (byPasid === undefined) {
      byPasid = new Map();
      this.pasidOwners.set(rid, byPasid);
    }
    byPasid.set(pasid, owner);
    if (owner.kind === "domain") addUser(owner.domain.pasids, rid, pasid);
    else {
      let users = this.processes.get(owner.process);
      if (users === undefined) {
        users = new Map();
        this.processes.set(owner.process, users);
      }
      addUser(users, rid, pasid);
    }
  }

  /**
   * Points a PASID of the device at `root` (update_gcr3 via amd_iommu_set_gcr3), or clears it: the device's GCR3
   * table is created or grown as needed (then the DTE is rewritten and invalidated), and the PASID is flushed as
   * dev_flush_pasid_all does (INVALIDATE_IOMMU_PAGES with GN, the table's DomainID, every address), then
   * COMPLETION_WAIT.
   */
  private installPasid(rid: number, pasid: number, root: number | undefined, owner: PasidOwner | undefined): Result<void> {
    const created = this.gcr3.of(rid) === undefined;
    if (created && root === undefined) return ok();
    const t = this.gcr3Table(rid);
    if (!t.ok) return fail(t);
    const r = this.gcr3.set(t.value, pasid, root, efrBit(this.efr, "GLXSup"));
    if (!r.ok) {
      if (created) this.gcr3.drop(rid);
      return fail(r);
    }
    const replaced = this.ownerAt(rid, pasid) !== undefined;
    this.setOwner(rid, pasid, owner);
    const commands: RawBits[] = [];
    if (created || r.value.grew) {
      const cached = this.translatingDte(rid);
      this.context.memory.writeWords(this.devtab + rid * DTE_BYTES, this.gcr3Dte(rid, t.value));
      if (!(this.skip === "context" && cached)) commands.push(buildInvalidateDevtabEntry(rid));
    }
    // skipInvalidation "context": a GCR3 entry that held a table changes without the flush of what was cached
    // through it (the PASID's translation context).
    if (!(this.skip === "context" && replaced)) commands.push(buildInvalidateIommuPages({ domainId: t.value.domainId, address: 0n, size: INVALIDATE_ALL_PAGES_ADDRESS, pasid }));
    return commands.length === 0 ? ok() : this.submit(commands);
  }

  /** The device's DTE when its GCR3 table is gone (no PASID left): the blocked entry, interrupt half kept. */
  private dropGcr3(rid: number): Result<void> {
    this.gcr3.drop(rid);
    const w = this.clearedDte(rid);
    w[0] = this.mode === "none" ? 0 : W0_V | W0_TV;
    return this.writeDte(rid, w);
  }

  attach(rid: number, domainId: GuestDomainId): Result<void> {
    const t = this.translating();
    if (!t.ok) return t;
    const r = this.checkRid(rid);
    if (!r.ok) return r;
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    const previous = this.domainOfRid.get(rid);
    if (d.value.kind === "v2") {
      const installed = this.installPasid(rid, 0, d.value.v2!.root, { kind: "domain", domain: d.value });
      if (!installed.ok) return installed;
    } else if (this.gcr3.of(rid) !== undefined) return err("EBUSY", "the device has PASIDs attached: a v1 domain cannot keep its GCR3 table");
    if (previous !== undefined) this.domains.get(previous)?.rids.delete(rid);
    d.value.rids.add(rid);
    this.domainOfRid.set(rid, domainId);
    if (d.value.kind === "v2") return ok();
    return this.writeDte(rid, this.v1Dte(rid, d.value));
  }

  /**
   * The blocked domain: V = TV = 1, no translation, no permission; the interrupt half kept. A device that still
   * has PASIDs attached keeps its GCR3 table and only loses PASID 0 (GIoV then finds no entry: DMA without a
   * PASID faults, DMA with one goes on).
   */
  detach(rid: number): Result<void> {
    const r = this.checkRid(rid);
    if (!r.ok) return r;
    const previous = this.domainOfRid.get(rid);
    if (previous !== undefined) this.domains.get(previous)?.rids.delete(rid);
    this.domainOfRid.delete(rid);
    const t = this.gcr3.of(rid);
    if (t !== undefined) {
      const cleared = this.installPasid(rid, 0, undefined, undefined);
      if (!cleared.ok || t.pasids.size > 0) return cleared;
      return this.dropGcr3(rid);
    }
    const w = this.clearedDte(rid);
    w[0] = this.mode === "none" ? 0 : W0_V | W0_TV;
    return this.writeDte(rid, w);
  }

  /** A v1 table grew a level: every device on it gets the new root and Mode (amd_iommu_domain_update). */
  private updateDomainDtes(d: Domain): void {
    for (const rid of d.rids) this.writeDte(rid, this.v1Dte(rid, d));
  }

  map(domainId: GuestDomainId, iova: number, gpa: number, length: number, perms: PermBits): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    let r: Result<void>;
    if (d.value.kind === "v1") r = d.value.v1!.map(iova, gpa, length, perms, () => this.updateDomainDtes(d.value));
    else if (iova + length > V2_IOVA_LIMIT) r = err("EINVAL", "IOVA beyond the 47-bit v2 aperture");
    else r = d.value.v2!.map(iova, gpa, length, perms);
    if (!r.ok) return r;
    // NpCache: the IOMMU may cache not-present entries, so maps are flushed too (amd_iommu_iotlb_sync_map).
    return this.npCache ? this.flush(domainId, iova, length) : ok();
  }

  unmap(domainId: GuestDomainId, iova: number, length: number): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    if (d.value.kind === "v1") d.value.v1!.unmap(iova, length);
    else d.value.v2!.unmap(iova, length);
    if (this.skip === "iotlb") return ok();
    return this.flush(domainId, iova, length);
  }

  /**
   * INVALIDATE_IOMMU_PAGES for the domain in naturally aligned pieces as Linux does under NpCache, then
   * COMPLETION_WAIT; without a range, everything (Linux's all-pages address). A v1 domain is flushed by its own
   * DomainID; a v2 domain wherever it is installed, by each device's GCR3 DomainID with GN and the PASID
   * (domain_flush_pages_v2 for PASID 0, and the same for the PASIDs it is attached at).
   */
  flush(domainId: GuestDomainId, iova?: number, length?: number): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    const commands: RawBits[] = [];
    this.poolNext = 0;
    const pieces = (tag: number, pasid: number | undefined): void => {
      if (iova === undefined || length === undefined) {
        commands.push(buildInvalidateIommuPages({ domainId: tag, address: 0n, size: INVALIDATE_ALL_PAGES_ADDRESS, pasid }));
        return;
      }
      let address = iova;
      let size = length;
      for (let guard = 0; size > 0 && guard < 64; guard++) {
        const sizeAlign = Math.floor(Math.log2(size));
        const addrAlign = address === 0 ? 64 : Math.log2(lowestSetBit(address));
        const piece = 2 ** Math.min(sizeAlign, addrAlign);
        commands.push(encodeInvalidateIommuPagesInto(this.nextCommand(), tag, address, piece, pasid));
        address += piece;
        size -= piece;
      }
    };
    if (d.value.kind === "v1") pieces(d.value.id, undefined);
    else {
      for (const [rid, pasids] of d.value.pasids) {
        const t = this.gcr3.of(rid);
        if (t !== undefined) for (const pasid of pasids) pieces(t.domainId, pasid);
      }
    }
    return this.submit(commands);
  }

  // ---- PASIDs and shared virtual addressing ----

  /** Linux is_pasid_valid: 0 < PASID < max_pasids, with max_pasids = 2^(PASmax + 1) − 1 when GTSup. */
  private checkPasid(pasid: number): Result<void> {
    const max = efrBit(this.efr, "GTSup") === 1 ? 2 ** (efrBit(this.efr, "PASmax") + 1) - 1 : 0;
    return Number.isInteger(pasid) && pasid > 0 && pasid < max ? ok() : err("EINVAL", `PASID ${pasid} outside 1..${max - 1}`);
  }

  /** PASIDs need GCR3 tables, which only v2 (guest) translation has; a v1 driver has no PASID support. */
  private pasidCapable(rid: number, pasid: number): Result<void> {
    const t = this.translating();
    if (!t.ok) return t;
    const r = this.checkRid(rid);
    if (!r.ok) return r;
    if (this.mode !== "v2") return err("EINVAL", "PASIDs need guest (v2) translation and a GCR3 table");
    return this.checkPasid(pasid);
  }

  /** A v2 domain at PASID `pasid` of the device: its root in the device's GCR3 table. */
  attachPasid(rid: number, pasid: number, domainId: GuestDomainId): Result<void> {
    const c = this.pasidCapable(rid, pasid);
    if (!c.ok) return c;
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    if (d.value.kind !== "v2") return err("EINVAL", "only a v2 domain can sit in a GCR3 table");
    return this.installPasid(rid, pasid, d.value.v2!.root, { kind: "domain", domain: d.value });
  }

  /** Clears the PASID's GCR3 entry and flushes it (amd_iommu_clear_gcr3); the table goes with its last PASID. */
  detachPasid(rid: number, pasid: number): Result<void> {
    const c = this.pasidCapable(rid, pasid);
    if (!c.ok) return c;
    const t = this.gcr3.of(rid);
    if (t === undefined || !t.pasids.has(pasid)) return err("ENOENT", `nothing attached at PASID ${pasid} of 0x${rid.toString(16)}`);
    const r = this.installPasid(rid, pasid, undefined, undefined);
    if (!r.ok || t.pasids.size > 0) return r;
    return this.dropGcr3(rid);
  }

  /** A user process: its CPU page table (x86-64 4-level, the v2 format) in guest memory, with its own PCID. */
  createProcess(): Result<GuestProcess> {
    const t = this.translating();
    if (!t.ok) return fail(t);
    if (this.mode !== "v2") return err("EOPNOTSUPP", "shared virtual addressing needs guest (v2) translation");
    const process = CpuProcess.create(this.store, this.nextAsid);
    if (process === undefined) return err("ENOMEM", "no memory for the process's page table");
    this.nextAsid = (this.nextAsid % 4095) + 1;
    return ok(process);
  }

  private ownProcess(process: GuestProcess): Result<CpuProcess> {
    return process instanceof CpuProcess ? ok(process) : err("EINVAL", "not a process of this guest");
  }

  /** iommu_sva_bind_device → iommu_sva_set_dev_pasid: the process's page table root in the GCR3 entry. */
  bindProcess(rid: number, pasid: number, process: GuestProcess): Result<void> {
    const c = this.pasidCapable(rid, pasid);
    if (!c.ok) return c;
    const p = this.ownProcess(process);
    if (!p.ok) return fail(p);
    return this.installPasid(rid, pasid, p.value.root, { kind: "process", process: p.value });
  }

  unbindProcess(rid: number, pasid: number): Result<void> {
    if (this.ownerAt(rid, pasid)?.kind !== "process") return err("ENOENT", `no process bound at PASID ${pasid} of 0x${rid.toString(16)}`);
    return this.detachPasid(rid, pasid);
  }

  /**
   * The MMU notifier's secondary-TLB invalidation (pasid.c sva_arch_invalidate_secondary_tlbs): for every device
   * PASID the process is bound to, one INVALIDATE_IOMMU_PAGES over [va, va + length) with GN, the PASID and the
   * device's GCR3 DomainID, then COMPLETION_WAIT (amd_iommu_dev_flush_pasid_pages).
   */
  invalidateProcess(process: GuestProcess, va: number, length: number): Result<void> {
    const p = this.ownProcess(process);
    if (!p.ok) return fail(p);
    if (!Number.isSafeInteger(va) || !Number.isSafeInteger(length) || va < 0 || length <= 0) return err("EINVAL", "not an address range");
    for (const [rid, pasids] of this.processes.get(p.value) ?? []) {
      const t = this.gcr3.of(rid);
      if (t === undefined) continue;
      for (const pasid of pasids) {
        const r = this.submit([buildInvalidateIommuPages({ domainId: t.domainId, address: BigInt(va), size: BigInt(length), pasid })]);
        if (!r.ok) return r;
      }
    }
    return ok();
  }

  // ---- interrupts ----

  /** alloc_irq_table: the device's IRT (512 entries, or 2048 in 2K mode) and its DTE interrupt fields. */
  private irqTable(rid: number): Result<IrqTable> {
    const existing = this.irqTables.get(rid);
    if (existing !== undefined) return ok(existing);
    const len = this.twoK ? LINUX_INT_TAB_LEN_2K : LINUX_INT_TAB_LEN;
    const entries = 2 ** len;
    const bytes = entries * (this.irte128 ? IRTE128_BYTES : IRTE32_BYTES);
    const table = this.alloc(Math.max(1, bytes / 4096));
    if (!table.ok) return fail(table);
    const w = this.readDte(rid);
    // set_dte_irq_entry: IV, IntTabLen, the table's address, IntCtl = 2 (remap).
    w[4] = ((table.value % 0x1_0000_0000) | (len << 1) | W4_IV) >>> 0;
    w[5] = ((w[5]! & 0xcff00000) | Math.floor(table.value / 0x1_0000_0000) | (2 << 28)) >>> 0;
    const written = this.writeDte(rid, w);
    if (!written.ok) return fail(written);
    const irq: IrqTable = { address: table.value, used: new Array<boolean>(entries).fill(false) };
    this.irqTables.set(rid, irq);
    return ok(irq);
  }

  mapInterrupt(rid: number, vector: number, destination: number): Result<MsiMessage> {
    if (!this.ir) return err("EOPNOTSUPP", "interrupt remapping is off");
    const r = this.checkRid(rid);
    if (!r.ok) return fail(r);
    if (destination > 0xff && !this.xtMode) return err("EINVAL", `APIC id ${destination} needs x2APIC mode (XTEn)`);
    const irq = this.irqTable(rid);
    if (!irq.ok) return fail(irq);
    const index = irq.value.used.indexOf(false);
    if (index < 0) return err("ENOSPC", "interrupt table full");
    irq.value.used[index] = true;
    if (this.irte128) {
      this.context.memory.writeWords(irq.value.address + index * IRTE128_BYTES, linuxIrte128({ vector, destination }));
    } else {
      this.context.memory.write32(irq.value.address + index * IRTE32_BYTES, linuxIrte32({ vector, destination }));
    }
    const flushed = this.skip === "interrupt" ? ok() : this.submit([buildInvalidateInterruptTable(rid)]);
    if (!flushed.ok) return fail(flushed);
    const msi = linuxMsiMessage(index, this.twoK);
    return ok({ address: msi.addressLo, data: msi.data });
  }

  unmapInterrupt(rid: number, msi: MsiMessage): Result<void> {
    const irq = this.irqTables.get(rid);
    const index = msi.data & 0x7ff;
    if (irq === undefined || index >= irq.used.length || !irq.used[index]) return err("ENOENT", "no such remapped interrupt");
    irq.used[index] = false;
    // irte_clear_allocated: the entry reads as zero again.
    if (this.irte128) this.context.memory.writeWords(irq.address + index * IRTE128_BYTES, rawBits(128));
    else this.context.memory.write32(irq.address + index * IRTE32_BYTES, 0);
    if (this.skip === "interrupt") return ok();
    return this.submit([buildInvalidateInterruptTable(rid)]);
  }

  // ---- events ----

  /** iommu_poll_events: head to tail, each entry decoded then cleared, the head written back; EventLogInt acknowledged. */
  readEvents(): GuestEvent[] {
    const requests = this.pageRequestEvents();
    return [...this.readEventLog(), ...requests];
  }

  private readEventLog(): GuestEvent[] {
    if (this.evt === 0) return [];
    this.write32(MmioOffset.Status, StatusBit.EventLogInt);
    const tail = this.read32(MmioOffset.EventLogTail) % this.evtBytes;
    const out: GuestEvent[] = [];
    const w = this.words;
    for (let budget = this.evtBytes / EVENT_BYTES; this.evtHead !== tail && budget > 0; budget--) {
      const at = this.evt + this.evtHead;
      this.context.memory.readWords(at, w);
      if (eventCodeOf(w) !== 0) out.push(guestEvent(w));
      this.context.memory.writeWords(at, new Uint32Array(4));
      this.evtHead = (this.evtHead + EVENT_BYTES) % this.evtBytes;
    }
    this.write32(MmioOffset.EventLogHead, this.evtHead);
    return out;
  }

  /** amd_iommu_restart_event_logging: on EventOverflow, EventLogEn off, the bit cleared, EventLogEn on. */
  takeOverflow(): boolean {
    const status = this.read32(MmioOffset.Status);
    if ((status & StatusBit.EventOverflow) === 0) return false;
    this.control &= ~ctrl("EventLogEn");
    this.writeControl();
    this.write32(MmioOffset.Status, StatusBit.EventOverflow);
    this.control |= ctrl("EventLogEn");
    this.writeControl();
    return true;
  }

  resetEventLog(entries: number): Result<void> {
    this.control &= ~ctrl("EventLogEn");
    this.writeControl();
    return this.programEventLog(entries);
  }

  /**
   * An unknown opcode (0xF), then COMPLETION_WAIT. The IOMMU logs ILLEGAL_COMMAND_ERROR and halts
   * (CmdBufRun clear) at the bad command; the driver restarts it as the AMD procedure says: CmdBufEn off,
   * the head moved past the bad command, CmdBufEn on, and the COMPLETION_WAIT behind it then completes.
   */
  submitIllegalCommand(): Result<void> {
    const bad = rawBits(128);
    bad[1] = 0xf000_0000;
    const queued = this.queue(bad);
    if (!queued.ok) return queued;
    this.semValue++;
    const wait = this.queue(encodeCompletionWaitInto(this.waitCommand, this.sem, this.semValue));
    if (!wait.ok) return wait;
    if (this.read32(MmioOffset.Status) & StatusBit.CmdBufRun) return err("EIO", "the illegal command did not stop the command buffer");
    const head = this.read32(MmioOffset.CommandBufferHead) % CMD_BUFFER_BYTES;
    this.control &= ~ctrl("CmdBufEn");
    this.writeControl();
    this.write32(MmioOffset.CommandBufferHead, (head + COMMAND_BYTES) % CMD_BUFFER_BYTES);
    this.control |= ctrl("CmdBufEn");
    this.writeControl();
    this.cmdHead = this.read32(MmioOffset.CommandBufferHead) % CMD_BUFFER_BYTES;
    if (!this.semaphoreReached()) return err("ETIMEDOUT", "the command buffer did not recover");
    return ok();
  }

  // ---- peripheral page requests ----

  /**
   * amd_iommu_poll_ppr_log: the PPR log from head to tail, each entry copied, cleared (errata 733) and the head
   * written back; PPRInt acknowledged. Entries of type 0 (not written yet) are skipped.
   */
  readPageRequests(): PageRequestEntry[] {
    if (this.ppr === 0) return [];
    this.write32(MmioOffset.Status, StatusBit.PPRInt);
    const tail = this.read32(MmioOffset.PprLogTail) % PPR_LOG_BYTES;
    const out: PageRequestEntry[] = [];
    for (let budget = PPR_LOG_BYTES / PPR_ENTRY_BYTES; this.pprHead !== tail && budget > 0; budget--) {
      const at = this.ppr + this.pprHead;
      const raw = this.context.memory.readWords(at, new Uint32Array(4));
      const f = decodePprLogEntry(raw).fields;
      const tag = Number(f["Tag"]);
      if (f["Type"] !== 0) {
        out.push({
          type: Number(f["Type"]),
          deviceId: Number(f["DeviceID"]),
          pasid: Number(f["PASID"]),
          gn: f["GN"] === 1,
          reservedSet: f["RVSD"] === 1,
          group: tag & 0x1ff,
          last: (tag & PPR_TAG_LAST) !== 0,
          address: BigInt(f["Address"]!),
          read: f["READ"] === 1,
          write: f["WRITE"] === 1,
          exec: f["EXEC"] === 1,
          user: f["US"] === 1,
          raw,
        });
      }
      this.context.memory.writeWords(at, new Uint32Array(4));
      this.pprHead = (this.pprHead + PPR_ENTRY_BYTES) % PPR_LOG_BYTES;
    }
    this.write32(MmioOffset.PprLogHead, this.pprHead);
    // amd_iommu_restart_ppr_log: after an overflow, PPRLogEn off, the bit cleared, PPRLogEn on.
    if (this.read32(MmioOffset.Status) & StatusBit.PPROverflow) {
      this.control &= ~ctrl("PPRLogEn");
      this.writeControl();
      this.write32(MmioOffset.Status, StatusBit.PPROverflow);
      this.control |= ctrl("PPRLogEn");
      this.writeControl();
    }
    return out;
  }

  /** COMPLETE_PPR_REQUEST for a group: `status` is Linux's response code (0 success, 1 invalid, 2 failure). */
  completePageRequest(deviceId: number, tag: number, status: number, pasid?: number): Result<void> {
    return this.submit([buildCompletePprRequest({ deviceId, tag, status, pasid })]);
  }

  /**
   * The page requests as Linux's iommu_call_iopf_notifier passes them on: PAGE_SERVICE_REQUEST entries with GN,
   * RVSD clear and a PASID in 1..max_pasids−1. Anything else is answered at once with IOMMU_PAGE_RESP_FAILURE
   * ("Nobody cared, abort"); an unknown type is dropped.
   */
  private pageRequestEvents(): GuestEvent[] {
    const out: GuestEvent[] = [];
    const max = efrBit(this.efr, "GTSup") === 1 ? 2 ** (efrBit(this.efr, "PASmax") + 1) - 1 : 0;
    for (const r of this.readPageRequests()) {
      if (r.type !== PprType.PAGE_SERVICE_REQUEST) continue;
      if (!r.gn || r.reservedSet || r.pasid === 0 || r.pasid >= max) {
        this.completePageRequest(r.deviceId, r.group, PPR_RESPONSE_FAILURE, r.pasid);
        continue;
      }
      const address = r.address < 2n ** 53n ? Number(r.address) : undefined;
      out.push({ kind: "page-request", code: r.type, name: "PAGE_SERVICE_REQUEST", rid: r.deviceId, pasid: r.pasid, address, write: r.write, group: r.group, last: r.last, raw: toHex64(r.raw) });
    }
    return out;
  }

  /**
   * iopf enable for the device (amd_iommu_iopf_add_device: dev_data->ppr): its DTE gets PPR, so the IOMMU logs its
   * page requests. Needs the PPR log (EFR.PPRSup) and guest (v2) translation, which PASIDs need.
   */
  enablePageRequests(rid: number): Result<void> {
    const t = this.translating();
    if (!t.ok) return t;
    const r = this.checkRid(rid);
    if (!r.ok) return r;
    if (this.ppr === 0) return err("EOPNOTSUPP", "the IOMMU has no PPR log");
    if (this.mode !== "v2") return err("EOPNOTSUPP", "page requests need PASIDs, which need guest (v2) translation");
    this.pageRequesters.add(rid);
    const table = this.gcr3.of(rid);
    return table === undefined ? ok() : this.writeDte(rid, this.gcr3Dte(rid, table));
  }

  /**
   * amd_iommu_page_response: COMPLETE_PPR_REQUEST with the group's tag, its PASID with GN (a PASID-capable device
   * wants the PASID in its response), status 0 (IOMMU_PAGE_RESP_SUCCESS) or 1 (IOMMU_PAGE_RESP_INVALID, what the
   * SVA fault handler answers when it cannot resolve the fault).
   */
  respondPageRequest(request: GuestEvent, success: boolean): Result<void> {
    if (request.kind !== "page-request" || request.rid === undefined || request.group === undefined) return err("EINVAL", "not a page request");
    if (!isDeviceId(request.rid) || !isPprTag(request.group) || (request.pasid !== undefined && !isPasid(request.pasid))) return err("EINVAL", "not a page request the IOMMU logged");
    const cmd = buildCompletePprRequest({ deviceId: request.rid, tag: request.group, status: success ? 0 : PPR_RESPONSE_INVALID, pasid: request.pasid });
    return this.queue(cmd);
  }

  /** The driver's structures, for tests and the SEV-SNP checks. */
  get structures(): { deviceTable: number; commandBuffer: number; semaphore: number; eventLog: number; pprLog: number; interruptTables: number[] } {
    return { deviceTable: this.devtab, commandBuffer: this.cmdBuf, semaphore: this.sem, eventLog: this.evt, pprLog: this.ppr, interruptTables: [...this.irqTables.values()].map((t) => t.address) };
  }

  /** The MMIO base the driver found through IVRS. */
  get mmioBase(): number {
    return this.base;
  }
}

/** The lowest set bit of a positive integer below 2^53, as a power of two (__ffs). */
function lowestSetBit(x: number): number {
  let bit = 1;
  while (x % (bit * 2) === 0 && bit < 2 ** 53) bit *= 2;
  return bit;
}

/** An event log entry as the neutral face shows it. */
function guestEvent(w: Uint32Array): GuestEvent {
  const code = eventCodeOf(w);
  const flags = eventFlags(w);
  const interrupt = (flags & EventFlag.I) !== 0;
  const raw = toHex64(w);
  const name = eventName(code);
  const decoded = decodeEvent(w);
  const address = decoded.fields["Address"];
  const addr = typeof address === "bigint" ? (address < 2n ** 53n ? Number(address) : undefined) : undefined;
  const deviceId = w[0]! & 0xffff;
  const write = (flags & EventFlag.RW) !== 0;
  switch (code) {
    case EventCode.IO_PAGE_FAULT:
    case EventCode.ILLEGAL_DEV_TABLE_ENTRY:
    case EventCode.DEV_TAB_HARDWARE_ERROR:
    case EventCode.PAGE_TAB_HARDWARE_ERROR:
      return { kind: interrupt ? "interrupt-fault" : "dma-fault", code, name, rid: deviceId, address: addr, write, raw };
    case EventCode.INVALID_DEVICE_REQUEST:
      return { kind: "dma-fault", code, name, rid: deviceId, address: addr, write, raw };
    case EventCode.ILLEGAL_COMMAND_ERROR:
    case EventCode.COMMAND_HARDWARE_ERROR:
      return { kind: "command-error", code, name, address: addr, raw };
    case EventCode.IOTLB_INV_TIMEOUT:
      return { kind: "command-error", code, name, rid: deviceId, address: addr, raw };
    case EventCode.INVALID_PPR_REQUEST:
      return { kind: "page-request", code, name, rid: deviceId, address: addr, raw };
    default:
      return { kind: "other", code, name, raw };
  }
}
