import {
  address64,
  copyWalkResult,
  decodeState,
  encodeState,
  err,
  fail,
  HostServices,
  NO_PASID,
  ok,
  Perm,
  resolveToken,
  saveFrozen,
  StaleTranslationAudit,
  WalkFault,
  type AcpiTableBlob,
  type DmaDevice,
  type GuestQueueView,
  type IommuError,
  type EmulatedIommu,
  type InterruptResult,
  type MmioMapping,
  type MsiMessage,
  type Result,
  type ShadowReporter,
  type StateValue,
  type TranslationMode,
  type VmmDeviceOptions,
  type VmmStats,
  type WalkResult,
} from "@viommu/core";
import { faultReason, VtdFaultReason } from "../format/fault-reasons.js";
import { faultPageAddress, FaultRequestType, interruptFaultInfo, isDmaAddress } from "../format/fault-record.js";
import { FaultStage, isVtdHostFaultSource, type VtdHostFaultReport, type VtdHostFaultSource } from "../format/host-fault-report.js";
import { decodeEcap } from "../format/ecap.js";
import { invDescName } from "../format/inv-desc.js";
import { SOURCE_ID_QUALIFIER_MASKS } from "../format/irte.js";
import { InvalidationQueueErrorInfo } from "../format/registers.js";
import { DeviceBindings, isSourceId, type AssignedDevice } from "./device-bindings.js";
import { buildVtdDmar } from "./dmar-table.js";
import {
  EMULATED_FAULT_RECORDS,
  EMULATED_FRO,
  EMULATED_IRO,
  EMULATED_MAMV,
  EMULATED_MHMV,
  EMULATED_REGISTER_BYTES,
  EMULATED_VERSION,
  emulatedRegisters,
  type EmulatedRegisters,
} from "./emulated-capabilities.js";
import { sendEventMsi } from "./event-msi.js";
import { EventInterrupt, FaultRecorder, Fsts } from "./fault-recorder.js";
import { vtdGuestQueues } from "./guest-queues.js";
import { ContextKind, DeviceContext, GuestTranslation, GuestTranslator, translatorConfig } from "./guest-translator.js";
import { InterruptRemapper } from "./interrupt-remapper.js";
import { DONE, InvalidationQueue, type DescriptorOutcome, type InvalidationQueueHost } from "./invalidation-queue.js";
import { PageRequestQueue } from "./page-request-queue.js";
import { PageRequestRelay, type PageResponse } from "./page-request-relay.js";
import { isAuditableUnit } from "../hw/translation-auditor.js";
import { vtdDeviceConfig, type VtdDeviceConfig } from "./device-properties.js";
import { auditInterruptHit } from "./interrupt-audit.js";
import { PassthroughAudit } from "./passthrough-audit.js";
import { isPostingUnit, PostedInterrupts } from "./posted-interrupts.js";
import { Gsts, VtdRegisterFile, type RegisterEffects } from "./register-file.js";
import { applyVtdState, identification, parseVtdState, snapshotVtdState, VTD_STATE_KIND, VTD_STATE_VERSION, VTD_STATE_VERSIONS, type VtdStateLimits } from "./vtd-state.js";

/** QEMU's register base for intel-iommu; further instances follow at 64 KiB steps. */
export const VTD_DEFAULT_MMIO_BASE = 0xfed9_0000;

export type { PageResponse } from "./page-request-relay.js";

const INVALID_RESERVED: DescriptorOutcome = { kind: "invalid", info: InvalidationQueueErrorInfo.RSVD_FIELD_VIOLATION };
const INVALID_NO_INFO: DescriptorOutcome = { kind: "invalid", info: InvalidationQueueErrorInfo.INFO_NOT_AVAILABLE };
/**
 * An invalidation the host refused (IOMMU_HWPT_INVALIDATE failed for a nested domain, or a shadow mapping its
 * resynchronisation needed was not installed) is an invalidation queue error at that descriptor: FSTS.IQE and
 * the fault event, IQH left pointing at it, nothing behind it fetched until software clears IQE, the
 * descriptors ahead of it completed as normal (VT-d spec §6.5.2.11, "Invalidation Queue Errors") — which is
 * what iommufd's `handled` says of the host's entries. Not ITE: §6.5.2.11 defines it for a Device-TLB
 * invalidation response time-out only, ITESID must name the device that timed out, and Linux's qi_check_fault
 * (drivers/iommu/intel/dmar.c) answers it by aborting the pending waits and resubmitting the batch (-EAGAIN),
 * which a refusal that recurs turns into an endless loop. An IQE at its own descriptor Linux repairs with its
 * wait descriptor and reports (-EINVAL, "Invalidation Queue Error"). IQEI 0, information not available
 * (§11.4.9.9): the descriptor itself is well formed.
 */
const REFUSED_BY_HOST: DescriptorOutcome = INVALID_NO_INFO;
/** Host fault reports read per poll round, and rounds per poll: a VM faulting without end cannot stall the loop. */
const FAULT_BATCH = 64;
const FAULT_ROUNDS = 16;

/**
 * The emulated VT-d remapping unit a VMM gives one VM: the register page (VT-d chapter 11), queued
 * invalidation, fault recording and fault events, interrupt remapping, the page request queue, the DMAR, and
 * the host side of the guest's programming — nested (HWPT_NESTED with VTD_S1 data over the shared parent,
 * IOTLB descriptors forwarded as VTD_S1 invalidations), shadowed (caching mode: the guest's tables walked on
 * invalidation and mapped through a shadow back end) or untranslated with interrupt remapping only. Guest
 * accesses arrive through the VM's MMIO map; nothing the guest writes can make it throw.
 */
export class VtdDevice implements EmulatedIommu, RegisterEffects, InvalidationQueueHost {
  readonly vendor = "vtd";
  readonly mode: TranslationMode;
  readonly mmioBase: number;
  readonly stats: VmmStats = { trapped: 0, forwarded: 0, eventsInjected: 0, shadowMappings: 0 };
  frozen = false;
  readonly registersModel: EmulatedRegisters;
  readonly translator: GuestTranslator;
  readonly faults: FaultRecorder;
  readonly queue: InvalidationQueue;
  readonly remapper: InterruptRemapper;
  readonly prq: PageRequestQueue;
  readonly invalidationEvent: EventInterrupt;
  readonly registers: VtdRegisterFile;
  readonly bindings: DeviceBindings;
  /** Page requests of passthrough devices: the host's fault queue relayed into the guest's page request queue. */
  readonly pageRequests: PageRequestRelay;
  /** With `deviceInterrupts: "posted"`: the host posting passthrough devices' MSIs to the vCPUs. */
  posted: PostedInterrupts | undefined;
  /** Where page group responses for no passthrough device's group go (the emulated device that asked for the pages). */
  onPageResponse: ((response: PageResponse) => void) | undefined;
  private mapping: MmioMapping | undefined;
  private readonly hostFaults: VtdHostFaultSource | undefined;
  private readonly walkOutcome = new GuestTranslation();
  private readonly context = new DeviceContext();
  private readonly instance: number;
  /** What a saved state is checked against: this unit's fault records, descriptor widths and EIM. */
  private readonly stateLimits: VtdStateLimits;
  /** Where host refusals made on this VM's behalf are reported. */
  readonly reporter: ShadowReporter;
  /**
   * With VmmDeviceOptions.audit: the stale-translation audit of the DMA translation caches (IOTLB, context and
   * PASID caches) and, apart so that a finding names the last invalidation of its own cache, of the interrupt
   * entry cache.
   */
  readonly audit: StaleTranslationAudit | undefined;
  readonly interruptAudit: StaleTranslationAudit | undefined;
  /** With the audit: what checks the physical unit's translations of this VM's passthrough devices. */
  private readonly passthroughAudit: PassthroughAudit | undefined;

  /** What the properties made of the unit (CAP/ECAP bits, address width). */
  readonly config: VtdDeviceConfig;

  private constructor(
    readonly options: VmmDeviceOptions,
    config: VtdDeviceConfig,
  ) {
    this.config = config;
    this.mode = options.mode;
    this.instance = options.instance ?? 0;
    this.mmioBase = options.mmioBase ?? VTD_DEFAULT_MMIO_BASE + this.instance * 0x10000;
    this.registersModel = emulatedRegisters(options.mode, config);
    const vm = options.vm;
    this.translator = new GuestTranslator(vm.memory, translatorConfig(this.registersModel.cap, this.registersModel.ecap, config.awBits));
    this.faults = new FaultRecorder(EMULATED_FAULT_RECORDS, new EventInterrupt((a, u, d) => this.sendEvent(a, u, d, "vtd-fault")));
    this.invalidationEvent = new EventInterrupt((a, u, d) => this.sendEvent(a, u, d, "vtd-invalidation"));
    const ecap = decodeEcap(this.registersModel.ecap);
    this.stateLimits = { ...identification(this.registersModel), faultRecords: EMULATED_FAULT_RECORDS, wideDescriptors: ecap.SMTS === 1, eim: ecap.EIM === 1 };
    this.queue = new InvalidationQueue(vm.memory, this, this.stateLimits.wideDescriptors);
    this.remapper = new InterruptRemapper(vm.memory);
    this.prq = new PageRequestQueue(vm.memory, new EventInterrupt((a, u, d) => this.sendEvent(a, u, d, "vtd-page-request")), () => this.faults.setStatus(Fsts.PRO));
    this.registers = new VtdRegisterFile(
      {
        version: EMULATED_VERSION,
        cap: this.registersModel.cap,
        ecap: this.registersModel.ecap,
        fro: EMULATED_FRO,
        iro: EMULATED_IRO,
        eim: this.stateLimits.eim,
        smts: this.stateLimits.wideDescriptors,
        faults: this.faults,
        queue: this.queue,
        remapper: this.remapper,
        prq: this.prq,
        invalidationEvent: this.invalidationEvent,
      },
      this,
    );
    this.reporter = { log: resolveToken(vm.container, HostServices).log, vm: vm.id, source: `vtd@0x${this.mmioBase.toString(16)}` };
    this.bindings = new DeviceBindings(options, this.translator, this.stats, this.reporter);
    this.pageRequests = new PageRequestRelay(options.iommufd, this.prq, () => this.bindings.devices.values(), this.reporter);
    // Nested HWPTs of page-request-enabled contexts report to the relay's fault queue (the host PRI path).
    this.bindings.faultQueue = () => this.pageRequests.faultQueueId();
    this.hostFaults = isVtdHostFaultSource(options.unit) ? options.unit : undefined;
    if (options.audit === true) {
      const host = resolveToken(vm.container, HostServices);
      const audit = new StaleTranslationAudit(host.events, host.clock);
      this.audit = audit;
      this.passthroughAudit = new PassthroughAudit(audit, this.bindings, this.translator, vm.id, this.reporter.source);
      const interruptAudit = new StaleTranslationAudit(host.events, host.clock);
      this.interruptAudit = interruptAudit;
      this.remapper.auditHit = (sid, index, cached, now) => auditInterruptHit(interruptAudit, { vm: vm.id, unit: this.reporter.source, rid: sid, index }, cached, now);
    }
  }

  /**
   * Records an invalidation this unit carried out for the audit's findings, once per assigned device it covers
   * (`covers`), or once for every requester when `covers` is undefined. Nothing is done without the audit.
   */
  private noteInvalidation(what: () => string, covers: ((a: AssignedDevice) => boolean) | undefined, start?: number, end?: number, audit = this.audit): void {
    if (audit === undefined) return;
    if (covers === undefined) {
      audit.noteInvalidation(what(), { start, end });
      return;
    }
    for (const a of this.bindings.devices.values()) if (covers(a)) audit.noteInvalidation(what(), { rid: a.guestRid, start, end });
  }

  /**
   * Builds the device and maps its register page into the VM. Posted device interrupts need a host unit that
   * posts (CAP.PI): EOPNOTSUPP otherwise.
   */
  static create(options: VmmDeviceOptions): Result<VtdDevice> {
    const config = vtdDeviceConfig(options.mode, options.properties);
    if (!config.ok) return fail(config);
    const device = new VtdDevice(options, config.value);
    if (options.deviceInterrupts === "posted") {
      if (!isPostingUnit(options.unit)) return err("EOPNOTSUPP", `posted device interrupts need a host unit that posts; ${options.unit.name} cannot`);
      const posted = PostedInterrupts.create(options.vm, options.unit, resolveToken(options.vm.container, HostServices).memory, device.remapper, device.reporter, (rid, msi) => void device.deliverMsi(rid, msi));
      if (!posted.ok) return fail(posted);
      device.posted = posted.value;
    }
    const mapped = options.vm.mapMmio(device.mmioBase, EMULATED_REGISTER_BYTES, { read: (o, s) => device.read(o, s), write: (o, s, v) => device.write(o, s, v) }, { name: "vtd" });
    if (!mapped.ok) {
      device.posted?.destroy();
      return fail(mapped);
    }
    device.mapping = mapped.value;
    return ok(device);
  }

  private read(offset: number, size: 4 | 8): bigint {
    return this.registers.read(offset, size);
  }

  private write(offset: number, size: 4 | 8, value: bigint): void {
    this.registers.write(offset, size, value);
  }

  private sendEvent(address: number, upper: number, data: number, source: string): void {
    sendEventMsi(this.options.vm, address, upper, data, source);
  }

  // ---- register effects ----

  setRootTable(): void {
    this.translator.setRootTable(this.registers.rtaddr);
  }

  /**
   * GCMD.TE: every device rebound. A shadow mapping refused here has no descriptor to fail (the host log has
   * it); in caching mode the guest's flushes after enabling translation resynchronise, and fail, again.
   */
  translation(enable: boolean): void {
    this.bindings.translationEnabled = enable;
    if (!enable) this.faults.resetIndex();
    this.bindings.refresh(() => true);
  }

  queuedInvalidation(enable: boolean): boolean {
    if (!enable) return this.queue.disable();
    this.queue.enable();
    if (!this.frozen) this.queue.process();
    return true;
  }

  interruptRemapping(enable: boolean): void {
    this.remapper.enabled = enable;
    this.posted?.refresh(this.bindings.devices.values());
  }

  setInterruptTable(): void {
    this.remapper.latch(this.stateLimits.eim);
    this.posted?.refresh(this.bindings.devices.values());
  }

  tailWritten(value: bigint): void {
    if (this.queue.writeTail(value) && !this.frozen) this.queue.process();
  }

  statusCleared(bits: number): void {
    if (bits & (Fsts.IQE | Fsts.ITE) && !this.frozen) this.queue.process();
  }

  /**
   * Register-based context-cache invalidation (ignored while queued invalidation is on, as software must not
   * mix them). The actual granularity (CAIG) is 0 for a request not carried out, the register interface's only
   * error report; a refused shadow mapping is one.
   */
  contextCommand(ccmd: bigint): number {
    if (this.registers.gsts & Gsts.QIES) return 0;
    const cirg = Number((ccmd >> 61n) & 3n);
    if (cirg === 0) return 0;
    const refused = this.contextInvalidation(cirg, Number(ccmd & 0xffffn), Number((ccmd >> 16n) & 0xffffn), Number((ccmd >> 32n) & 3n));
    return refused === undefined ? cirg : 0;
  }

  /**
   * Register-based IOTLB invalidation (IOTLB register at ECAP.IRO × 16 + 8, address in IVA). IAIG 0 reports a
   * request the hardware did not carry out (an address mask above MAMV, or one the host refused).
   */
  iotlbCommand(iotlb: bigint, iva: bigint): number {
    if (this.registers.gsts & Gsts.QIES) return 0;
    const iirg = Number((iotlb >> 60n) & 3n);
    const did = Number((iotlb >> 32n) & 0xffffn);
    const am = Number(iva & 0x3fn);
    if (iirg === 0 || (iirg === 3 && am > EMULATED_MAMV)) return 0;
    const refused = this.iotlbInvalidation(iirg, did, Number((iva & 0x000f_ffff_ffff_f000n) % (1n << 52n)), am, Number((iva >> 6n) & 1n) === 1, undefined);
    return refused === undefined ? iirg : 0;
  }

  // ---- invalidation queue ----

  queueError(kind: "IQE" | "ITE" | "ICE"): void {
    this.faults.setStatus(kind === "IQE" ? Fsts.IQE : kind === "ITE" ? Fsts.ITE : Fsts.ICE);
  }

  stopped(): boolean {
    return this.faults.hasStatus(Fsts.IQE) || this.faults.hasStatus(Fsts.ITE);
  }

  /** Executes one descriptor (VT-d §6.5.2; ../shared/spec/x86.md A6) that passed the format's reserved-bit checks. */
  execute(type: number, raw: Uint32Array): DescriptorOutcome {
    this.stats.trapped++;
    const w0 = raw[0]!;
    const g = (w0 >>> 4) & 3;
    switch (invDescName(type)) {
      case "CC_INV":
        if (g === 0) return INVALID_RESERVED;
        return done(this.contextInvalidation(g, w0 >>> 16, raw[1]! & 0xffff, (raw[1]! >>> 16) & 3));
      case "IOTLB_INV": {
        const am = raw[2]! & 0x3f;
        if (g === 0 || am > EMULATED_MAMV) return INVALID_RESERVED;
        return done(this.iotlbInvalidation(g, w0 >>> 16, address64(raw[2]!, raw[3]!, 12, 51), am, (raw[2]! & 0x40) !== 0, undefined));
      }
      case "DEV_TLB_INV":
        return this.deviceTlb(raw[1]! & 0xffff);
      case "IEC_INV": {
        const im = (w0 >>> 27) & 0x1f;
        if (w0 & 0x10) {
          if (im > EMULATED_MHMV) return INVALID_RESERVED;
          const index = raw[1]! & 0xffff;
          this.remapper.invalidate(index, im);
          const count = 2 ** im;
          // Interrupt findings carry the IRTE index where a DMA finding has its IOVA.
          this.noteInvalidation(() => `IEC_INV index ${index} (IM ${im})`, undefined, index - (index % count), index - (index % count) + count - 1, this.interruptAudit);
          this.posted?.refresh(this.bindings.devices.values(), index - (index % count), count);
        } else {
          this.remapper.invalidate();
          this.noteInvalidation(() => "IEC_INV global", undefined, undefined, undefined, this.interruptAudit);
          this.posted?.refresh(this.bindings.devices.values());
        }
        return DONE;
      }
      case "INV_WAIT":
        return this.waitDescriptor(raw);
      case "P_IOTLB_INV": {
        const am = raw[2]! & 0x3f;
        if (g < 2 || am > EMULATED_MAMV) return INVALID_RESERVED;
        const pasid = raw[1]! & 0xfffff;
        if (g === 2) {
          const did = w0 >>> 16;
          this.noteInvalidation(() => `P_IOTLB_INV DID ${did} PASID ${pasid}`, (a) => coversPasid(a, did, pasid));
          return done(this.bindings.invalidate(did, pasid, 0, Infinity, false));
        }
        return done(this.iotlbInvalidation(3, w0 >>> 16, address64(raw[2]!, raw[3]!, 12, 51), am, (raw[2]! & 0x40) !== 0, pasid));
      }
      case "PC_INV": {
        if (g === 2) return INVALID_RESERVED;
        const did = w0 >>> 16;
        const pasid = raw[1]! & 0xfffff;
        // Devices whose cached entry is a fault cached nothing present: any PASID-cache flush may cover them. A
        // PASID-selective flush re-reads that PASID's entry of every device; a domain-selective or global one may
        // cover an entry at any PASID, so every device's PASID table is re-read.
        this.noteInvalidation(
          () => (g === 1 ? `PC_INV DID ${did} PASID ${pasid}` : g === 3 ? "PC_INV global" : `PC_INV DID ${did}`),
          (a) => g === 3 || (g === 1 ? coversPasid(a, did, pasid) : a.context.did === did),
        );
        if (g === 1) return done(this.bindings.refreshPasid(did, pasid));
        return done(this.bindings.refresh((a) => g === 3 || a.context.kind === ContextKind.FAULT || a.context.did === did, () => true));
      }
      case "P_DEV_TLB_INV":
        return this.deviceTlb((w0 >>> 16) & 0xffff);
      case "PG_RESP":
        this.pageGroupResponse({
          rid: w0 >>> 16,
          pasid: w0 & 0x10 ? raw[1]! & 0xfffff : undefined,
          prgi: (raw[2]! >>> 3) & 0x1ff,
          lastInGroup: (raw[2]! & 4) !== 0,
          code: (w0 >>> 12) & 0xf,
        });
        return DONE;
      default:
        return { kind: "invalid", info: InvalidationQueueErrorInfo.INVALID_DESCRIPTOR_TYPE };
    }
  }

  /**
   * A page group response (VT-d §6.5.2.13) is sent to the device, whichever group it names: the VMM carries one
   * for a passthrough device's outstanding group back through the fault file, hands the rest to the emulated
   * device that asked (if any), and logs one that matches nothing (the device would drop it as an unexpected PRG
   * index). The descriptor itself completes either way.
   */
  private pageGroupResponse(response: PageResponse): void {
    if (this.pageRequests.respondToGuest(response)) return;
    if (this.onPageResponse !== undefined) {
      this.onPageResponse(response);
      return;
    }
    const pasid = response.pasid === undefined ? "no PASID" : `PASID 0x${response.pasid.toString(16)}`;
    this.reporter.log.record({
      vm: this.reporter.vm,
      source: this.reporter.source,
      kind: "other",
      message: `page group response for guest source id 0x${response.rid.toString(16)} (${pasid}, PRG index ${response.prgi}) matches no outstanding page request group: dropped`,
    });
  }

  /** CC_INV / CCMD: global, domain-selective (DID) or device-selective (SID under the FM mask); returns a refusal. */
  private contextInvalidation(granularity: number, did: number, sid: number, fm: number): IommuError | undefined {
    const mask = SOURCE_ID_QUALIFIER_MASKS[fm & 3]!;
    this.noteInvalidation(
      () => (granularity === 1 ? "context cache global" : granularity === 2 ? `context cache DID ${did}` : `context cache SID 0x${sid.toString(16)} FM ${fm & 3}`),
      (a) => granularity === 1 || (granularity === 2 ? a.context.did === did : (a.guestRid & mask) === (sid & mask)),
    );
    return this.bindings.refresh((a: AssignedDevice) => {
      if (granularity === 1) return true;
      if (granularity === 2) return a.context.did === did || a.context.kind === ContextKind.FAULT;
      return (a.guestRid & mask) === (sid & mask);
    });
  }

  /**
   * IOTLB_INV / P_IOTLB_INV / register-based: global (1), domain (2) or page-selective (3) with 2^AM pages.
   * Returns what the host refused, if anything.
   */
  private iotlbInvalidation(granularity: number, did: number, address: number, am: number, leaf: boolean, pasid: number | undefined): IommuError | undefined {
    if (this.audit !== undefined) {
      const size = 4096 * 2 ** am;
      const start = granularity === 3 ? address - (address % size) : undefined;
      const pasidText = pasid === undefined ? "" : ` PASID ${pasid}`;
      this.noteInvalidation(
        () => (granularity === 1 ? "IOTLB global" : granularity === 2 ? `IOTLB DID ${did}${pasidText}` : `IOTLB DID ${did}${pasidText} 0x${start!.toString(16)}+0x${size.toString(16)}`),
        granularity === 1 ? undefined : (a) => (pasid === undefined ? coversDid(a, did) : coversPasid(a, did, pasid)),
        start,
        start === undefined ? undefined : start + size - 1,
      );
    }
    if (granularity === 1) return this.bindings.invalidate(undefined, undefined, 0, Infinity, false);
    if (granularity === 2) return this.bindings.invalidate(did, pasid, 0, Infinity, false);
    const size = 4096 * 2 ** am;
    return this.bindings.invalidate(did, pasid, address - (address % size), size, leaf);
  }

  /**
   * A device-TLB invalidation must be answered by the device: a source id with no device times out (ITE); a
   * device whose context does not enable ATS answers with an error completion (ICE). Nested devices' ATCs are
   * flushed by the host with their IOTLB invalidations, shadowed ones by the host's unmaps.
   */
  private deviceTlb(sid: number): DescriptorOutcome {
    const a = this.bindings.devices.get(sid);
    if (a === undefined) return { kind: "timeout", sid };
    if (!this.translator.resolve(sid, NO_PASID, this.context).ats) return { kind: "completion-error", sid };
    return DONE;
  }

  /**
   * INV_WAIT: the status write is a DMA to guest memory at QW1 63:2, all of it (an address outside RAM is a
   * queue error, as QEMU reports it; one above bit 51 is outside every RAM, never cut to the bits below); IF
   * sets ICS.IWC and raises the completion event unless IWC was already set. PD needs ECAP.PDS, which this
   * unit lacks, so it is a reserved value.
   */
  private waitDescriptor(raw: Uint32Array): DescriptorOutcome {
    const w0 = raw[0]!;
    if (w0 & 0x80) return INVALID_RESERVED;
    if (w0 & 0x20) {
      if (raw[3]! >>> 20 !== 0) return INVALID_NO_INFO;
      const address = address64(raw[2]!, raw[3]!, 2, 51);
      if (!this.options.vm.memory.hostReadable(address, 4)) return INVALID_NO_INFO;
      this.options.vm.memory.write32(address, raw[1]!);
    }
    if (w0 & 0x10 && (this.registers.ics & 1) === 0) {
      this.registers.ics = 1;
      this.invalidationEvent.raise();
    }
    return DONE;
  }

  // ---- faults ----

  private recordDmaFault(sid: number, pasid: number, scalable: boolean, iova: number, write: boolean, reason: number, type: number = write ? FaultRequestType.WRITE : FaultRequestType.READ): void {
    // Scalable mode names the PASID the tables were walked for (RID_PASID for requests without one), as QEMU does.
    const pp = scalable && pasid !== NO_PASID;
    const recorded = this.faults.record({
      FI: faultPageAddress(iova),
      SID: sid & 0xffff,
      PP: pp ? 1 : 0,
      PV: pp ? pasid & 0xfffff : 0,
      FR: reason,
      T1: type >>> 1,
      T2: type & 1,
    });
    if (recorded) this.stats.eventsInjected++;
  }

  /**
   * The VMM's event loop: the host's fault reports for this VM's devices on this unit become guest fault
   * records. A fault in the guest's own first-level table (nested) keeps the host's reason; any other (a
   * blocked device, a shadow or stage-2 miss) is recorded as the guest's tables explain it, or not at all when
   * they translate (the host's own business). Reports the host dropped set PFO.
   */
  poll(): void {
    if (this.frozen) return;
    this.pageRequests.poll();
    if (this.hostFaults === undefined) return;
    for (let round = 0; round < FAULT_ROUNDS; round++) {
      const batch = this.hostFaults.readFaultReports(this.options.vm.id, FAULT_BATCH);
      if (batch.lost > 0) this.faults.setStatus(Fsts.PFO);
      for (const report of batch.reports) this.hostFault(report);
      if (batch.reports.length < FAULT_BATCH) return;
    }
  }

  private hostFault(report: VtdHostFaultReport): void {
    const a = this.bindings.byRequesterId(report.requesterId);
    if (a === undefined || !this.bindings.translationEnabled) return;
    const slot = this.bindings.slotOf(a, report.pasid);
    if (slot !== undefined && slot.refusedReason !== 0 && slot.binding.kind === "blocked") {
      // The host refused the configuration the guest's entries ask for: the entry is one this unit cannot use.
      if (!(slot.context.fpd && (faultReason(slot.refusedReason)?.qualified ?? false))) this.recordDmaFault(a.guestRid, slot.context.pasid, slot.context.scalable, report.iova, report.write, slot.refusedReason);
      return;
    }
    if (slot !== undefined && report.stage === FaultStage.STAGE1 && slot.binding.kind === "nested") {
      const reason = report.record[3]! & 0xff;
      if (slot.context.fpd && (faultReason(reason)?.qualified ?? false)) return;
      this.recordDmaFault(a.guestRid, report.pasid === NO_PASID ? slot.context.pasid : report.pasid, true, report.iova, report.write, reason);
      return;
    }
    const t = this.walkOutcome;
    this.translator.translate(a.guestRid, report.pasid, report.iova, report.write, t);
    if (t.reportable) this.recordDmaFault(a.guestRid, t.pasid, t.scalable, report.iova, report.write, t.reason);
    else if (t.ok && slot === undefined) {
      // A PASID the guest's tables translate but the host holds nothing for: beyond what the host binds per
      // device (an entry this unit cannot use, 0x5B), or an entry the guest made present without the PASID-cache
      // invalidation caching mode requires (the unit still holds it not present, 0x59).
      const reason = a.pasidOverflow ? VtdFaultReason.PASID_TABLE_ENTRY_INV : VtdFaultReason.PASID_ENTRY_P;
      if (!(t.fpd && (faultReason(reason)?.qualified ?? false))) this.recordDmaFault(a.guestRid, t.pasid, true, report.iova, report.write, reason);
    }
  }

  // ---- devices ----

  assignDevice(device: DmaDevice, devId: number, guestRid: number): Result<void> {
    const assigned = this.assignDeviceOnly(device, devId, guestRid);
    if (assigned.ok && this.passthroughAudit !== undefined && isAuditableUnit(device.unit)) device.unit.setAuditor(device.requesterId, this.passthroughAudit);
    return assigned;
  }

  private assignDeviceOnly(device: DmaDevice, devId: number, guestRid: number): Result<void> {
    if (!isSourceId(guestRid)) return err("EINVAL", `guest requester id ${guestRid} is not a 16-bit source id`);
    if (this.bindings.devices.has(guestRid)) return err("EEXIST", `guest source id 0x${guestRid.toString(16)} already assigned`);
    const added = this.bindings.add(device, devId, guestRid);
    if (!added.ok) return fail(added);
    const a = added.value;
    // The device's MSIs carry whatever source id the guest sees it at now (renumbering moves it). Posting, the
    // MSI-X entry holds the host's posted message where the guest's IRTE allows one.
    const posted = this.posted;
    if (posted !== undefined) {
      device.msiTarget = (msi) => posted.signal(a, msi);
      posted.refresh([a]);
    } else device.msiTarget = (msi) => void this.deliverMsi(a.guestRid, msi);
    return ok();
  }

  /**
   * Hot-unplug: the device is detached (its DMA blocked), what the VMM built for it (nested HWPT, its share of
   * a shadow space) released, and its MSIs no longer reach the VM. Host fault reports still queued for it are
   * dropped when they arrive (no device owns them). ENOENT when nothing is at `guestRid`.
   */
  unassignDevice(guestRid: number): Result<void> {
    const removed = this.bindings.remove(guestRid);
    if (!removed.ok) return fail(removed);
    removed.value.device.msiTarget = undefined;
    this.stopAuditing(removed.value.device);
    this.pageRequests.forget(removed.value.devId);
    this.posted?.forget(removed.value.devId);
    return ok();
  }

  /**
   * Re-addressing: the device answers at `toRid` from now on, translated as the guest's root/context entries at
   * `toRid` say (blocked, with the guest's not-present fault, until the guest programs one there and flushes).
   * A shadow mapping refused while rebinding is in the host log; the device faults there.
   */
  renumberDevice(fromRid: number, toRid: number): Result<void> {
    const r = this.bindings.renumber(fromRid, toRid);
    if (!r.ok) return fail(r);
    const a = this.bindings.devices.get(toRid);
    if (a !== undefined) this.posted?.refresh([a]);
    return ok();
  }

  private stopAuditing(device: DmaDevice): void {
    if (this.passthroughAudit !== undefined && isAuditableUnit(device.unit)) device.unit.setAuditor(device.requesterId, undefined);
  }

  /** The invalidation queue (IQA/IQH/IQT) and the page request queue (PQA/PQH/PQT). */
  guestQueues(): GuestQueueView[] {
    return vtdGuestQueues(this.mmioBase, this.queue, this.prq);
  }

  /**
   * A value that is no address (negative, fractional, not finite) reaches no memory: translated, it takes the
   * fault an address beyond every width takes (recorded with FI 0); untranslated, it reaches nothing.
   */
  translateEmulated(guestRid: number, pasid: number, iova: number, write: boolean, out: WalkResult): void {
    const memory = this.options.vm.memory;
    const address = isDmaAddress(iova) ? iova : BEYOND_EVERY_WIDTH;
    if (this.mode === "ir-only" || !this.bindings.translationEnabled) {
      untranslated(out, iova, address === iova && memory.contains(address));
      return;
    }
    const t = this.walkOutcome;
    this.translator.translate(guestRid, pasid, address, write, t);
    copyWalkResult(t.walk, out);
    out.ok = t.ok;
    if (t.ok && !memory.contains(out.output)) {
      // A GPA outside RAM: no remapping fault, the access simply reaches nothing.
      out.ok = false;
      out.fault = WalkFault.AddressSize;
      return;
    }
    if (!t.ok) {
      if (out.fault === WalkFault.None) out.fault = WalkFault.Translation;
      if (t.reportable) this.recordDmaFault(guestRid, t.pasid, t.scalable, iova, write, t.reason);
    }
  }

  /**
   * A page request from an emulated device with PRI (VT-d §7.5): queued in the guest's page request queue when
   * its scalable-mode context allows page requests; otherwise recorded as the fault the context explains.
   */
  requestPage(guestRid: number, pasid: number, address: number, write: boolean, group: number, lastInGroup: boolean): boolean {
    // A value that is no address is no request a device could send.
    if (this.mode === "ir-only" || !this.bindings.translationEnabled || !isDmaAddress(address)) return false;
    const ctx = this.translator.resolve(guestRid, pasid, this.context);
    const reason = !ctx.scalable ? VtdFaultReason.RTADDR_TTM0_PAGE_REQ : ctx.kind === ContextKind.FAULT ? ctx.reason : !ctx.pre ? VtdFaultReason.SM_CONTEXT_PRE : 0;
    if (reason !== 0) {
      if (!(ctx.fpd && (faultReason(reason)?.qualified ?? false))) this.recordDmaFault(guestRid, ctx.pasid, ctx.scalable, address, write, reason, FaultRequestType.PAGE);
      return false;
    }
    return this.prq.submit({
      // Type 1 for a page request descriptor (the spec value; unverified in the sources, see page-request.ts).
      TYPE: 1,
      PP: pasid !== NO_PASID ? 1 : 0,
      RID: guestRid & 0xffff,
      PASID: pasid !== NO_PASID ? pasid & 0xfffff : 0,
      RR: write ? 0 : 1,
      WR: write ? 1 : 0,
      LPIG: lastInGroup ? 1 : 0,
      PRGI: group & 0x1ff,
      ADDR: faultPageAddress(address),
    });
  }

  // ---- interrupts ----

  deliverMsi(guestRid: number, msi: MsiMessage): InterruptResult {
    const outcome = this.remapper.remap(guestRid, msi);
    const result = outcome.result;
    if (result.ok) this.options.vm.inject(result.irq.vector, result.irq.destination, `msi:${guestRid.toString(16)}`);
    else if (!outcome.suppressed) {
      const recorded = this.faults.record({
        FI: interruptFaultInfo(result.fault.index ?? 0),
        SID: guestRid & 0xffff,
        FR: result.fault.code,
        T1: FaultRequestType.WRITE >>> 1,
      });
      if (recorded) this.stats.eventsInjected++;
    }
    return result;
  }

  // ---- firmware ----

  acpiTables(): AcpiTableBlob[] {
    const bytes = buildVtdDmar({
      hostAddressWidth: this.config.awBits,
      registerBase: this.mmioBase,
      includePciAll: this.instance === 0,
      endpoints: [...this.bindings.devices.keys()],
      interruptRemapping: this.config.intremap,
    });
    return [{ signature: "DMAR", bytes }];
  }

  // ---- migration ----

  freeze(): void {
    this.frozen = true;
  }

  thaw(): void {
    this.frozen = false;
    this.queue.process();
    this.poll();
  }

  save(): Uint8Array {
    return saveFrozen(this, () => encodeState(VTD_STATE_KIND, VTD_STATE_VERSION, snapshotVtdState(this) as unknown as StateValue));
  }

  /**
   * Restores the registers, latched tables and queues, then rebuilds the host side from the guest's tables, as
   * a destination VMM does (the guest's memory came with it). The stream is checked whole first — every
   * register against the bits it can hold, every index and pointer against the ring or record count this
   * device has, and (version 2) the CAP and ECAP the guest was given against this device's — so a corrupted,
   * forged or foreign state is EINVAL naming the field and changes nothing. Versions 1 and 2 are read (see
   * VTD_STATE_VERSION); another is EINVAL naming it.
   */
  restore(blob: Uint8Array): Result<void> {
    const decoded = decodeState(blob, VTD_STATE_KIND, VTD_STATE_VERSIONS);
    if (!decoded.ok) return fail(decoded);
    const parsed = parseVtdState(decoded.value.value, this.stateLimits, decoded.value.version);
    if (!parsed.ok) return fail(parsed);
    const wasFrozen = this.frozen;
    this.frozen = true;
    applyVtdState(this, parsed.value, this.stateLimits.eim);
    this.bindings.translationEnabled = (this.registers.gsts & Gsts.TES) !== 0;
    // A shadow mapping refused while rebuilding is in the host log; the device faults there.
    this.bindings.refresh(() => true);
    this.posted?.refresh(this.bindings.devices.values());
    this.frozen = wasFrozen;
    if (!wasFrozen) this.queue.process();
    return ok();
  }

  destroy(): void {
    for (const a of this.bindings.devices.values()) {
      a.device.msiTarget = undefined;
      this.stopAuditing(a.device);
    }
    this.bindings.destroy();
    // After the HWPTs that report to it: they hold the fault queue.
    this.pageRequests.destroy();
    this.posted?.destroy();
    if (this.mapping !== undefined) this.options.vm.unmapMmio(this.mapping);
    this.mapping = undefined;
  }
}

/** Whether a domain-selective invalidation of `did` covers what the host holds for `a` (at its RID or a PASID). */
function coversDid(a: AssignedDevice, did: number): boolean {
  if (a.context.did === did) return true;
  for (const slot of a.pasids.values()) if (slot.context.did === did) return true;
  return false;
}

/** Whether an invalidation of (`did`, `pasid`) covers what the host holds for `a`. */
function coversPasid(a: AssignedDevice, did: number, pasid: number): boolean {
  if (a.context.did === did && a.context.pasid === pasid) return true;
  const slot = a.pasids.get(pasid);
  return slot !== undefined && slot.context.did === did;
}

/** An integer above every input width the unit has (its walks answer it with their width fault). */
const BEYOND_EVERY_WIDTH = 2 ** 64;

/** A descriptor whose invalidation the host did not fully carry out is an invalidation queue error. */
function done(refused: IommuError | undefined): DescriptorOutcome {
  return refused === undefined ? DONE : REFUSED_BY_HOST;
}

function untranslated(out: WalkResult, iova: number, inRam: boolean): void {
  out.ok = inRam;
  out.mapped = inRam;
  out.output = iova;
  out.pageShift = 12;
  out.perms = Perm.ReadWrite;
  out.fault = inRam ? WalkFault.None : WalkFault.AddressSize;
  out.stage = 1;
  out.level = 0;
  out.faultInput = iova;
  out.tableFetch = false;
  out.fetches = 0;
}
