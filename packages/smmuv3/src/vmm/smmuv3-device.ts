import {
  encodeState,
  err,
  fail,
  newWalkResult,
  NO_PASID,
  ok,
  Perm,
  WalkFault,
  type DmaDevice,
  type EmulatedIommu,
  type InterruptResult,
  type MmioHandler,
  type MsiMessage,
  type RawBits,
  type Result,
  type StateValue,
  type TranslationMode,
  type VmmDeviceOptions,
  type VmmStats,
  type WalkResult,
  type AcpiTableBlob,
  type UserData,
  HostServices,
  resolveToken,
  type HostLogKind,
  type GuestQueueView,
  type IommuError,
} from "@viommu/core";
import { cfgiSteRangeStreams, CFGI_ALL_RANGE, commandName, commandSetsUndefinedBits, type CommandName } from "../format/command.js";
import {
  cmdAsid,
  cmdOpcode,
  cmdPrgIndex,
  cmdPriResp,
  cmdRange,
  cmdResumeAction,
  cmdSid,
  cmdSsec,
  cmdSsid,
  cmdSsv,
  cmdStag,
  cmdSyncCs,
  cmdSyncMsiAddress,
  cmdSyncMsiData,
  tlbiRange,
  type NumberRange,
} from "../format/command-fields.js";
import { GerrorBit, gerrorActive, gerrorRaise } from "../format/control-registers.js";
import { eventName, EventType } from "../format/event-record.js";
import { gicrSetlpirCpu } from "../format/gic-doorbell.js";
import { CMDQ_CONS_ERR_MASK, CmdqError, QUEUE_OVERFLOW_FLAG } from "../format/queue-registers.js";
import { tlbiRangeReserved } from "../format/tlbi-range.js";
import { SteConfig, SteEats, STE_NESTING_ALLOWED_MASK } from "../format/stream-table-entry.js";
import { CD_BYPASS, decodeCdSettings, readCd } from "../translate/cd-config.js";
import { faultRecord } from "../translate/fault-record.js";
import { GuestMemoryReader } from "../translate/guest-memory-reader.js";
import { GuestStage1Translator } from "../translate/guest-translator.js";
import { smmuFeatures, type SmmuFeatures } from "../translate/smmu-features.js";
import { decodeSteSettings } from "../translate/ste-config.js";
import { readSte, streamTableConfig, type StreamTableConfig } from "../translate/stream-table-lookup.js";
import { isInputAddress, newSmmuWalkInfo, resetSmmuWalkInfo } from "../translate/walk-info.js";
import { EmulatedCommandQueue, type CommandExecutor } from "./emulated-command-queue.js";
import { EmulatedEventQueue, type EventWrite } from "./emulated-event-queue.js";
import { EmulatedPriQueue, type PriWrite } from "./emulated-pri-queue.js";
import { PageRequestRelay, type PageRequestPorts } from "./page-request-relay.js";
import { emulatedIds, type EmulatedIds } from "./emulated-idr.js";
import { propertyHostProblem, withProperties } from "./device-properties.js";
import { buildIort, DEFAULT_SMMU_BASE, SMMU_MMIO_BYTES, smmuGsivs, type SmmuGsivs } from "./iort-builder.js";
import { writeSmmuMsi } from "./msi-writer.js";
import { configVste, INVALID_VSTE, MAX_FORWARD_BATCH, NestedHost } from "./nested-host.js";
import { smmuGuestQueues } from "./guest-queue-views.js";
import { SmmuRegisterFile } from "./register-file.js";
import { parseSmmuv3State, SMMUV3_STATE_KIND, SMMUV3_STATE_VERSION, type Smmuv3SavedState } from "./smmuv3-state.js";
import { ShadowHost, type ShadowStream } from "./shadow-host.js";
import { Smmuv3Unit } from "../hw/smmuv3-unit.js";


const IDR0_S1P = 1 << 1;
const CR0_SMMUEN = 1 << 0;
const CR0_CMDQEN = 1 << 3;
const CR0_PRIQEN = 1 << 1;
const IRQ_PRIQ = 1 << 1;
/** PRIQ_IRQ_CFG2.LO: the PRI queue interrupt only for requests with Last set. */
const PRIQ_IRQ_LAST_ONLY = 0x8000_0000;
const IRQ_GERROR = 1 << 0;
const IRQ_EVTQ = 1 << 2;
const CR2_RECINVSID = 1 << 1;
const GBPA_ABORT = 1 << 20;
/** STE.EATS, dw1[29:28] (the vSTE's third half). */
const VSTE2_EATS = 0b11 << 28;
/** Forwarded commands go to the host in batches of at most this many. */
const FORWARD_BATCH = MAX_FORWARD_BATCH;

/** Commands that carry SSec (bit 10): a Non-secure queue must not set it. */
const SSEC_COMMANDS: ReadonlySet<CommandName> = new Set<CommandName>([
  "CMD_PREFETCH_CONFIG",
  "CMD_PREFETCH_ADDR",
  "CMD_CFGI_STE",
  "CMD_CFGI_STE_RANGE",
  "CMD_CFGI_CD",
  "CMD_CFGI_CD_ALL",
  "CMD_RESUME",
  "CMD_STALL_TERM",
]);

interface Assigned {
  readonly device: DmaDevice;
  readonly devId: number;
}

/** Options the plugin contract does not carry, for tests and embedders. */
export interface Smmuv3DeviceExtras {
  /** Offer IDR0.MSI (default true): without it the guest uses SEV syncs and wired interrupts. */
  readonly msi?: boolean;
  /** Nested mode: the vIOMMU type to allocate (an extension's, e.g. Tegra241 CMDQV's) and its data. Default ARM_SMMUV3. */
  readonly viommuType?: number;
  readonly viommuData?: UserData;
}

/**
 * The SMMUv3 a VMM emulates for one VM (QEMU's smmuv3, with its iommufd-accelerated variant): the two register
 * pages with the CR0/CR0ACK and IRQ_CTRL/IRQ_CTRLACK handshakes, GERROR/GERRORN toggles and GBPA's UPDATE
 * protocol; the trapped command queue (CONS advancing, CERROR_ILL/ABT/ATC_INV_SYNC in CMDQ_CONS.ERR with
 * GERROR.CMDQ_ERR, the queue stopped until GERRORN acknowledges); the event queue with its overflow flag; the
 * event, GERROR and CMD_SYNC interrupts (MSI or wired) and SEV; and the host side in the chosen mode:
 * - nested: a vSMMU on the VM's stage-2 parent; CFGI_STE re-reads the guest STE and installs it as a nested
 *   HWPT (abort and bypass vSTEs too, and GBPA's while the SMMU is off); TLBIs, CFGI_CD and ATC_INV go to the
 *   host as raw commands (a refused entry becomes CERROR_ILL at that command); CMD_SYNC and PREFETCH are the
 *   VMM's; vEVENTQ records go into the guest's event queue;
 * - shadow: guest stage-1 tables mirrored into host IOASes on every invalidation.
 * The VMM's own emulated devices are translated by walking the guest's tables (faults become event records).
 */
export class Smmuv3Device implements EmulatedIommu {
  readonly vendor = "smmuv3";
  readonly mode: TranslationMode;
  readonly mmioBase: number;
  readonly stats: VmmStats = { trapped: 0, forwarded: 0, eventsInjected: 0, shadowMappings: 0 };
  readonly ids: EmulatedIds;
  readonly features: SmmuFeatures;
  readonly gsivs: SmmuGsivs;
  readonly regs: SmmuRegisterFile;
  readonly evtq: EmulatedEventQueue;
  readonly priq: EmulatedPriQueue;
  frozen = false;
  /** CMD_SYNCs that signalled by SEV (a WFE wakeup: nothing else to deliver). */
  sevEvents = 0;

  private readonly reader: GuestMemoryReader;
  private readonly translator: GuestStage1Translator;
  private readonly info = newSmmuWalkInfo();
  /** Scratch for recording the host's shadow faults through the guest's tables. */
  private readonly hostFaultWalk = newWalkResult();
  private readonly msiWalk = newWalkResult();
  private readonly steWords = new Uint32Array(16);
  private readonly cdWords = new Uint32Array(16);
  private readonly assigned = new Map<number, Assigned>();
  private nested: NestedHost | undefined;
  /** Page requests and stalls of passthrough devices (nested mode, with PRI or stalls offered). */
  private relay: PageRequestRelay | undefined;
  private shadow: ShadowHost | undefined;
  /** Commands queued for the host (FORWARD_BATCH × 4 halves) and the queue positions they came from. */
  private readonly forwardWords = new Uint32Array(FORWARD_BATCH * 4);
  private readonly forwardPositions = new Float64Array(FORWARD_BATCH);
  private forwardCount = 0;
  private readonly range: NumberRange = { first: 0, length: 0 };
  /** An ATC_INV could not complete (no ATS at that stream): the next CMD_SYNC fails with CERROR_ATC_INV_SYNC. */
  private atcFailure = false;
  private failurePosition = -1;
  private readonly cmdq: EmulatedCommandQueue;
  private unmapRegisters: (() => void) | undefined;
  private readonly queueViews: GuestQueueView[];

  private constructor(
    readonly options: VmmDeviceOptions,
    nested: NestedHost | undefined,
    extras: Smmuv3DeviceExtras,
  ) {
    this.mode = options.mode;
    const instance = options.instance ?? 0;
    this.mmioBase = options.mmioBase ?? DEFAULT_SMMU_BASE + instance * SMMU_MMIO_BYTES;
    this.gsivs = smmuGsivs(instance);
    this.nested = nested;
    const ids = withProperties(emulatedIds(nested?.hostInfo, options.mode), options.properties);
    this.ids = extras.msi === false ? { ...ids, IDR0: ids.IDR0! & ~(1 << 13) } : ids;
    this.features = smmuFeatures([this.ids.IDR0!, this.ids.IDR1!, this.ids.IDR2!, this.ids.IDR3!, this.ids.IDR4!, this.ids.IDR5!]);
    this.regs = new SmmuRegisterFile(this.ids, (name, previous) => this.registerWritten(name, previous));
    this.evtq = new EmulatedEventQueue(this.regs, options.vm.memory, this.features.evtqLog2);
    this.priq = new EmulatedPriQueue(this.regs, options.vm.memory, this.features.priqLog2);
    this.cmdq = new EmulatedCommandQueue(this.regs, options.vm.memory, this.features.cmdqLog2, this.executor, (bits) => this.raiseGerror(bits));
    this.reader = new GuestMemoryReader(options.vm.memory);
    this.translator = new GuestStage1Translator(this.reader, this.features, false);
    this.queueViews = smmuGuestQueues(this.mmioBase, this.regs, { cmdq: this.features.cmdqLog2, evtq: this.features.evtqLog2, priq: this.features.pri ? this.features.priqLog2 : undefined });
  }

  /** Builds the device: its register pages in the VM, and the host side of its mode. */
  static create(options: VmmDeviceOptions, extras: Smmuv3DeviceExtras = {}): Result<Smmuv3Device> {
    if (options.mode === "ir-only") return err("EOPNOTSUPP", "SMMUv3 has no interrupt remapping, so no IR-only mode");
    let nested: NestedHost | undefined;
    if (options.mode === "nested") {
      const host = NestedHost.create(options.iommufd, options.anchorDevId, options.parentHwptId, extras.viommuType, extras.viommuData);
      if (!host.ok) return fail(host);
      nested = host.value;
      // A stage 1 the guest can use needs the host's: AArch64 tables it can read little-endian (as QEMU refuses a host without).
      if ((emulatedIds(nested.hostInfo, options.mode).IDR0! & IDR0_S1P) === 0) {
        nested.destroy();
        return err("EOPNOTSUPP", "the host SMMU has no little-endian AArch64 stage 1 to offer the guest");
      }
    }
    // Properties the host cannot honour refuse the device, as QEMU's accel=on refuses an incompatible host.
    const refused = propertyHostProblem(emulatedIds(nested?.hostInfo, options.mode), options.properties, options.mode);
    if (refused !== undefined) {
      nested?.destroy();
      return err("EINVAL", refused);
    }
    const device = new Smmuv3Device(options, nested, extras);
    // Nested: what the guest's structures said is cached in the physical SMMU (its CD cache and IOTLB), so that is
    // where the audit compares; the VMM's own translation of its emulated devices caches nothing.
    if (options.audit === true && nested !== undefined && options.unit instanceof Smmuv3Unit) options.unit.enableAudit(options.vm.id);
    if (nested !== undefined && (device.features.pri || device.features.stallAndTerminate)) {
      const relay = PageRequestRelay.create(options.iommufd, device.pageRequestPorts());
      if (!relay.ok) {
        nested.destroy();
        return fail(relay);
      }
      device.relay = relay.value;
    }
    if (options.mode === "shadow") {
      const reporter = { log: resolveToken(options.vm.container, HostServices).log, vm: options.vm.id, source: device.logSource };
      device.shadow = new ShadowHost(options.iommufd, options.vm.memory, device.reader, options.ioasId, options.shadowBackend ?? "iommufd", options.dmaEntryLimit, reporter);
    }
    const handler: MmioHandler = { read: (o, s) => device.regs.read(o, s), write: (o, s, v) => device.regs.write(o, s, v) };
    const mapped = options.vm.mapMmio(device.mmioBase, SMMU_MMIO_BYTES, handler, { name: "smmuv3" });
    if (!mapped.ok) {
      nested?.destroy();
      return fail(mapped);
    }
    device.unmapRegisters = () => options.vm.unmapMmio(mapped.value);
    return ok(device);
  }

  private get vm(): VmmDeviceOptions["vm"] {
    return this.options.vm;
  }

  // ---- devices ----

  assignDevice(device: DmaDevice, devId: number, guestRid: number): Result<void> {
    if (this.assigned.has(guestRid)) return err("EEXIST", `StreamID 0x${guestRid.toString(16)} already assigned`);
    if (guestRid >= 2 ** this.features.sidBits) return err("EINVAL", `StreamID 0x${guestRid.toString(16)} beyond SIDSIZE`);
    if (this.nested !== undefined) {
      const r = this.nested.addDevice(devId, guestRid);
      if (!r.ok) return r;
    }
    this.shadow?.addDevice(devId, guestRid);
    this.assigned.set(guestRid, { device, devId });
    device.msiTarget = (msi) => void this.deliverMsi(guestRid, msi);
    this.applyStream(guestRid);
    return ok();
  }

  /**
   * Hot-unplug: the device's host side goes (nested: detached, its nested HWPT and vDEVICE destroyed; shadow:
   * detached, its space dropped when no other stream uses it), its MSIs are no longer routed, and the StreamID is
   * free again. ENOENT when nothing is assigned there.
   */
  unassignDevice(guestRid: number): Result<void> {
    const a = this.assigned.get(guestRid);
    if (a === undefined) return err("ENOENT", `no device at StreamID 0x${guestRid.toString(16)}`);
    this.nested?.removeDevice(guestRid);
    this.shadow?.removeDevice(guestRid);
    if (this.shadow !== undefined) this.stats.shadowMappings = this.shadow.mappings;
    a.device.msiTarget = undefined;
    this.assigned.delete(guestRid);
    return ok();
  }

  /**
   * Re-addressing: the device at `fromRid` is now StreamID `toRid`. Its vDEVICE is re-created with the new vSID
   * (the vSMMU's vSID → pSID table follows) and its translation is re-derived from the guest's STE at `toRid`:
   * until the guest programs one there, its DMA is what the SMMU does for that StreamID (an invalid STE aborts).
   * ENOENT when nothing is at `fromRid`, EEXIST when `toRid` is taken, EINVAL beyond SIDSIZE.
   */
  renumberDevice(fromRid: number, toRid: number): Result<void> {
    const a = this.assigned.get(fromRid);
    if (a === undefined) return err("ENOENT", `no device at StreamID 0x${fromRid.toString(16)}`);
    if (fromRid === toRid) return ok();
    if (this.assigned.has(toRid)) return err("EEXIST", `StreamID 0x${toRid.toString(16)} already assigned`);
    if (!Number.isSafeInteger(toRid) || toRid < 0 || toRid >= 2 ** this.features.sidBits) return err("EINVAL", `StreamID 0x${toRid.toString(16)} beyond SIDSIZE`);
    if (this.nested !== undefined) {
      const r = this.nested.renumberDevice(fromRid, toRid);
      if (!r.ok) return r;
    }
    this.shadow?.renumberDevice(fromRid, toRid);
    this.assigned.delete(fromRid);
    this.assigned.set(toRid, a);
    a.device.msiTarget = (msi) => void this.deliverMsi(toRid, msi);
    this.applyStream(toRid);
    return ok();
  }

  /** The command, event and PRI queues as vendor-neutral views (see `smmuGuestQueues`). */
  guestQueues(): GuestQueueView[] {
    return this.queueViews;
  }

  // ---- register side effects ----

  private registerWritten(name: string, previous: bigint): void {
    switch (name) {
      case "CR0": {
        const now = this.regs.num("CR0");
        const before = Number(previous);
        this.regs.set("CR0ACK", now);
        // A stream's nested HWPT takes page requests only while the guest's PRI queue is on: re-derive them.
        if ((now ^ before) & (CR0_SMMUEN | (this.features.pri ? CR0_PRIQEN : 0))) this.applyAllStreams();
        if (now & CR0_CMDQEN) this.processCommands();
        break;
      }
      case "IRQ_CTRL":
        this.regs.set("IRQ_CTRLACK", this.regs.get("IRQ_CTRL"));
        break;
      case "GBPA":
        if ((this.regs.num("CR0ACK") & CR0_SMMUEN) === 0) this.applyAllStreams();
        break;
      case "CMDQ_PROD":
        this.maskPointer("CMDQ_PROD", this.cmdqLog2, 0);
        this.processCommands();
        break;
      case "CMDQ_CONS":
        this.maskPointer("CMDQ_CONS", this.cmdqLog2, CMDQ_CONS_ERR_MASK);
        break;
      case "EVTQ_PROD":
        this.maskPointer("EVTQ_PROD", this.evtqLog2, QUEUE_OVERFLOW_FLAG);
        break;
      case "EVTQ_CONS":
        this.maskPointer("EVTQ_CONS", this.evtqLog2, QUEUE_OVERFLOW_FLAG);
        break;
      case "PRIQ_PROD":
      case "PRIQ_CONS":
        this.maskPointer(name, this.priqLog2, QUEUE_OVERFLOW_FLAG);
        break;
      case "GERRORN":
        if ((gerrorActive(this.regs.num("GERROR"), Number(previous)) & GerrorBit.CMDQ_ERR) !== 0) this.processCommands();
        break;
      default:
        break;
    }
  }

  /**
   * A PROD/CONS value software wrote keeps only its wrap and index bits for the queue's effective size and the
   * register's flags: bits [19:LOG2SIZE + 1] are RES0 (IHI0070 §6.3.27, §6.3.28, §6.3.95, §6.3.96 "Additional information": a value
   * written there has no effect), so nothing downstream (the queue, its guest view, a saved state) sees them.
   */
  private maskPointer(name: string, log2: number, flags: number): void {
    const value = this.regs.num(name);
    const masked = ((value & (2 ** (log2 + 1) - 1)) | (value & flags)) >>> 0;
    if (masked !== value) this.regs.set(name, masked);
  }

  /** The command and event queues' effective LOG2SIZE: as programmed, capped at IDR1.CMDQS / EVENTQS. */
  private get cmdqLog2(): number {
    return Math.min(Number(this.regs.get("CMDQ_BASE") & 0x1fn), this.features.cmdqLog2);
  }

  private get evtqLog2(): number {
    return Math.min(Number(this.regs.get("EVTQ_BASE") & 0x1fn), this.features.evtqLog2);
  }

  private get priqLog2(): number {
    return Math.min(Number(this.regs.get("PRIQ_BASE") & 0x1fn), this.features.priqLog2);
  }

  private get smmuEnabled(): boolean {
    return (this.regs.num("CR0ACK") & CR0_SMMUEN) !== 0;
  }

  private streamTable(): StreamTableConfig {
    const base = Number(this.regs.get("STRTAB_BASE") & 0x000f_ffff_ffff_ffc0n);
    const cfg = this.regs.num("STRTAB_BASE_CFG");
    return streamTableConfig(base, cfg & 0x3f, (cfg >>> 6) & 0x1f, (cfg >>> 16) & 0x3, this.features);
  }

  // ---- errors and interrupts ----

  private raiseGerror(bits: number, signal = true): void {
    const before = this.regs.num("GERROR");
    const after = gerrorRaise(before, this.regs.num("GERRORN"), bits);
    if (after === before) return;
    this.regs.set("GERROR", after);
    if (signal && (this.regs.num("IRQ_CTRLACK") & IRQ_GERROR) !== 0) {
      this.signal("GERROR_IRQ_CFG0", "GERROR_IRQ_CFG1", this.gsivs.gerror, GerrorBit.MSI_GERROR_ABT_ERR, "smmuv3-gerror");
    }
  }

  /** An interrupt of the SMMU: an MSI from its CFG0/CFG1 pair with IDR0.MSI and an address, else its wired SPI. */
  private signal(cfg0: string, cfg1: string, gsiv: number, abortBit: number, source: string): void {
    const address = Number(this.regs.get(cfg0));
    if (!this.features.msi || address === 0) {
      this.vm.inject(gsiv, 0, source);
      return;
    }
    if (writeSmmuMsi(this.vm, address, this.regs.num(cfg1), source) === "abort") this.raiseGerror(abortBit, abortBit !== GerrorBit.MSI_GERROR_ABT_ERR);
  }

  private injectEvent(record: RawBits): EventWrite {
    const outcome = this.evtq.push(record);
    if (outcome === "written") {
      this.stats.eventsInjected++;
      if ((this.regs.num("IRQ_CTRLACK") & IRQ_EVTQ) !== 0) this.signal("EVTQ_IRQ_CFG0", "EVTQ_IRQ_CFG1", this.gsivs.event, GerrorBit.MSI_EVTQ_ABT_ERR, "smmuv3-evtq");
    } else if (outcome === "abort") this.raiseGerror(GerrorBit.EVTQ_ABT_ERR);
    return outcome;
  }

  /**
   * A page request group into the guest's PRI queue (IHI0070 Chapter 8): refused while the SMMU or the queue is off or
   * PRIQ_ABT_ERR is active (§8.2), PRIQ_ABT_ERR raised when the queue's memory cannot be written. The PRI queue
   * interrupt (IRQ_CTRL.PRIQ_IRQEN) follows PRIQ_IRQ_CFG2.LO (§6.3.36): with LO, when a Last request is written or
   * discarded by an overflow; without, when the queue goes from empty to non-empty.
   */
  private injectPageRequest(entries: readonly RawBits[], last: boolean): PriWrite {
    const blocked = !this.smmuEnabled || (gerrorActive(this.regs.num("GERROR"), this.regs.num("GERRORN")) & GerrorBit.PRIQ_ABT_ERR) !== 0;
    const wasEmpty = this.priq.empty;
    const outcome = this.priq.pushGroup(entries, blocked);
    if (outcome === "abort") this.raiseGerror(GerrorBit.PRIQ_ABT_ERR);
    const lastOnly = (this.regs.num("PRIQ_IRQ_CFG2") & PRIQ_IRQ_LAST_ONLY) !== 0;
    const interrupt = outcome === "written" ? (lastOnly ? last : wasEmpty) : outcome === "overflow" && lastOnly && last;
    if (interrupt && (this.regs.num("IRQ_CTRLACK") & IRQ_PRIQ) !== 0) this.signal("PRIQ_IRQ_CFG0", "PRIQ_IRQ_CFG1", this.gsivs.pri, GerrorBit.MSI_PRIQ_ABT_ERR, "smmuv3-priq");
    return outcome;
  }

  /** What the page request relay reads of this SMMU and the guest's tables. */
  private pageRequestPorts(): PageRequestPorts {
    return {
      vsidOf: (devId) => this.nested?.vsidOf(devId),
      stalls: (vsid, pasid) => this.stallConfigured(vsid, pasid),
      priq: (entries, last) => this.injectPageRequest(entries, last),
      event: (record) => this.injectEvent(record),
      steValid: (vsid) => this.smmuEnabled && typeof this.guestSte(vsid) !== "number",
      reporter: { log: resolveToken(this.vm.container, HostServices).log, vm: this.vm.id, source: this.logSource },
    };
  }

  /** Whether the guest set a stream's stage 1 to stall for `pasid` (STE.S1STALLD clear, CD.S set: IHI0070 §5.5). */
  private stallConfigured(sid: number, pasid: number | undefined): boolean {
    if (!this.features.stallAndTerminate && !this.features.stallForced) return false;
    const ste = this.guestSte(sid);
    if (typeof ste === "number" || ste.stage1 === undefined || ste.stage1.stallDisabled) return false;
    if (readCd(ste.stage1, pasid ?? NO_PASID, this.reader, this.cdWords, this.info) !== 0) return false;
    const cd = decodeCdSettings(this.cdWords, this.features, false);
    return typeof cd !== "number" && cd.stall;
  }

  /**
   * The fault queue a stream's nested HWPT is allocated with: the relay's when its guest takes page requests — the
   * PRI queue on and ATS enabled in the STE (PRI rides on ATS, IHI0070 §3.9.1), or a stage 1 allowed to stall —
   * else none, so a device the guest did not enable for them gets final faults.
   */
  private faultFor(sid: number): number | undefined {
    const relay = this.relay;
    if (relay === undefined || !this.smmuEnabled) return undefined;
    const ste = this.guestSte(sid);
    if (typeof ste === "number") return undefined;
    const pri = this.features.pri && (this.regs.num("CR0ACK") & CR0_PRIQEN) !== 0 && ste.eats === SteEats.Translate;
    const stall = (this.features.stallAndTerminate || this.features.stallForced) && ste.stage1 !== undefined && !ste.stage1.stallDisabled;
    return pri || stall ? relay.faultId : undefined;
  }

  // ---- command queue ----

  private processCommands(): void {
    if (!this.frozen) this.cmdq.process();
  }

  /** The command semantics the queue runs commands through (see `EmulatedCommandQueue`). */
  private readonly executor: CommandExecutor = {
    execute: (cmd, position) => {
      this.stats.trapped++;
      this.failurePosition = -1;
      return this.execute(cmd, position);
    },
    errorPosition: () => this.failurePosition,
    finish: () => this.flushForwards(),
  };

  /**
   * Sends the commands queued for the host, in order; the queue position of the one the host refused, if any.
   * Everything before the refused command takes effect: when the host reports fewer handled entries than it
   * took (a kernel that refuses a whole batch for one bad entry handles none of it), the rest are resent one
   * by one up to the refused one. Commands after it are not sent: the guest's recovery re-issues them.
   * `stats.forwarded` counts only what the host accepted; a refusal is written to the host log.
   */
  private flushForwards(): number | undefined {
    const count = this.forwardCount;
    this.forwardCount = 0;
    if (count === 0 || this.nested === undefined) return undefined;
    const r = this.nested.invalidate(this.forwardWords, 0, count);
    if (r.ok) {
      this.stats.forwarded += count;
      return undefined;
    }
    let accepted = r.handled;
    let error = r.error;
    let refused = -1;
    for (let i = accepted; i < count; i++) {
      const one = this.nested.invalidate(this.forwardWords, i, 1);
      if (!one.ok) {
        refused = i;
        error = one.error;
        break;
      }
      accepted++;
    }
    this.stats.forwarded += accepted;
    // A batch refused as a whole whose every entry the host then took: nothing left to report.
    if (refused < 0) return undefined;
    const position = this.forwardPositions[refused]!;
    const name = commandName(this.forwardWords[refused * 4]! & 0xff) ?? "command";
    this.hostLog("invalidation-refused", error, `${name} at CMDQ position 0x${position.toString(16)} refused by the host (${error?.errno ?? "?"} ${error?.message ?? ""}): CERROR_ILL to the guest`);
    return position;
  }

  /** Completes what is queued for the host before a command with effects of its own: CERROR_ILL at a refused one. */
  private drainForwards(): number {
    const failed = this.flushForwards();
    if (failed === undefined) return CmdqError.CERROR_NONE;
    this.failurePosition = failed;
    return CmdqError.CERROR_ILL;
  }

  private forward(cmd: RawBits, position: number): number {
    this.forwardWords.set(cmd, this.forwardCount * 4);
    this.forwardPositions[this.forwardCount++] = position;
    return this.forwardCount < FORWARD_BATCH ? CmdqError.CERROR_NONE : this.drainForwards();
  }

  /** One entry in the host's log of refusals, for the VMM's operator. */
  private hostLog(kind: HostLogKind, error: IommuError | undefined, message: string): void {
    resolveToken(this.vm.container, HostServices).log.record({ vm: this.vm.id, source: this.logSource, kind, ...(error !== undefined ? { error } : {}), message });
  }

  private get logSource(): string {
    return `smmuv3@0x${this.mmioBase.toString(16)}`;
  }

  /**
   * One trapped command; returns its CMDQ error (CERROR_NONE when it completed or was queued for the host).
   * Fields are read straight from the command's halves: nothing is allocated per command.
   */
  private execute(cmd: RawBits, position: number): number {
    const name = commandName(cmdOpcode(cmd));
    if (name === undefined || commandSetsUndefinedBits(cmd)) return CmdqError.CERROR_ILL;
    if (SSEC_COMMANDS.has(name) && cmdSsec(cmd)) return CmdqError.CERROR_ILL;
    const f = this.features;
    const sidLimit = 2 ** f.sidBits;
    switch (name) {
      case "CMD_PREFETCH_CONFIG":
      case "CMD_PREFETCH_ADDR":
        return cmdSid(cmd) >= sidLimit ? CmdqError.CERROR_ILL : CmdqError.CERROR_NONE;
      case "CMD_CFGI_STE": {
        if (cmdSid(cmd) >= sidLimit) return CmdqError.CERROR_ILL;
        // Invalidations issued before it reach the host before the stream's new configuration does.
        const drained = this.drainForwards();
        if (drained !== CmdqError.CERROR_NONE) return drained;
        return this.applyStreams(cmdSid(cmd), cmdSid(cmd)) === undefined ? CmdqError.CERROR_NONE : CmdqError.CERROR_ILL;
      }
      case "CMD_CFGI_STE_RANGE": {
        const drained = this.drainForwards();
        if (drained !== CmdqError.CERROR_NONE) return drained;
        let refused: IommuError | undefined;
        if (cmdRange(cmd) === CFGI_ALL_RANGE) refused = this.applyAllStreams();
        else {
          const { first, last } = cfgiSteRangeStreams(cmdSid(cmd), cmdRange(cmd));
          refused = this.applyStreams(first, last);
        }
        return refused === undefined ? CmdqError.CERROR_NONE : CmdqError.CERROR_ILL;
      }
      case "CMD_CFGI_CD":
      case "CMD_CFGI_CD_ALL": {
        const sid = cmdSid(cmd);
        if (sid >= sidLimit) return CmdqError.CERROR_ILL;
        if (this.nested?.hasDevice(sid)) return this.forward(cmd, position);
        if (this.shadow?.hasDevice(sid) && this.applyStream(sid) !== undefined) return CmdqError.CERROR_ILL;
        return CmdqError.CERROR_NONE;
      }
      case "CMD_TLBI_NH_ALL":
      case "CMD_TLBI_NSNH_ALL":
        return this.invalidate(cmd, position, undefined, 0, Number.POSITIVE_INFINITY);
      case "CMD_TLBI_NH_ASID":
        return this.invalidate(cmd, position, cmdAsid(cmd), 0, Number.POSITIVE_INFINITY);
      case "CMD_TLBI_NH_VA":
      case "CMD_TLBI_NH_VAA":
        if (tlbiRangeReserved(cmd, f.rangeInvalidation)) return CmdqError.CERROR_ILL;
        tlbiRange(cmd, this.range);
        return this.invalidate(cmd, position, name === "CMD_TLBI_NH_VA" ? cmdAsid(cmd) : undefined, this.range.first, this.range.length);
      case "CMD_TLBI_EL2_ALL":
      case "CMD_TLBI_EL2_ASID":
      case "CMD_TLBI_EL2_VA":
      case "CMD_TLBI_EL2_VAA":
      case "CMD_TLBI_EL3_ALL":
      case "CMD_TLBI_EL3_VA":
        return f.hyp ? CmdqError.CERROR_NONE : CmdqError.CERROR_ILL;
      case "CMD_TLBI_S12_VMALL":
      case "CMD_TLBI_S2_IPA":
        return f.stage2 ? CmdqError.CERROR_NONE : CmdqError.CERROR_ILL;
      case "CMD_ATC_INV":
        return this.atcInvalidate(cmd, position, cmdSid(cmd));
      case "CMD_PRI_RESP": {
        // ILLEGAL without PRI and for Resp 0b11 (IHI0070 §4.5.2); out-of-range IDs are CERROR_ILL as for every command
        // here (§4.1.7 leaves them CONSTRAINED UNPREDICTABLE); ignored while the SMMU is disabled.
        if (!f.pri || cmdPriResp(cmd) === 0b11 || cmdSid(cmd) >= sidLimit) return CmdqError.CERROR_ILL;
        if (cmdSsv(cmd) && cmdSsid(cmd) >= 2 ** f.ssidBits) return CmdqError.CERROR_ILL;
        const drained = this.drainForwards();
        if (drained !== CmdqError.CERROR_NONE) return drained;
        if (this.smmuEnabled) this.relay?.priResponse(cmdSid(cmd), cmdPrgIndex(cmd), cmdPriResp(cmd));
        return CmdqError.CERROR_NONE;
      }
      case "CMD_RESUME":
      case "CMD_STALL_TERM": {
        // ILLEGAL on an SMMU without the stall model (IHI0070 §4.7.1, §4.7.2); a STAG naming no stalled transaction of
        // the StreamID has no effect.
        if ((!f.stallAndTerminate && !f.stallForced) || cmdSid(cmd) >= sidLimit) return CmdqError.CERROR_ILL;
        const drained = this.drainForwards();
        if (drained !== CmdqError.CERROR_NONE) return drained;
        if (name === "CMD_RESUME") this.relay?.resume(cmdSid(cmd), cmdStag(cmd), cmdResumeAction(cmd));
        else this.relay?.stallTerm(cmdSid(cmd));
        return CmdqError.CERROR_NONE;
      }
      case "CMD_SYNC":
        return this.sync(cmdSyncCs(cmd), cmdSyncMsiAddress(cmd), cmdSyncMsiData(cmd));
      default:
        return CmdqError.CERROR_ILL;
    }
  }

  /**
   * A stage-1 TLB invalidation: to the host in nested mode, a resync of the shadow in shadow mode. A shadow
   * mapping the back end refuses (the type1 entry limit) fails the TLBI with CERROR_ILL, as a VMM fails a CFGI_STE
   * whose host configuration is refused (QEMU hw/arm/smmuv3.c, smmuv3_cmdq_consume after
   * smmuv3_accel_install_ste): the guest's driver reports the command error (Linux arm_smmu_cmdq_skip_err logs
   * it) while the unmapped page faults; the mirror wrote the host-log entry.
   */
  private invalidate(cmd: RawBits, position: number, asid: number | undefined, address: number, length: number): number {
    if (this.nested !== undefined) return this.forward(cmd, position);
    if (this.shadow !== undefined) {
      const refused = this.shadow.invalidate(asid, address, length);
      this.stats.shadowMappings = this.shadow.mappings;
      if (refused !== undefined) return CmdqError.CERROR_ILL;
      this.stats.forwarded++;
    }
    return CmdqError.CERROR_NONE;
  }

  /**
   * CMD_ATC_INV: the stream must have ATS enabled (STE.EATS ≠ 0); otherwise the device answers the ATS
   * invalidation with Unsupported Request and the next CMD_SYNC fails with CERROR_ATC_INV_SYNC. With ATS, a
   * passthrough device's invalidation goes to the host (its ATC), an emulated device has none.
   */
  private atcInvalidate(cmd: RawBits, position: number, sid: number): number {
    if (!this.features.ats) return CmdqError.CERROR_ILL;
    if (sid >= 2 ** this.features.sidBits) return CmdqError.CERROR_ILL;
    const ste = this.guestSte(sid);
    if (typeof ste === "number" || ste.eats === 0 || ste.config === SteConfig.Abort) {
      this.atcFailure = true;
      return CmdqError.CERROR_NONE;
    }
    return this.nested?.hasDevice(sid) ? this.forward(cmd, position) : CmdqError.CERROR_NONE;
  }

  /**
   * CMD_SYNC: everything before it completes (forwarded commands reach the host first), then the completion is
   * signalled: CS SIG_IRQ as an MSI of MSIData to MSIAddress (or the wired sync interrupt without MSIs), SIG_SEV
   * as an event. A host refusal or an incomplete ATC invalidation fails the SYNC instead.
   */
  private sync(cs: number, msiAddress: number, msiData: number): number {
    const drained = this.drainForwards();
    if (drained !== CmdqError.CERROR_NONE) return drained;
    if (this.atcFailure) {
      this.atcFailure = false;
      return CmdqError.CERROR_ATC_INV_SYNC;
    }
    if (cs === 1) {
      if (!this.features.msi) this.vm.inject(this.gsivs.sync, 0, "smmuv3-sync");
      else if (writeSmmuMsi(this.vm, msiAddress, msiData, "smmuv3-sync") === "abort") this.raiseGerror(GerrorBit.MSI_CMDQ_ABT_ERR);
    } else if (cs === 2) this.sevEvents++;
    else if (cs === 3) return CmdqError.CERROR_ILL;
    return CmdqError.CERROR_NONE;
  }

  // ---- streams (host side) ----

  private guestSte(sid: number): ReturnType<typeof decodeSteSettings> {
    const read = readSte(this.streamTable(), sid, this.reader, this.steWords, this.info);
    return read !== 0 ? read : decodeSteSettings(this.steWords, this.features);
  }

  /** Every assigned stream re-read and installed; the first refusal, if any. */
  private applyAllStreams(): IommuError | undefined {
    let refused: IommuError | undefined;
    for (const sid of this.assigned.keys()) refused ??= this.applyStream(sid);
    return refused;
  }

  private applyStreams(first: number, last: number): IommuError | undefined {
    let refused: IommuError | undefined;
    for (const sid of this.assigned.keys()) if (sid >= first && sid <= last) refused ??= this.applyStream(sid);
    return refused;
  }

  /**
   * Re-reads what the guest configured for a passthrough StreamID and installs it on the host. A refusal (a nested
   * HWPT the host would not allocate or attach, a shadow attach or mapping it would not make) blocks the stream
   * and is written to the host log; the caller tells the guest when a command caused it.
   */
  private applyStream(sid: number): IommuError | undefined {
    let refused: IommuError | undefined;
    if (this.nested !== undefined) {
      refused = this.nested.setVste(sid, this.vsteFor(sid), this.faultFor(sid));
      if (refused !== undefined) this.hostLog("configuration-refused", refused, `StreamID 0x${sid.toString(16)}: the host refused its configuration (${refused.errno} ${refused.message}); the stream is blocked`);
    }
    if (this.shadow !== undefined) {
      refused = this.shadow.setStream(sid, this.shadowStreamFor(sid));
      this.stats.shadowMappings = this.shadow.mappings;
    }
    return refused;
  }

  /**
   * The vSTE for the host: GBPA's abort or bypass while the SMMU is disabled; the guest STE's dw0/dw1 reduced to
   * the nesting-allowed fields when it is legal, EATS written as its effective value (0b11 and an EATS the
   * emulated SMMU ignores are 0b00; Linux's arm_smmu_validate_vste refuses anything but 0b00 and 0b01); V = 0
   * (the host's abort) when it is not legal, or cannot be read. Fields the host judges by the same architecture
   * (S1Fmt, S1DSS) go as the guest wrote them.
   */
  private vsteFor(sid: number): RawBits {
    if (!this.smmuEnabled) return configVste((this.regs.num("GBPA") & GBPA_ABORT) !== 0 ? SteConfig.Abort : SteConfig.Bypass);
    const ste = this.guestSte(sid);
    if (typeof ste === "number") return INVALID_VSTE;
    // Config 0b0xx is abort however it is spelt (the reserved 0b001–0b011 included): the host gets a plain abort.
    if (ste.config === SteConfig.Abort) return configVste(SteConfig.Abort);
    const vste = new Uint32Array(4);
    for (let i = 0; i < 4; i++) vste[i] = (this.steWords[i]! & STE_NESTING_ALLOWED_MASK[i]!) >>> 0;
    vste[2] = ((vste[2]! & ~VSTE2_EATS) | (ste.eats << 28)) >>> 0;
    return vste;
  }

  private shadowStreamFor(sid: number): ShadowStream {
    if (!this.smmuEnabled) return (this.regs.num("GBPA") & GBPA_ABORT) !== 0 ? { kind: "blocked" } : { kind: "identity" };
    const ste = this.guestSte(sid);
    if (typeof ste === "number" || ste.config === SteConfig.Abort) return { kind: "blocked" };
    if (ste.stage1 === undefined) return { kind: "identity" };
    const read = readCd(ste.stage1, NO_PASID, this.reader, this.cdWords, this.info);
    if (read === CD_BYPASS) return { kind: "identity" };
    if (read !== 0) return { kind: "blocked" };
    const cd = decodeCdSettings(this.cdWords, this.features, ste.stage1.stallDisabled);
    return typeof cd === "number" ? { kind: "blocked" } : { kind: "stage1", cd };
  }

  // ---- events ----

  /**
   * The VMM's event loop: the host's faults on this VM's shadowed (stage-2) streams recorded as the guest's tables
   * explain them, then vEVENTQ records into the guest's event queue; host-side losses show as overflow.
   */
  poll(): void {
    if (this.frozen) return;
    this.pollHostFaults();
    if (this.nested === undefined) return;
    const { records, lost } = this.nested.readEvents();
    if (lost) this.evtq.markOverflow();
    for (const record of records) this.injectEvent(record);
    this.relay?.poll();
  }

  /**
   * A fault in a shadow is the host's first: the guest sees it when its own tables refuse the access too, with the
   * event the SMMU would record (translateEmulated writes it, CD.R and the rest honoured). One the guest's tables
   * translate (a shadow mapping the host refused) is the VMM's own, already in the host log. Faults the host
   * dropped unread set the event queue's overflow flag.
   */
  private pollHostFaults(): void {
    const unit = this.options.unit;
    if (!(unit instanceof Smmuv3Unit)) return;
    const { faults, lost } = unit.vmFaults.read(this.options.vm.id);
    if (lost > 0) this.evtq.markOverflow();
    for (const f of faults) {
      for (const [guestRid, a] of this.assigned) {
        if (a.device.requesterId === f.requesterId) this.translateEmulated(guestRid, f.pasid, f.iova, (f.access & Perm.Write) !== 0, this.hostFaultWalk);
      }
    }
  }

  // ---- emulated devices ----

  /**
   * Translates a DMA of one of the VMM's own devices as the SMMU would: GBPA while disabled, otherwise the
   * guest's stream table, STE, CD and stage-1 tables. A fault is recorded in the guest's event queue when the
   * architecture records it (CD.R for walk faults; C_BAD_STREAMID only with CR2.RECINVSID).
   */
  translateEmulated(guestRid: number, pasid: number, iova: number, write: boolean, out: WalkResult): void {
    const access = write ? Perm.Write : Perm.Read;
    if (!this.smmuEnabled) {
      // GBPA bypass presents the address as the PA, unless it exceeds the OAS: aborted, no event (IHI0070 §3.4).
      const abort = (this.regs.num("GBPA") & GBPA_ABORT) !== 0 || !isInputAddress(iova) || iova >= 2 ** this.features.oasBits;
      resetSmmuWalkInfo(this.info);
      out.ok = !abort;
      out.mapped = !abort;
      out.output = iova;
      out.pageShift = 12;
      out.perms = abort ? 0 : Perm.All;
      out.fault = abort ? WalkFault.Translation : WalkFault.None;
      out.stage = 1;
      out.faultInput = iova;
      return;
    }
    this.translator.setStreamTable(this.streamTable());
    this.translator.translate(guestRid, pasid, iova, access, out, this.info);
    if (out.ok && !this.options.vm.memory.contains(out.output)) {
      // Translated to where no memory answers: the access fails at its target (as a bus abort does); the SMMU's
      // walk succeeded, so it records nothing (event records are for failed translations, IHI 0070 7.3).
      out.ok = false;
      out.fault = WalkFault.AddressSize;
      return;
    }
    if (out.ok || this.info.event === 0 || !this.info.record) return;
    if (this.info.event === EventType.C_BAD_STREAMID && (this.regs.num("CR2") & CR2_RECINVSID) === 0) return;
    const record = faultRecord(this.info, { sid: guestRid, ssid: pasid, iova, access });
    if (record !== undefined) this.injectEvent(record);
  }

  /**
   * A device's MSI is a DMA write like any other, so it is translated by the SMMU before it reaches the interrupt
   * controller: Linux on arm64 maps the ITS doorbell at an IOVA of the device's domain (iommu_dma_prepare_msi, the
   * MSI cookie) and programs the device with that IOVA. The write goes through the stream's configuration as DMA
   * does (`translateEmulated`: GBPA while disabled, else STE, CD and the guest's stage-1 tables, the VM's stage 2
   * being IPA = GPA for the interrupt controller's frames), and a fault is the architecture's: blocked, with the
   * event recorded where the SMMU records it (F_TRANSLATION with CD.R, say). The output address must then be a
   * doorbell of the model's GIC: a CPU's GICR_SETLPIR (data = INTID); anything else is no interrupt (blocked).
   */
  deliverMsi(guestRid: number, msi: MsiMessage): InterruptResult {
    const out = this.msiWalk;
    this.translateEmulated(guestRid, NO_PASID, msi.address, true, out);
    if (!out.ok) {
      const event = this.info.event;
      return { ok: false, fault: { code: event, name: event === 0 ? "ABORT" : (eventName(event) ?? "UNKNOWN") } };
    }
    const cpu = gicrSetlpirCpu(out.output);
    if (cpu === undefined || cpu >= this.vm.vcpus) return { ok: false, fault: { code: 0, name: "NOT_AN_INTERRUPT_DOORBELL" } };
    this.vm.inject(msi.data >>> 0, cpu, `msi:${guestRid.toString(16)}`);
    return { ok: true, irq: { vector: msi.data >>> 0, destination: cpu, destinationMode: "physical", deliveryMode: 0, trigger: "edge" } };
  }

  acpiTables(): AcpiTableBlob[] {
    return [{ signature: "IORT", bytes: buildIort({ smmuBase: this.mmioBase, gsivs: this.gsivs }) }];
  }

  // ---- migration ----

  freeze(): void {
    this.frozen = true;
  }

  thaw(): void {
    this.frozen = false;
    this.processCommands();
    this.poll();
  }

  /** Registers and the SMMU's pending state; guest memory carries the tables and queues. */
  save(): Uint8Array {
    const wasFrozen = this.frozen;
    this.frozen = true;
    try {
      const state: StateValue = { regs: this.regs.snapshot(), atcFailure: this.atcFailure, sevEvents: this.sevEvents };
      return encodeState(SMMUV3_STATE_KIND, SMMUV3_STATE_VERSION, state);
    } finally {
      this.frozen = wasFrozen;
    }
  }

  /**
   * Checks a saved state for this device (`readSmmuv3State`: every register against its fields and this SMMU's
   * limits) without changing anything: EINVAL naming the first bad field. An extension restoring a state of its
   * own around this one checks both halves before applying either.
   */
  parseState(blob: Uint8Array): Result<Smmuv3SavedState> {
    return parseSmmuv3State(blob, this.features);
  }

  /**
   * Applies a checked state (it cannot fail): the registers, then the host side rebuilt from the guest's tables
   * (every assigned stream's STE), then the queues resumed, as a destination VMM does. What the host refuses on
   * the way is written to the host log and blocks that stream.
   */
  applyState(state: Smmuv3SavedState): void {
    this.frozen = true;
    this.forwardCount = 0;
    this.regs.restore(state.regs);
    this.atcFailure = state.atcFailure;
    this.sevEvents = state.sevEvents;
    // Page requests outstanding on the source are the source host's: this device's host has none of them.
    this.relay?.forget();
    this.applyAllStreams();
    this.frozen = false;
    this.processCommands();
  }

  /** Restores into a freshly created device of the same configuration: all of it, or nothing (EINVAL). */
  restore(blob: Uint8Array): Result<void> {
    const parsed = this.parseState(blob);
    if (!parsed.ok) return fail(parsed);
    this.applyState(parsed.value);
    return ok();
  }

  destroy(): void {
    this.nested?.destroy();
    this.nested = undefined;
    this.relay?.destroy();
    this.relay = undefined;
    this.shadow?.destroy();
    this.shadow = undefined;
    for (const a of this.assigned.values()) a.device.msiTarget = undefined;
    this.assigned.clear();
    this.unmapRegisters?.();
    this.unmapRegisters = undefined;
  }

  /** The vSMMU's iommufd object id (nested mode), for an extension's VMM adding its own objects to it. */
  get viommuId(): number | undefined {
    return this.nested?.viommuId;
  }

  /** The vSTE installed on the host for a passthrough StreamID (nested mode), for tests. */
  hostVste(sid: number): RawBits | undefined {
    return this.nested?.vsteOf(sid);
  }
}
