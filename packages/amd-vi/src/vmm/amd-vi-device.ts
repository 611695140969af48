import {
  err,
  Errno,
  fail,
  HostServices,
  NO_PASID,
  ok,
  parseVevents,
  Perm,
  PrivatePageMap,
  resolveToken,
  saveFrozen,
  StaleTranslationAudit,
  veventsLost,
  WalkFault,
  type AcpiTableBlob,
  type DmaDevice,
  type EmulatedIommu,
  type GuestQueueView,
  type InterruptResult,
  type MmioHandler,
  type MsiMessage,
  type Result,
  type ShadowReporter,
  type TranslationMode,
  type VeventqFile,
  type VmmDeviceOptions,
  type VmmStats,
  type WalkResult,
} from "@viommu/core";
import { CommandOpcode, commandOpcode, commandProblem, decodeInvalidationRange, newInvalidationRange, COMMAND_BYTES } from "../format/command.js";
import { controlLayout } from "../format/control-register.js";
import { isAddress64, isDeviceId, isPasid, isPprTag } from "../format/bus-values.js";
import { DTE_BYTES } from "../format/device-table-entry.js";
import { decodeExclusionRange, newExclusionRange } from "../format/exclusion-registers.js";
import { EVENT_BYTES } from "../format/event-log-entry.js";
import { commandHardwareErrorEvent, devTabHardwareErrorEvent, dmaFaultEvent, illegalCommandEvent, illegalDteEvent } from "../format/fault-event.js";
import {
  AMD_INVALIDATE_ENTRY_BYTES,
  decodeViommuAmd,
  encodeViommuAmd,
  IOMMU_VEVENTQ_TYPE_AMD,
  IOMMU_VEVENTQ_TYPE_AMD_CMD_INTERCEPT,
  IOMMU_VIOMMU_INVALIDATE_DATA_AMD,
  IOMMU_VIOMMU_TYPE_AMD,
  VIOMMU_AMD_BYTES,
} from "../format/iommufd-uapi.js";
import { AMDVI_MMIO_SIZE, MmioOffset } from "../format/mmio-register-map.js";
import { buildPageServiceRequest, PprFlag, PPR_TAG_LAST } from "../format/ppr-log-entry.js";
import { RING_POINTER_MASK_16 } from "../format/ring-pointer-registers.js";
import { STATUS_W1C_MASK, StatusBit } from "../format/status-register.js";
import { isAmdHwViommu, VF_MMIO_BYTES, VF_MMIO_GUEST_OFFSET, type AmdHwViommuOps } from "../format/vf-mmio.js";
import { DeviceEntryHandler, type AssignedDevice } from "./device-entry-handler.js";
import { emulatedFeatures, type EmulatedFeatures } from "./emulated-features.js";
import { GuestDteWalker, newDteWalkOutcome, type DeviceTableLocation } from "./guest-dte-walker.js";
import { GuestLogRing } from "./guest-log-ring.js";
import { amdViGuestQueues } from "./guest-queue-views.js";
import { AmdViPciFunction, type MsiRegisters } from "./pci-function.js";
import { InterruptRemapper, type RemapSettings } from "./interrupt-remapper.js";
import { PageRequestRelay, samePasid } from "./page-request-relay.js";
import { PostedInterrupts } from "./posted-interrupts.js";
import { isAmdVapicPosting } from "../format/vapic-posting.js";
import { buildIvrs, IVHD_FLAGS } from "./ivrs-builder.js";
import { amdViDeviceConfig, type AmdViDeviceConfig } from "./device-properties.js";
import { AmdViUnit } from "../hw/amd-vi-unit.js";
import { GuestDteState } from "../hw/guest-dte-view.js";
import { auditInterruptHit } from "./interrupt-audit.js";
import { decodeDeviceState, encodeDeviceState, type DeviceRegisters, type DeviceState } from "./device-state.js";

/** Where the VMM puts the register block: QEMU's AMDVI_BASE_ADDR, 64 KiB apart per instance. */
export const AMDVI_DEFAULT_MMIO_BASE = 0xfed8_0000;

/** AMD-Vi specific VMM options. */
export interface AmdViDeviceOptions extends VmmDeviceOptions {
  /**
   * Nested mode: who runs the guest's command buffer and event log. "hw-vqueue" (the default unless
   * `eventInterrupts` is "vmm"): the hardware vIOMMU, through stage 2, no exits. "trapped": the VMM.
   */
  readonly commandBuffer?: "trapped" | "hw-vqueue";
  /** Advertise 2048 interrupts per device (EFR2.NumIntRemapSup, QEMU's numint2k). */
  readonly twoKInterrupts?: boolean;
  /**
   * PASID width offered in nested mode (EFR.PASmax + 1): 20, the specification's maximum, by default; 16 for
   * real Linux guests, which refuse more (see emulated-features.ts).
   */
  readonly pasidBits?: number;
}

const bit = (name: Parameters<typeof controlLayout.field>[0]): number => controlLayout.field(name).bit;
const C_IOMMU_EN = bit("IommuEn");
const C_EVENT_LOG_EN = bit("EventLogEn");
const C_EVENT_INT_EN = bit("EventIntEn");
const C_COM_WAIT_INT_EN = bit("ComWaitIntEn");
const C_CMD_BUF_EN = bit("CmdBufEn");
const C_PPR_LOG_EN = bit("PPRLogEn");
const C_PPR_INT_EN = bit("PPRIntEn");
const C_GA_EN = bit("GAEn");
const C_XT_EN = bit("XTEn");
const C_INT_CAP_XT_EN = bit("IntCapXTEn");
const C_NUM_INT_REMAP = bit("NumIntRemapMode");
/** Writable bits of the base registers: address [51:12] and length [59:56]. */
const RING_BASE_MASK = 0x0f0f_ffff_ffff_f000n;
const DEVTAB_BASE_MASK = 0x000f_ffff_ffff_f1ffn;
const IOMMU_DEVICE_ID = 0x0002;
/** The MSI capability header's MMIO mirror (spec: MSI Capability Header Register, with EFR.MsiCapMmioSup). */
const MSI_CAPABILITY_HEADER = 0x158;
/** The MSI capability's MMIO mirror (EFR.MsiCapMmioSup): 32-bit registers at 0x158–0x167. */
const MSI_AREA_START = 0x158;
const MSI_AREA_END = 0x168;
const U64 = 0xffff_ffff_ffff_ffffn;

/**
 * The guest-visible AMD IOMMU a VMM emulates for one VM: the 16 KiB register block, the command buffer
 * (trapped, or owned by the hardware vIOMMU), the event and PPR logs with their overflow and interrupt
 * rules, interrupt remapping through the guest's IRTs, nested / shadow / IR-only translation through
 * iommufd, the emulated-device path, the IVRS, and save/restore.
 *
 * Guest structures are read only where the host may read them. For an SEV-SNP guest, a structure left in
 * private memory is refused visibly: a command buffer → CmdBufEn stays without CmdBufRun and
 * COMMAND_HARDWARE_ERROR is logged; an event log → EventLogEn stays without EventLogRun (nothing can be
 * logged); a completion-wait semaphore → COMMAND_HARDWARE_ERROR and the buffer halts; a DTE →
 * DEV_TAB_HARDWARE_ERROR and the device stays blocked; an interrupt table → PAGE_TAB_HARDWARE_ERROR (I set)
 * and the interrupt is blocked. `refusals` counts them by structure.
 */
export class AmdViDevice implements EmulatedIommu {
  readonly vendor = "amd-vi";
  readonly mode: TranslationMode;
  readonly mmioBase: number;
  readonly stats: VmmStats = { trapped: 0, forwarded: 0, eventsInjected: 0, shadowMappings: 0 };
  readonly refusals = { commandBuffer: 0, eventLog: 0, semaphore: 0, deviceTable: 0, interruptTable: 0 };
  /** Page requests answered by COMPLETE_PPR_REQUEST, for the emulated devices that asked. */
  readonly pprResponses: { deviceId: number; tag: number; status: number }[] = [];
  readonly features: EmulatedFeatures;
  /** What the device properties (QEMU's names) make of it. */
  readonly config: AmdViDeviceConfig;
  /** Commands the hardware vIOMMU handed to this VMM (DTE changes): hypervisor interventions without a VM exit. */
  interceptsHandled = 0;
  frozen = false;

  private regs: DeviceRegisters = {
    devTabBase: 0n,
    cmdBase: 0n,
    evtBase: 0n,
    pprBase: 0n,
    control: 0n,
    exclusionBase: 0n,
    exclusionLimit: 0n,
    gaLogBase: 0n,
    gaLogTail: 0n,
    msiAddressLow: 0,
    msiAddressHigh: 0,
    msiData: 0,
    msiEnabled: false,
    pciCommand: 0,
    xtEvent: 0n,
    xtPpr: 0n,
    xtGa: 0n,
    status: 0,
    cmdHead: 0,
    cmdTail: 0,
    cmdHalted: false,
  };
  private readonly evt = new GuestLogRing();
  private readonly ppr = new GuestLogRing();
  /** The Device Table Base Address Register's reset value 0 describes a table: 4 KiB (Size 0, 128 entries) at 0. */
  private readonly devtab: DeviceTableLocation = { base: 0, entries: 128, exclusion: newExclusionRange() };
  private readonly remapper: InterruptRemapper;
  private readonly walker: GuestDteWalker;
  private readonly walkOutcome = newDteWalkOutcome();
  private readonly entries: DeviceEntryHandler;
  private readonly assigned = new Map<number, AssignedDevice>();
  private readonly range = newInvalidationRange();
  private readonly scratch = new Uint32Array(4);
  /** The one IOMMU_HWPT_INVALIDATE entry a trapped invalidation forwards (its words and its bytes, one buffer). */
  private readonly forwardEntry = new Uint8Array(AMD_INVALIDATE_ENTRY_BYTES);
  private readonly forwardWords = new Uint32Array(this.forwardEntry.buffer);
  /** CommandBufferBase decoded (see `decodeCommandBase`); raw −1n: not yet. */
  private readonly cmdRing = { raw: -1n, bytes: 0, base: 0 };
  private viommuId: number | undefined;
  private hw: AmdHwViommuOps | undefined;
  private veventq: { id: number; file: VeventqFile } | undefined;
  private intercepts: { id: number; file: VeventqFile } | undefined;
  private lastSequence = -1;
  /** Passthrough devices' page requests (nested): the HWPT fault queue relayed into the guest's PPR log. */
  private pageRequests: PageRequestRelay | undefined;
  /** Passthrough devices' interrupts posted to the vCPUs through the host IOMMU (deviceInterrupts "posted"). */
  private posted: PostedInterrupts | undefined;
  /** Page requests of the VMM's own emulated devices no COMPLETE_PPR_REQUEST has answered yet: DeviceID:group → PASID. */
  private readonly emulatedRequests = new Map<string, number | undefined>();
  /** Guest DeviceID → its vDEVICE (nested mode). */
  private readonly vdeviceIds = new Map<number, number>();
  private readonly unmaps: (() => void)[] = [];
  private readonly queueViews: GuestQueueView[];
  /** The IOMMU's own PCI function (configuration space), at the DeviceID the IVHD names. */
  readonly pci: AmdViPciFunction;
  /** The host log, as this device signs its entries. */
  private readonly reporter: ShadowReporter;
  /**
   * The stale-translation audit (VmmDeviceOptions.audit), nested mode: the host unit checks every IOTLB hit of a
   * passthrough device, and every use of a nested domain whose guest DTE has since changed, against a walk from
   * the guest's DTE as it is now; the VMM's own IRTE cache checks each hit against the guest's IRT.
   */
  readonly audit: StaleTranslationAudit | undefined;

  private constructor(readonly options: AmdViDeviceOptions) {
    this.mode = options.mode;
    this.mmioBase = options.mmioBase ?? AMDVI_DEFAULT_MMIO_BASE + (options.instance ?? 0) * 0x10000;
    this.config = amdViDeviceConfig(options.properties);
    this.features = emulatedFeatures(options.mode, options.twoKInterrupts ?? false, options.pasidBits, this.config.xtsup);
    this.remapper = new InterruptRemapper(options.vm.memory);
    this.walker = new GuestDteWalker(options.vm.memory);
    const host = resolveToken(options.vm.container, HostServices);
    this.reporter = { log: host.log, vm: options.vm.id, source: `amd-vi@0x${this.mmioBase.toString(16)}` };
    const audit = options.audit === true ? new StaleTranslationAudit(host.events, host.clock) : undefined;
    this.audit = audit;
    if (audit !== undefined) {
      const site = { vm: options.vm.id, unit: this.reporter.source };
      this.remapper.auditHit = (deviceId, index, cached, now) => void auditInterruptHit(audit, { ...site, rid: deviceId, index }, cached, now);
    }
    this.entries = new DeviceEntryHandler(options, {
      viommuId: () => this.viommuId,
      faultId: () => this.pageRequests?.faultId,
      logEvent: (record) => this.logEvent(record),
      reporter: this.reporter,
    });
    const regs = (): DeviceRegisters => this.regs;
    const msi: MsiRegisters = {
      get enabled() {
        return regs().msiEnabled;
      },
      set enabled(on: boolean) {
        regs().msiEnabled = on;
      },
      get addressLow() {
        return regs().msiAddressLow;
      },
      set addressLow(v: number) {
        regs().msiAddressLow = v;
      },
      get addressHigh() {
        return regs().msiAddressHigh;
      },
      set addressHigh(v: number) {
        regs().msiAddressHigh = v;
      },
      get data() {
        return regs().msiData;
      },
      set data(v: number) {
        regs().msiData = v;
      },
    };
    this.pci = new AmdViPciFunction({ bdf: this.iommuDeviceId, mmioBase: this.mmioBase, msi, onMsiChange: () => this.msiChanged(), command: { get: () => this.regs.pciCommand, set: (v) => void (this.regs.pciCommand = v) }, iotlbSup: this.config.deviceIotlb });
    this.queueViews = amdViGuestQueues(this.mmioBase, {
      command: { baseRegister: () => this.regs.cmdBase, enabled: () => this.controlBit(C_CMD_BUF_EN) },
      event: { baseRegister: () => this.regs.evtBase, enabled: () => this.controlBit(C_EVENT_LOG_EN) },
      ppr: { baseRegister: () => this.regs.pprBase, enabled: () => this.controlBit(C_PPR_LOG_EN) },
    });
  }

  /** Maps the register block and, in nested mode, allocates the vIOMMU (a hardware vIOMMU for "hw-vqueue"). */
  static create(options: AmdViDeviceOptions): Result<AmdViDevice> {
    const base = options.mmioBase ?? AMDVI_DEFAULT_MMIO_BASE + (options.instance ?? 0) * 0x10000;
    // The capability's Base Address registers hold bits [63:14]: the register block is 16 KiB aligned.
    if (!Number.isSafeInteger(base) || base < 0 || base % AMDVI_MMIO_SIZE !== 0) return err("EINVAL", `MMIO base 0x${base.toString(16)} is not 16 KiB aligned`);
    const device = new AmdViDevice(options);
    const r = device.setUp();
    if (!r.ok) {
      device.destroy();
      return fail(r);
    }
    return ok(device);
  }

  private get ctx(): VmmDeviceOptions["iommufd"] {
    return this.options.iommufd;
  }

  private get memory(): VmmDeviceOptions["vm"]["memory"] {
    return this.options.vm.memory;
  }

  private get hwQueues(): boolean {
    return this.options.mode === "nested" && (this.options.commandBuffer ?? (this.options.eventInterrupts === "vmm" ? "trapped" : "hw-vqueue")) === "hw-vqueue";
  }

  private setUp(): Result<void> {
    const vm = this.options.vm;
    // A confidential VM's private pages are the RMP's to guard (what KVM's SNP launch sets up; see report): device
    // DMA and the unit's checks then refuse them.
    if (vm.memory.confidential) {
      const rmp = PrivatePageMap.of(resolveToken(vm.container, HostServices).memory);
      rmp.enroll(vm.memory);
      this.unmaps.push(() => rmp.withdraw(vm.memory));
    }
    if (this.options.deviceInterrupts === "posted") {
      const unit = this.options.unit;
      if (!isAmdVapicPosting(unit)) return err("EOPNOTSUPP", "the host IOMMU cannot post interrupts (no vAPIC mode)");
      this.posted = new PostedInterrupts({
        posting: unit,
        host: resolveToken(vm.container, HostServices).memory,
        vm,
        resolve: (guestRid, msi) => this.remapper.remap(this.devtab, this.remapSettings, guestRid, msi),
        tableEntries: (guestRid) => this.remapper.tableEntries(this.devtab, this.remapSettings, guestRid),
        twoK: () => this.remapSettings.twoK,
      });
    }
    // The IOMMU is a PCI function too (at the IVHD's DeviceID): its configuration space goes on the VM's bus.
    const fn = vm.mapPciFunction(this.pci.bdf, this.pci);
    if (!fn.ok) return fail(fn);
    this.unmaps.push(() => fn.value.unmap());
    const trapped: MmioHandler = { read: (o, s) => this.readRegister(o, s), write: (o, s, v) => this.writeRegister(o, s, v) };
    if (this.options.mode === "nested") {
      const v = this.setUpViommu();
      if (!v.ok) return v;
    }
    if (this.hw === undefined) {
      const m = vm.mapMmio(this.mmioBase, AMDVI_MMIO_SIZE, trapped, { name: "amd-vi" });
      if (!m.ok) return fail(m);
      this.unmaps.push(() => vm.unmapMmio(m.value));
      return ok();
    }
    // The VF-MMIO page replaces the third 4 KiB page: ring pointers and Status are the hardware's.
    const low = vm.mapMmio(this.mmioBase, VF_MMIO_GUEST_OFFSET, trapped, { name: "amd-vi" });
    if (!low.ok) return fail(low);
    this.unmaps.push(() => vm.unmapMmio(low.value));
    const offset = decodeViommuAmd(this.viommuData).outVfmmioMmapOffset;
    const page = this.ctx.mmap({ offset, length: VF_MMIO_BYTES, shared: true, prot: { read: true, write: true } });
    if (!page.ok) return fail(page);
    this.unmaps.push(() => page.value.unmap());
    const direct = vm.mapMmio(this.mmioBase + VF_MMIO_GUEST_OFFSET, VF_MMIO_BYTES, page.value.region, { direct: true, name: "amd-vi-vf-mmio" });
    if (!direct.ok) return fail(direct);
    this.unmaps.push(() => vm.unmapMmio(direct.value));
    const highStart = VF_MMIO_GUEST_OFFSET + VF_MMIO_BYTES;
    const high: MmioHandler = { read: (o, s) => this.readRegister(o + highStart, s), write: (o, s, v) => this.writeRegister(o + highStart, s, v) };
    const upper = vm.mapMmio(this.mmioBase + highStart, AMDVI_MMIO_SIZE - highStart, high, { name: "amd-vi" });
    if (!upper.ok) return fail(upper);
    this.unmaps.push(() => vm.unmapMmio(upper.value));
    this.hw.setInterruptPost((vector, destination) => vm.interrupts.deliver(vector, destination, "direct", "amd-vi-event"));
    return ok();
  }

  /** The user's `iommu_viommu_amd`, which viommu_init fills with out_gid and out_vfmmio_mmap_offset. */
  private readonly viommuData = new Uint8Array(VIOMMU_AMD_BYTES);

  private setUpViommu(): Result<void> {
    const hwq = this.hwQueues;
    if (hwq) this.viommuData.set(encodeViommuAmd({ iommuDevid: IOMMU_DEVICE_ID, viommuDevid: IOMMU_DEVICE_ID + (this.options.instance ?? 0) * 8 }));
    const v = this.ctx.viommuAlloc({
      flags: 0,
      type: IOMMU_VIOMMU_TYPE_AMD,
      devId: this.options.anchorDevId,
      hwptId: this.options.parentHwptId,
      data: hwq ? { type: IOMMU_VIOMMU_TYPE_AMD, bytes: this.viommuData } : undefined,
    });
    if (!v.ok) return fail(v);
    this.viommuId = v.value;
    const relay = PageRequestRelay.create(this.ctx, {
      guestRidOf: (devId) => [...this.assigned.values()].find((a) => a.devId === devId)?.guestRid,
      log: (record) => this.logPageRequest(record),
      reporter: this.reporter,
    });
    if (!relay.ok) return fail(relay);
    this.pageRequests = relay.value;
    if (hwq) {
      const ops = this.ctx.viommu(v.value);
      if (!ops.ok || !isAmdHwViommu(ops.value.ops)) return err("EOPNOTSUPP", "the host did not give a hardware vIOMMU");
      this.hw = ops.value.ops;
      const q = this.ctx.veventqAlloc({ flags: 0, viommuId: v.value, type: IOMMU_VEVENTQ_TYPE_AMD_CMD_INTERCEPT, depth: 16 });
      if (!q.ok) return fail(q);
      this.intercepts = { id: q.value.id, file: q.value.file };
      // The hardware waits at the intercepted command: handle it at once (the hypervisor's wakeup).
      q.value.file.queue.onReadable = () => this.handleIntercepts();
    } else {
      const q = this.ctx.veventqAlloc({ flags: 0, viommuId: v.value, type: IOMMU_VEVENTQ_TYPE_AMD, depth: 256 });
      if (!q.ok) return fail(q);
      this.veventq = { id: q.value.id, file: q.value.file };
    }
    return ok();
  }

  // ---- devices ----

  assignDevice(device: DmaDevice, devId: number, guestRid: number): Result<void> {
    if (!isDeviceId(guestRid)) return err("EINVAL", `guest DeviceID ${guestRid} is not 16-bit`);
    if (this.assigned.has(guestRid)) return err("EEXIST", `guest DeviceID 0x${guestRid.toString(16)} already assigned`);
    const vdev = this.allocVdevice(devId, guestRid);
    if (!vdev.ok) return vdev;
    return this.place(device, devId, guestRid);
  }

  /** The vDEVICE (virtual DeviceID → physical device) where the host has a vIOMMU. */
  private allocVdevice(devId: number, guestRid: number): Result<void> {
    if (this.viommuId === undefined) return ok();
    const vdev = this.ctx.vdeviceAlloc({ viommuId: this.viommuId, devId, virtId: guestRid });
    if (!vdev.ok) return fail(vdev);
    this.vdeviceIds.set(guestRid, vdev.value);
    return ok();
  }

  private dropVdevice(guestRid: number): void {
    const id = this.vdeviceIds.get(guestRid);
    if (id === undefined) return;
    this.vdeviceIds.delete(guestRid);
    this.ctx.destroy(id);
  }

  /** Makes the device visible at `guestRid`: MSIs routed there, DMA as the guest's DTE at `guestRid` says. */
  private place(device: DmaDevice, devId: number, guestRid: number): Result<void> {
    const a: AssignedDevice = { device, devId, guestRid, hwptId: undefined, lastDte: undefined, shadow: undefined, attachedTo: undefined };
    this.assigned.set(guestRid, a);
    const posted = this.posted;
    device.msiTarget = posted === undefined ? (msi) => void this.deliverMsi(guestRid, msi) : (msi) => void (posted.deliver(device, guestRid, msi) || this.deliverMsi(guestRid, msi));
    this.remapper.invalidateDevice(guestRid);
    this.startAudit(device, guestRid);
    const r = this.entries.refresh(a, this.translationOn(), this.devtab);
    this.stats.shadowMappings = this.entries.shadowMappings;
    this.posted?.refresh(device, guestRid);
    return r;
  }

  /** Drops the device's attachments (its DMA is blocked) and MSI route; the vDEVICE is the caller's. */
  private remove(guestRid: number): AssignedDevice | undefined {
    const a = this.assigned.get(guestRid);
    if (a === undefined) return undefined;
    this.entries.release(a);
    this.stopAudit(a.device);
    this.remapper.invalidateDevice(guestRid);
    a.device.msiTarget = undefined;
    this.posted?.drop(guestRid);
    this.assigned.delete(guestRid);
    this.stats.shadowMappings = this.entries.shadowMappings;
    return a;
  }

  unassignDevice(guestRid: number): Result<void> {
    const a = this.remove(guestRid);
    if (a === undefined) return err("ENOENT", `no device at guest DeviceID ${guestRid}`);
    this.dropVdevice(guestRid);
    return ok();
  }

  /**
   * The device moves to `toRid`: blocked, its vDEVICE re-created with the new virtual id (iommufd has no
   * vDEVICE renumbering), then translated as the guest's DTE at `toRid` says, which until the guest programs
   * it is whatever that DTE holds (Linux's blocked V = TV = 1 entry; an all-zero one passes DMA untranslated,
   * as V = 0 does on the hardware).
   */
  renumberDevice(fromRid: number, toRid: number): Result<void> {
    if (!isDeviceId(toRid)) return err("EINVAL", `guest DeviceID ${toRid} is not 16-bit`);
    const a = this.assigned.get(fromRid);
    if (a === undefined) return err("ENOENT", `no device at guest DeviceID ${fromRid}`);
    if (fromRid === toRid) return ok();
    if (this.assigned.has(toRid)) return err("EEXIST", `guest DeviceID 0x${toRid.toString(16)} already assigned`);
    this.remove(fromRid);
    this.dropVdevice(fromRid);
    const moved = this.allocVdevice(a.devId, toRid);
    if (!moved.ok) {
      // Back where it was, so a refused renumbering leaves the device as the guest knew it.
      const back = this.allocVdevice(a.devId, fromRid);
      if (back.ok) this.place(a.device, a.devId, fromRid);
      return moved;
    }
    return this.place(a.device, a.devId, toRid);
  }

  /** Has the host unit audit the device's translations against the guest's DTE at `guestRid` (nested mode). */
  private startAudit(device: DmaDevice, guestRid: number): void {
    const audit = this.audit;
    const unit = this.options.unit;
    if (audit === undefined || this.mode !== "nested" || !(unit instanceof AmdViUnit)) return;
    unit.auditDevice(device.requesterId, {
      audit,
      vm: this.options.vm.id,
      guestRid,
      guestDte: (out) => {
        if (!this.translationOn()) return GuestDteState.Untranslated;
        const at = this.devtab.base + guestRid * DTE_BYTES;
        if (!(guestRid < this.devtab.entries) || !this.memory.hostReadable(at, DTE_BYTES)) return GuestDteState.Blocked;
        this.memory.readWords(at, out);
        return GuestDteState.Entry;
      },
    });
  }

  private stopAudit(device: DmaDevice): void {
    const unit = this.options.unit;
    if (this.audit !== undefined && unit instanceof AmdViUnit) unit.auditDevice(device.requesterId, undefined);
  }

  guestQueues(): GuestQueueView[] {
    return [...this.queueViews];
  }

  private translationOn(): boolean {
    return this.controlBit(C_IOMMU_EN) && this.options.mode !== "ir-only";
  }

  /**
   * Every device re-derived from its DTE (translation switched on or off, a restore). There is no command to
   * fail here: what the host refuses is in the host log (and, for a DTE, an ILLEGAL_DEV_TABLE_ENTRY event).
   */
  private refreshAll(): void {
    for (const a of this.assigned.values()) this.entries.refresh(a, this.translationOn(), this.devtab);
    this.stats.shadowMappings = this.entries.shadowMappings;
    this.posted?.refreshAll();
  }

  // ---- registers ----

  /** Control as two 32-bit halves (kept with `regs.control`), so the queue loop tests bits without BigInt. */
  private controlLo = 0;
  private controlHi = 0;

  private controlBit(b: number): boolean {
    return b < 32 ? ((this.controlLo >>> b) & 1) === 1 : ((this.controlHi >>> (b - 32)) & 1) === 1;
  }

  private setControlValue(value: bigint): void {
    // GAEn, XTEn and NumIntRemapMode change what an IRTE means: nothing read under the old Control is kept.
    if (value !== this.regs.control) this.remapper.invalidateAll();
    this.regs.control = value;
    this.controlLo = Number(value & 0xffff_ffffn);
    this.controlHi = Number((value >> 32n) & 0xffff_ffffn);
  }

  private readRegister(offset: number, size: 4 | 8): bigint {
    if (offset >= MSI_AREA_START && offset < MSI_AREA_END) {
      const lo = this.register32(offset & ~3);
      return size === 8 ? lo | (this.register32((offset & ~3) + 4) << 32n) : lo;
    }
    const value = this.registerValue(offset & ~7);
    return size === 8 ? value : (offset & 4 ? value >> 32n : value) & 0xffff_ffffn;
  }

  private register32(offset: number): bigint {
    switch (offset) {
      case MSI_CAPABILITY_HEADER:
        return BigInt(this.pci.msiHeader());
      case MmioOffset.MsiAddressLow:
        return BigInt(this.regs.msiAddressLow);
      case MmioOffset.MsiAddressHigh:
        return BigInt(this.regs.msiAddressHigh);
      case MmioOffset.MsiData:
        return BigInt(this.regs.msiData);
      default:
        return 0n;
    }
  }

  /** Status as the guest reads it: sticky bits and the run bits. */
  private get statusValue(): number {
    let s = this.regs.status;
    if (this.commandsRun) s |= StatusBit.CmdBufRun;
    if (this.eventsRun) s |= StatusBit.EventLogRun;
    if (this.pprRun) s |= StatusBit.PPRLogRun;
    return s;
  }

  private registerValue(offset: number): bigint {
    const r = this.regs;
    switch (offset) {
      case MmioOffset.DeviceTableBase:
        return r.devTabBase;
      case MmioOffset.CommandBufferBase:
        return r.cmdBase;
      case MmioOffset.EventLogBase:
        return r.evtBase;
      case MmioOffset.Control:
        return r.control;
      case MmioOffset.ExclusionBase:
        return r.exclusionBase;
      case MmioOffset.ExclusionLimit:
        return r.exclusionLimit | 0xfffn;
      case MmioOffset.ExtendedFeature:
        return this.features.efr;
      case MmioOffset.PprLogBase:
        return r.pprBase;
      case MmioOffset.GaLogBase:
        return r.gaLogBase;
      case MmioOffset.GaLogTailAddress:
        return r.gaLogTail;
      case MmioOffset.XtGeneralInterruptControl:
        return r.xtEvent;
      case MmioOffset.XtPprInterruptControl:
        return r.xtPpr;
      case MmioOffset.XtGaLogInterruptControl:
        return r.xtGa;
      case MmioOffset.ExtendedFeature2:
        return this.features.efr2;
      case MmioOffset.CommandBufferHead:
        return BigInt(r.cmdHead);
      case MmioOffset.CommandBufferTail:
        return BigInt(r.cmdTail);
      case MmioOffset.EventLogHead:
        return BigInt(this.evt.head);
      case MmioOffset.EventLogTail:
        return BigInt(this.evt.tail);
      case MmioOffset.Status:
        return BigInt(this.statusValue);
      case MmioOffset.PprLogHead:
        return BigInt(this.ppr.head);
      case MmioOffset.PprLogTail:
        return BigInt(this.ppr.tail);
      default:
        return 0n;
    }
  }

  /** Register writes; read-only registers and reserved offsets ignore them, as the hardware does. */
  private writeRegister(offset: number, size: 4 | 8, raw: bigint): void {
    if (offset >= MSI_AREA_START && offset < MSI_AREA_END) {
      this.write32(offset & ~3, Number(raw & 0xffff_ffffn));
      if (size === 8) this.write32((offset & ~3) + 4, Number((raw >> 32n) & 0xffff_ffffn));
      return;
    }
    const aligned = offset & ~7;
    // Status is W1C in its low half; the upper halves of the pointer registers are reserved.
    if (size === 4 && offset & 4 && aligned >= MmioOffset.CommandBufferHead) return;
    let value = raw & U64;
    if (size === 4) {
      const old = aligned === MmioOffset.Status ? 0n : this.registerValue(aligned);
      value = offset & 4 ? (old & 0xffff_ffffn) | ((raw & 0xffff_ffffn) << 32n) : (old & ~0xffff_ffffn) | (raw & 0xffff_ffffn);
    }
    const r = this.regs;
    switch (aligned) {
      case MmioOffset.DeviceTableBase:
        r.devTabBase = value & DEVTAB_BASE_MASK;
        this.remapper.invalidateAll();
        this.devtab.base = Number(r.devTabBase & 0x000f_ffff_ffff_f000n);
        this.devtab.entries = (Number(r.devTabBase & 0x1ffn) + 1) * 128;
        return;
      case MmioOffset.CommandBufferBase:
        r.cmdBase = value & RING_BASE_MASK;
        r.cmdHead = 0;
        r.cmdTail = 0;
        r.cmdHalted = false;
        this.forwardQueue("command", r.cmdBase);
        return;
      case MmioOffset.EventLogBase:
        r.evtBase = value & RING_BASE_MASK;
        this.evt.program(r.evtBase);
        this.forwardQueue("event", r.evtBase);
        return;
      case MmioOffset.PprLogBase:
        r.pprBase = value & RING_BASE_MASK;
        this.ppr.program(r.pprBase);
        this.forwardQueue("ppr", r.pprBase);
        return;
      case MmioOffset.Control:
        return this.writeControl(value);
      case MmioOffset.ExclusionBase:
        r.exclusionBase = value & 0x000f_ffff_ffff_f003n;
        return this.exclusionChanged();
      case MmioOffset.ExclusionLimit:
        r.exclusionLimit = value & 0x000f_ffff_ffff_f000n;
        return this.exclusionChanged();
      case MmioOffset.GaLogBase:
        r.gaLogBase = value & RING_BASE_MASK;
        return;
      case MmioOffset.GaLogTailAddress:
        r.gaLogTail = value & 0x000f_ffff_ffff_fff8n;
        return;
      case MmioOffset.XtGeneralInterruptControl:
        r.xtEvent = value;
        this.hw?.setGuestRegister(MmioOffset.XtGeneralInterruptControl, value);
        return;
      case MmioOffset.XtPprInterruptControl:
        r.xtPpr = value;
        this.hw?.setGuestRegister(MmioOffset.XtPprInterruptControl, value);
        return;
      case MmioOffset.XtGaLogInterruptControl:
        r.xtGa = value;
        return;
      case MmioOffset.CommandBufferHead:
        r.cmdHead = this.pointer(value, this.commandBytes);
        this.processCommands();
        return;
      case MmioOffset.CommandBufferTail:
        r.cmdTail = this.pointer(value, this.commandBytes);
        this.processCommands();
        return;
      case MmioOffset.EventLogHead:
        this.evt.head = this.pointer(value, this.evt.bytes);
        return;
      case MmioOffset.EventLogTail:
        if (!this.eventsRun) this.evt.tail = this.pointer(value, this.evt.bytes);
        return;
      case MmioOffset.PprLogHead:
        this.ppr.head = this.pointer(value, this.ppr.bytes);
        return;
      case MmioOffset.PprLogTail:
        if (!this.pprRun) this.ppr.tail = this.pointer(value, this.ppr.bytes);
        return;
      case MmioOffset.Status:
        r.status = (r.status & ~(Number(raw & 0xffff_ffffn) & STATUS_W1C_MASK)) >>> 0;
        return;
      default:
        return;
    }
  }

  /** The exclusion range decides where the devices' DMA is untranslated: every device is re-derived. */
  private exclusionChanged(): void {
    const before = { ...this.devtab.exclusion! };
    decodeExclusionRange(this.regs.exclusionBase, this.regs.exclusionLimit, this.devtab.exclusion!);
    const after = this.devtab.exclusion!;
    if (before.enabled !== after.enabled || (after.enabled && (before.allowAll !== after.allowAll || before.base !== after.base || before.limit !== after.limit))) this.refreshAll();
  }

  /** The MMIO mirror of the MSI capability (EFR.MsiCapMmioSup): the same registers as PCI config space. */
  private write32(offset: number, value: number): void {
    if (offset === MSI_CAPABILITY_HEADER) this.pci.writeMsiHeader(value);
    else if (offset === MmioOffset.MsiAddressLow) this.regs.msiAddressLow = (value & ~3) >>> 0;
    else if (offset === MmioOffset.MsiAddressHigh) this.regs.msiAddressHigh = value >>> 0;
    else if (offset === MmioOffset.MsiData) this.regs.msiData = value & 0xffff;
    else return;
    this.msiChanged();
  }

  /**
   * The hardware vIOMMU posts the guest's IOMMU interrupt to the MSI the guest programmed; with MsiEn clear
   * there is none to post (a zero message, which the hardware does not deliver).
   */
  private msiChanged(): void {
    if (this.hw === undefined) return;
    const on = this.regs.msiEnabled;
    this.hw.setGuestRegister(MmioOffset.MsiAddressLow, BigInt(on ? this.regs.msiAddressLow : 0));
    this.hw.setGuestRegister(MmioOffset.MsiData, BigInt(on ? this.regs.msiData : 0));
  }

  private pointer(value: bigint, ringBytes: number): number {
    const p = Number(value & BigInt(RING_POINTER_MASK_16));
    return ringBytes > 0 ? p % ringBytes : 0;
  }

  private get commandBytes(): number {
    this.decodeCommandBase();
    return this.cmdRing.bytes;
  }

  private get commandBase(): number {
    this.decodeCommandBase();
    return this.cmdRing.base;
  }

  /** The ring the command-buffer base register names, decoded once per value written (every doorbell reads it). */
  private decodeCommandBase(): void {
    const raw = this.regs.cmdBase;
    if (raw === this.cmdRing.raw) return;
    this.cmdRing.raw = raw;
    this.cmdRing.bytes = 2 ** (Number((raw >> 56n) & 0xfn) + 4);
    this.cmdRing.base = Number(raw & 0x000f_ffff_ffff_f000n);
  }

  private writeControl(value: bigint): void {
    const before = this.regs.control;
    this.setControlValue(value);
    const rose = (b: number): boolean => ((before >> BigInt(b)) & 1n) === 0n && this.controlBit(b);
    if (rose(C_CMD_BUF_EN)) this.regs.cmdHalted = false;
    if (this.hw !== undefined) this.hw.setGuestRegister(MmioOffset.Control, value);
    else {
      if (this.controlBit(C_CMD_BUF_EN) && this.controlBit(C_IOMMU_EN) && !this.regs.cmdHalted && !this.ringReachable(this.commandBase, this.commandBytes)) {
        // A command buffer the host cannot read (an SNP guest's private pages) is refused at enable.
        this.regs.cmdHalted = true;
        this.refusals.commandBuffer++;
        this.logEvent(commandHardwareErrorEvent(this.commandBase));
      }
      if ((rose(C_EVENT_LOG_EN) || rose(C_IOMMU_EN)) && this.controlBit(C_EVENT_LOG_EN) && !this.evt.reachable(this.memory)) this.refusals.eventLog++;
    }
    if (((before ^ value) >> BigInt(C_IOMMU_EN)) & 1n) this.refreshAll();
    // What an MSI means follows GAEn, XTEn and NumIntRemapMode: posted routes are derived again.
    const remapBits = (1n << BigInt(C_GA_EN)) | (1n << BigInt(C_XT_EN)) | (3n << BigInt(C_NUM_INT_REMAP)) | (1n << BigInt(C_IOMMU_EN));
    if ((before ^ value) & remapBits) this.posted?.refreshAll();
    this.processCommands();
  }

  private ringReachable(base: number, bytes: number): boolean {
    return this.memory.hostReadable(base, bytes);
  }

  private get commandsRun(): boolean {
    return this.controlBit(C_IOMMU_EN) && this.controlBit(C_CMD_BUF_EN) && !this.regs.cmdHalted;
  }

  private get eventsRun(): boolean {
    return this.controlBit(C_IOMMU_EN) && this.controlBit(C_EVENT_LOG_EN) && this.evt.reachable(this.memory);
  }

  private get pprRun(): boolean {
    return this.controlBit(C_IOMMU_EN) && this.controlBit(C_PPR_LOG_EN) && this.ppr.reachable(this.memory);
  }

  // ---- the hardware vIOMMU's queues ----

  private forwardQueue(kind: "command" | "event" | "ppr", value: bigint): void {
    if (this.hw === undefined) return;
    const r = this.hw.hwQueueInit(kind, Number(value & 0x000f_ffff_ffff_f000n), Number((value >> 56n) & 0xfn));
    // The base register's writable bits always make a valid queue; a refusal would leave the ring unserved.
    if (!r.ok) this.reporter.log.record({ vm: this.reporter.vm, source: this.reporter.source, kind: "configuration-refused", error: r.error, message: `hardware ${kind} queue not set up: ${r.error.errno} ${r.error.message}` });
  }

  /** The hardware stopped at a command only the hypervisor can act on (a DTE change): act, then resume it. */
  private handleIntercepts(): void {
    if (this.intercepts === undefined) return;
    for (let guard = 0; guard < 64; guard++) {
      const bytes = this.intercepts.file.read(16 * (8 + COMMAND_BYTES));
      if (!bytes.ok || bytes.value.length === 0) return;
      for (const record of parseVevents(bytes.value, COMMAND_BYTES)) {
        if (record.payload === undefined) continue;
        const v = new DataView(record.payload.buffer, record.payload.byteOffset, COMMAND_BYTES);
        this.stats.trapped++;
        this.interceptsHandled++;
        // Nested only: a DTE the host refuses blocks the device and is reported inside; the hardware resumes.
        const opcode = v.getUint32(4, true) >>> 28;
        if (opcode === CommandOpcode.INVALIDATE_DEVTAB_ENTRY) this.deviceEntryChanged(v.getUint32(0, true) & 0xffff);
        if (opcode === CommandOpcode.COMPLETE_PPR_REQUEST) this.completePageRequest([0, 1, 2, 3].map((i) => v.getUint32(i * 4, true)), undefined);
        if (opcode === CommandOpcode.INVALIDATE_INTERRUPT_TABLE) this.interruptTableChanged(v.getUint32(0, true) & 0xffff);
        if (opcode === CommandOpcode.INVALIDATE_IOMMU_ALL) this.iommuAllInvalidated();
        this.hw?.resumeCommands();
      }
    }
  }

  // ---- the trapped command buffer ----

  private processCommands(): void {
    if (this.frozen || this.hw !== undefined || !this.commandsRun) return;
    const r = this.regs;
    const bytes = this.commandBytes;
    const base = this.commandBase;
    // At most one pass over the ring per doorbell: a hostile tail cannot make this loop forever.
    for (let budget = bytes / COMMAND_BYTES; budget > 0 && this.commandsRun && r.cmdHead !== r.cmdTail; budget--) {
      const at = base + r.cmdHead;
      if (!this.memory.hostReadable(at, COMMAND_BYTES)) {
        this.refusals.commandBuffer++;
        return this.haltCommands(commandHardwareErrorEvent(at));
      }
      const cmd = this.memory.readWords(at, this.scratch);
      this.stats.trapped++;
      if (commandProblem(cmd) !== undefined) return this.haltCommands(illegalCommandEvent(at));
      if (!this.executeCommand(cmd, at)) return;
      r.cmdHead = (r.cmdHead + COMMAND_BYTES) % bytes;
    }
  }

  /** The AMD rule: log the error and stop with the head at the offending command (CmdBufRun clears). */
  private haltCommands(event: Uint32Array): void {
    this.regs.cmdHalted = true;
    this.logEvent(event);
  }

  /** Executes one trapped command; false when it halted the buffer. */
  private executeCommand(cmd: Uint32Array, at: number): boolean {
    switch (commandOpcode(cmd)) {
      case CommandOpcode.COMPLETION_WAIT: {
        if (cmd[0]! & 1) {
          const address = ((cmd[0]! & 0xfffffff8) >>> 0) + (cmd[1]! & 0xfffff) * 0x1_0000_0000;
          if (!this.memory.hostReadable(address, 8)) {
            this.refusals.semaphore++;
            this.haltCommands(commandHardwareErrorEvent(address));
            return false;
          }
          this.memory.write64Halves(address, cmd[2]!, cmd[3]!);
        }
        if (cmd[0]! & 2) {
          this.regs.status |= StatusBit.ComWaitInt;
          if (this.controlBit(C_COM_WAIT_INT_EN)) this.raiseInterrupt();
        }
        return true;
      }
      case CommandOpcode.INVALIDATE_DEVTAB_ENTRY:
        return this.carriedOut(this.deviceEntryChanged(cmd[0]! & 0xffff), at);
      case CommandOpcode.INVALIDATE_IOMMU_PAGES:
        return this.carriedOut(this.invalidate(cmd, at), at);
      case CommandOpcode.INVALIDATE_IOMMU_ALL:
        this.iommuAllInvalidated();
        return this.carriedOut(this.invalidate(cmd, at), at);
      case CommandOpcode.COMPLETE_PPR_REQUEST:
        this.completePageRequest(cmd, at);
        return true;
      case CommandOpcode.INVALIDATE_INTERRUPT_TABLE:
        this.interruptTableChanged(cmd[0]! & 0xffff);
        return true;
      default:
        // INVALIDATE_IOTLB_PAGES (no device TLBs), PREFETCH_IOMMU_PAGES (a hint).
        return true;
    }
  }

  /**
   * A command the host could not carry out for the guest (an invalidation iommufd refused, shadow mappings the
   * back end would not install) halts the buffer at it with ILLEGAL_COMMAND_ERROR, as a command the hardware
   * will not execute does: the COMPLETION_WAIT behind it never completes, so the guest is not told that its
   * tables and the IOMMU agree when they do not. Linux prints the event with the command (iommu.c
   * iommu_print_event → dump_command) and its completion wait fails with -EIO. COMMAND_HARDWARE_ERROR is for a
   * command or store the IOMMU could not access, which is not what happened. QEMU's accelerated SMMUv3 makes
   * the same choice for a refused host invalidation (hw/arm/smmuv3.c: CERROR_ILL when
   * smmuv3_accel_issue_inv_cmd fails). Commands before it took effect; the host log says why.
   */
  private carriedOut(r: Result<void>, at: number): boolean {
    if (r.ok) return true;
    this.haltCommands(illegalCommandEvent(at));
    return false;
  }

  private deviceEntryChanged(deviceId: number): Result<void> {
    // The DTE holds the interrupt table's root and length: what was cached through the old one goes with it.
    this.remapper.invalidateDevice(deviceId);
    this.audit?.noteInvalidation(`INVALIDATE_DEVTAB_ENTRY 0x${deviceId.toString(16)}`, { rid: deviceId });
    const a = this.assigned.get(deviceId);
    if (a === undefined) return ok();
    const r = this.entries.refresh(a, this.translationOn(), this.devtab);
    this.stats.shadowMappings = this.entries.shadowMappings;
    this.posted?.refresh(a.device, deviceId);
    return r;
  }

  /**
   * The host scheduled vCPU `vcpu` in or out (KVM's vcpu_load / vcpu_put with AVIC): posting to it turns into GA
   * log wake-ups while it does not run. A no-op without posted device interrupts.
   */
  setVcpuRunning(vcpu: number, running: boolean): void {
    this.posted?.setRunning(vcpu, running);
  }

  /** Interrupts posted straight to vCPUs, and wake-ups of vCPUs that were not running (deviceInterrupts "posted"). */
  get postedStats(): { posted: number; wakeups: number } {
    return { posted: this.posted?.posted ?? 0, wakeups: this.posted?.wakeups ?? 0 };
  }

  /** INVALIDATE_IOMMU_ALL covers the interrupt tables too (its IOTLB half is the host's, done by the caller). */
  private iommuAllInvalidated(): void {
    this.remapper.invalidateAll();
    this.audit?.noteInvalidation("INVALIDATE_IOMMU_ALL");
    this.posted?.refreshAll();
  }

  /** INVALIDATE_INTERRUPT_TABLE: a passthrough device's posted routes follow its guest IRT. */
  private interruptTableChanged(deviceId: number): void {
    this.remapper.invalidateDevice(deviceId);
    this.audit?.noteInvalidation(`INVALIDATE_INTERRUPT_TABLE 0x${deviceId.toString(16)}`, { rid: deviceId });
    const a = this.assigned.get(deviceId);
    if (a !== undefined) this.posted?.refresh(a.device, deviceId);
  }

  /**
   * Nested: the raw command goes to the vIOMMU (gDomID → hDomID there). Shadow: the mirror is recomputed.
   * `stats.forwarded` counts what the host accepted; a refusal is written to the host log and returned.
   */
  private invalidate(cmd: Uint32Array, at: number): Result<void> {
    if (this.options.mode === "nested" && this.viommuId !== undefined) {
      // The command's bytes as the ioctl's one entry, in a buffer reused command after command.
      this.forwardWords.set(cmd.subarray(0, 4));
      const r = this.ctx.hwptInvalidate({ hwptId: this.viommuId, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_AMD, entryLen: AMD_INVALIDATE_ENTRY_BYTES, entryNum: 1, entries: this.forwardEntry });
      if (r.result.ok && r.handled === 1) {
        this.stats.forwarded++;
        return ok();
      }
      const error = r.result.ok ? { errno: "EIO" as const, code: Errno.EIO, message: `handled ${r.handled} of 1 entries` } : r.result.error;
      const name = commandOpcode(cmd) === CommandOpcode.INVALIDATE_IOMMU_ALL ? "INVALIDATE_IOMMU_ALL" : `INVALIDATE_IOMMU_PAGES (DomainID ${cmd[1]! & 0xffff})`;
      this.reporter.log.record({
        vm: this.reporter.vm,
        source: this.reporter.source,
        kind: "invalidation-refused",
        error,
        message: `${name} at 0x${at.toString(16)}: IOMMU_HWPT_INVALIDATE refused, ${error.errno} ${error.message}; the guest sees ILLEGAL_COMMAND_ERROR`,
      });
      return err(error.errno, error.message);
    }
    if (this.options.mode !== "shadow") return ok();
    let report;
    if (commandOpcode(cmd) === CommandOpcode.INVALIDATE_IOMMU_ALL) report = this.entries.shadows.invalidateAll();
    else {
      const r = decodeInvalidationRange(cmd[2]!, cmd[3]!, this.range);
      report = this.entries.shadows.invalidateDomain(cmd[1]! & 0xffff, r.all ? 0 : r.base, r.all ? Infinity : r.size);
    }
    this.stats.shadowMappings = this.entries.shadowMappings;
    // The mirror wrote the refusal to the host log ("shadow-map-refused").
    if (report.firstError !== undefined) return err(report.firstError.errno, report.firstError.message);
    this.stats.forwarded++;
    return ok();
  }

  // ---- events ----

  /**
   * Logs an event for the guest. With the hardware vIOMMU it goes through the hardware (INSERT_GUEST_EVENT);
   * otherwise into the emulated log: nothing is logged while EventOverflow is set, a full log sets it, and
   * EventLogInt (with the interrupt when EventIntEn) follows every logged event.
   */
  private logEvent(record: Uint32Array): void {
    if (this.hw !== undefined) {
      if (this.hw.insertGuestEvent(record).ok) this.stats.eventsInjected++;
      return;
    }
    this.appendLog(this.evt, this.eventsRun, record, StatusBit.EventOverflow, StatusBit.EventLogInt, C_EVENT_INT_EN);
  }

  private appendLog(ring: GuestLogRing, running: boolean, record: Uint32Array, overflowBit: number, intBit: number, intEnable: number): boolean {
    if (!running || this.regs.status & overflowBit) return false;
    const r = ring.append(this.memory, record);
    if (r === "unreachable") return false;
    if (r === "full") {
      this.regs.status |= overflowBit;
      if (this.controlBit(intEnable)) this.raiseInterrupt(intEnable === C_PPR_INT_EN);
      return false;
    }
    this.stats.eventsInjected++;
    this.regs.status |= intBit;
    if (this.controlBit(intEnable)) this.raiseInterrupt(intEnable === C_PPR_INT_EN);
    return true;
  }

  /**
   * The IOMMU's interrupt: with IntCapXTEn, the XT interrupt control register of its source (the PPR log has its
   * own, 0x178; events and completion waits use the general one, 0x170); else the MSI capability, which every
   * source shares.
   */
  private raiseInterrupt(ppr = false): void {
    let vector: number;
    let destination: number;
    if (this.controlBit(C_INT_CAP_XT_EN)) {
      const v = ppr ? this.regs.xtPpr : this.regs.xtEvent;
      vector = Number((v >> 32n) & 0xffn);
      destination = Number((v >> 8n) & 0xffffffn) + Number((v >> 56n) & 0xffn) * 2 ** 24;
    } else {
      // An MSI only with MsiEn set, and only to the interrupt window (anything else is no interrupt).
      if (!this.regs.msiEnabled || (this.regs.msiAddressLow & 0xfff0_0000) >>> 0 !== 0xfee0_0000 || this.regs.msiAddressHigh !== 0) return;
      vector = this.regs.msiData & 0xff;
      destination = (this.regs.msiAddressLow >>> 12) & 0xff;
    }
    this.options.vm.inject(vector, destination, "amd-vi-event");
  }

  /** Drains the vEVENTQ (faults the host reported in guest terms) into the guest's log; a loss sets EventOverflow. */
  poll(): void {
    if (this.frozen) return;
    this.handleIntercepts();
    this.pageRequests?.poll();
    if (this.veventq === undefined) return;
    for (let guard = 0; guard < 1024; guard++) {
      const bytes = this.veventq.file.read(64 * (8 + EVENT_BYTES));
      if (!bytes.ok || bytes.value.length === 0) return;
      for (const record of parseVevents(bytes.value, EVENT_BYTES)) {
        if (veventsLost(this.lastSequence, record)) this.regs.status |= StatusBit.EventOverflow;
        this.lastSequence = record.sequence;
        if (record.payload === undefined) continue;
        const v = new DataView(record.payload.buffer, record.payload.byteOffset, EVENT_BYTES);
        const words = new Uint32Array([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true), v.getUint32(12, true)]);
        this.logEvent(words);
      }
    }
  }

  /**
   * A page request (PCIe PRI) from one of the VMM's emulated devices: a PAGE_SERVICE_REQUEST in the guest's
   * PPR log (PPROverflow and PPRInt by the same rules as events); the guest answers with
   * COMPLETE_PPR_REQUEST, recorded in `pprResponses`. False when the log did not take it.
   */
  pageRequest(guestRid: number, pasid: number, address: number, write: boolean, tag: number): boolean {
    // What PCIe PRI can carry: a 16-bit requester, a 20-bit PASID, a 9-bit group index, a 64-bit address.
    if (!isDeviceId(guestRid) || !isAddress64(address) || !isPprTag(tag) || (pasid !== NO_PASID && !isPasid(pasid))) return false;
    const flags = PprFlag.READ | (write ? PprFlag.WRITE : 0) | PprFlag.US | (pasid !== NO_PASID ? PprFlag.GN : 0);
    const record = buildPageServiceRequest({ deviceId: guestRid, pasid: pasid === NO_PASID ? 0 : pasid, tag: tag | PPR_TAG_LAST, flags, address: BigInt(address) });
    if (!this.appendLog(this.ppr, this.pprRun, record, StatusBit.PPROverflow, StatusBit.PPRInt, C_PPR_INT_EN)) return false;
    this.emulatedRequests.set(`${guestRid}:${tag}`, pasid === NO_PASID ? undefined : pasid);
    return true;
  }

  /**
   * A PPR entry for the guest: into the hardware vIOMMU's PPR log, or the emulated one (PPROverflow and PPRInt by
   * the same rules as events).
   */
  private logPageRequest(record: Uint32Array): boolean {
    if (this.hw !== undefined) return this.hw.insertPageRequest(record).ok;
    return this.appendLog(this.ppr, this.pprRun, record, StatusBit.PPROverflow, StatusBit.PPRInt, C_PPR_INT_EN);
  }

  /**
   * COMPLETE_PPR_REQUEST (DeviceID d0[15:0], PASID QW0[51:32] with GN QW1[2], tag d3[8:0], status d3[15:12]): the
   * response to a passthrough device's group goes back through the fault queue; one to an emulated device's
   * request is recorded for it. The IOMMU does not check the tag: a response naming no outstanding request
   * completes like any other (the device drops it), and the host log notes it for the operator.
   */
  private completePageRequest(cmd: ArrayLike<number>, at: number | undefined): void {
    const deviceId = cmd[0]! & 0xffff;
    const pasid = cmd[2]! & 4 ? cmd[1]! & 0xfffff : undefined;
    const tag = cmd[3]! & 0x1ff;
    const status = (cmd[3]! >>> 12) & 0xf;
    if (this.pageRequests?.complete(deviceId, pasid, tag, status)) return;
    const key = `${deviceId}:${tag}`;
    if (this.emulatedRequests.has(key) && samePasid(pasid, this.emulatedRequests.get(key))) {
      this.emulatedRequests.delete(key);
      this.pprResponses.push({ deviceId, tag, status });
      return;
    }
    this.reporter.log.record({
      vm: this.reporter.vm,
      source: this.reporter.source,
      kind: "other",
      error: { errno: "EINVAL", code: Errno.EINVAL, message: "no outstanding page request" },
      message: `COMPLETE_PPR_REQUEST${at === undefined ? "" : ` at 0x${at.toString(16)}`} for DeviceID 0x${deviceId.toString(16)} PASID ${pasid ?? "none"} tag 0x${tag.toString(16)} answers no outstanding page request; the device drops it`,
    });
  }

  // ---- emulated devices ----

  translateEmulated(guestRid: number, pasid: number, iova: number, write: boolean, out: WalkResult): void {
    const access = write ? Perm.Write : Perm.Read;
    if (!this.controlBit(C_IOMMU_EN) || this.options.mode === "ir-only") {
      out.ok = this.memory.contains(iova);
      out.output = iova;
      out.pageShift = 12;
      out.perms = Perm.ReadWrite;
      out.fault = out.ok ? WalkFault.None : WalkFault.AddressSize;
      return;
    }
    const o = this.walkOutcome;
    this.walker.translate(this.devtab, guestRid, pasid === NO_PASID ? undefined : pasid, iova, access, out, o);
    if (out.ok && !this.memory.contains(out.output)) {
      // Translated (or passed through) to where no memory answers: the access fails at its target, as a master
      // abort does; the IOMMU itself faulted nowhere, so it logs nothing (IO_PAGE_FAULT is for failed walks).
      out.ok = false;
      out.fault = WalkFault.AddressSize;
      return;
    }
    if (out.ok || o.suppressed) return;
    if (o.eventCode === 0x1) this.logEvent(illegalDteEvent(guestRid, iova, write));
    else if (o.eventCode === 0x3) {
      this.refusals.deviceTable++;
      this.logEvent(devTabHardwareErrorEvent(guestRid, o.dteAddress, false, write));
    } else {
      this.logEvent(
        dmaFaultEvent({ deviceId: guestRid, domainId: o.domainId, pasid: pasid === NO_PASID ? undefined : pasid, address: iova, write, fault: out.fault, mapped: out.mapped, entryAddress: out.entryAddress }),
      );
    }
  }

  // ---- interrupt remapping ----

  /** The Control bits remapping reads. */
  private get remapSettings(): RemapSettings {
    // intremap=off: MSIs pass as written, as QEMU's amdvi_int_remap_msi does without interrupt remapping.
    return { enabled: this.controlBit(C_IOMMU_EN) && this.config.intremap, ga: this.controlBit(C_GA_EN), xt: this.controlBit(C_XT_EN), twoK: this.controlBit(C_NUM_INT_REMAP) && !this.controlBit(C_NUM_INT_REMAP + 1) };
  }

  /**
   * A device MSI the VMM remaps itself (deviceInterrupts "remapped", and whatever posting cannot carry): through
   * the guest's DTE and IRT, injected into the vCPU (one intervention), or refused with the guest's event.
   */
  deliverMsi(guestRid: number, msi: MsiMessage): InterruptResult {
    const result = this.remapper.remap(this.devtab, this.remapSettings, guestRid, msi);
    if (result.ok) {
      this.options.vm.inject(result.irq.vector, result.irq.destination, `msi:${guestRid.toString(16)}`);
      return result;
    }
    if (result.fault.code === 0x3) this.refusals.deviceTable++;
    if (result.fault.code === 0x4) this.refusals.interruptTable++;
    if (result.event !== undefined) this.logEvent(result.event);
    return { ok: false, fault: result.fault };
  }

  // ---- firmware ----

  acpiTables(): AcpiTableBlob[] {
    return [
      {
        signature: "IVRS",
        bytes: buildIvrs({ mmioBase: this.mmioBase, iommuDeviceId: this.iommuDeviceId, features: this.features, extraDeviceIds: [...this.assigned.keys()], ivhdFlags: this.config.deviceIotlb ? IVHD_FLAGS : IVHD_FLAGS & ~0x10, ioapic: this.config.intremap }),
      },
    ];
  }

  // ---- migration ----

  freeze(): void {
    this.frozen = true;
    // The hardware vIOMMU runs without the VMM: pausing it means taking CmdBufEn away from it.
    if (this.hw !== undefined) this.hw.setGuestRegister(MmioOffset.Control, this.regs.control & ~(1n << BigInt(C_CMD_BUF_EN)));
  }

  thaw(): void {
    this.frozen = false;
    if (this.hw !== undefined) this.hw.setGuestRegister(MmioOffset.Control, this.regs.control);
    this.processCommands();
    this.poll();
  }

  save(): Uint8Array {
    return saveFrozen(this, () => {
      let hardware: DeviceState["hardware"];
      if (this.hw !== undefined) {
        const read = (o: number): number => Number(this.options.vm.mmioRead(this.mmioBase + o, 4));
        hardware = {
          cmdHead: read(MmioOffset.CommandBufferHead),
          cmdTail: read(MmioOffset.CommandBufferTail),
          eventHead: read(MmioOffset.EventLogHead),
          eventTail: read(MmioOffset.EventLogTail),
          pprHead: read(MmioOffset.PprLogHead),
          pprTail: read(MmioOffset.PprLogTail),
          // The run bits follow from the enables; only the sticky bits are state.
          status: read(MmioOffset.Status) & STATUS_W1C_MASK,
          cmdHalted: this.hw.commandsHalted(),
        };
      }
      return encodeDeviceState({ regs: this.regs, eventLog: { head: this.evt.head, tail: this.evt.tail }, pprLog: { head: this.ppr.head, tail: this.ppr.tail }, hardware });
    });
  }

  /**
   * Restores a saved state into this freshly created device of the same configuration. The whole stream is
   * validated first (decodeDeviceState: every register, pointer and flag, EINVAL naming the first bad field),
   * so a refused restore changes nothing; then the registers are applied and the host side is rebuilt from the
   * guest's tables (device entries, queues) as a destination VMM does: the guest's memory came over with it.
   */
  restore(blob: Uint8Array): Result<void> {
    const decoded = decodeDeviceState(blob, this.hw !== undefined);
    if (!decoded.ok) return fail(decoded);
    this.apply(decoded.value);
    return ok();
  }

  /** Applies a validated state; nothing here can fail on the state's account. */
  private apply(state: DeviceState): void {
    const regs = state.regs;
    this.frozen = true;
    this.writeRegister(MmioOffset.DeviceTableBase, 8, regs.devTabBase);
    // Rings the guest never programmed stay unprogrammed (no hardware queue at GPA 0).
    if (regs.cmdBase !== 0n) this.writeRegister(MmioOffset.CommandBufferBase, 8, regs.cmdBase);
    if (regs.evtBase !== 0n) this.writeRegister(MmioOffset.EventLogBase, 8, regs.evtBase);
    if (regs.pprBase !== 0n) this.writeRegister(MmioOffset.PprLogBase, 8, regs.pprBase);
    this.regs = { ...regs };
    decodeExclusionRange(regs.exclusionBase, regs.exclusionLimit, this.devtab.exclusion!);
    this.setControlValue(regs.control);
    this.evt.head = state.eventLog.head;
    this.evt.tail = state.eventLog.tail;
    this.ppr.head = state.pprLog.head;
    this.ppr.tail = state.pprLog.tail;
    if (this.hw !== undefined) {
      const hw = this.hw;
      hw.setGuestRegister(MmioOffset.XtGeneralInterruptControl, regs.xtEvent);
      hw.setGuestRegister(MmioOffset.XtPprInterruptControl, regs.xtPpr);
      this.msiChanged();
      // Control before the pointers: CmdBufEn rising on the hardware clears an error stop (the restart
      // procedure), which must not undo the stop restored below.
      hw.setGuestRegister(MmioOffset.Control, regs.control);
      const h = state.hardware;
      if (h !== undefined) {
        const registers: [number, number][] = [
          [MmioOffset.CommandBufferHead, h.cmdHead],
          [MmioOffset.CommandBufferTail, h.cmdTail],
          [MmioOffset.EventLogHead, h.eventHead],
          [MmioOffset.EventLogTail, h.eventTail],
          [MmioOffset.PprLogHead, h.pprHead],
          [MmioOffset.PprLogTail, h.pprTail],
          [MmioOffset.Status, h.status],
        ];
        for (const [offset, value] of registers) hw.setGuestRegister(offset, BigInt(value));
        hw.setCommandsHalted(h.cmdHalted);
      }
    }
    this.refreshAll();
    this.frozen = false;
    this.hw?.setGuestRegister(MmioOffset.Control, this.regs.control);
    this.processCommands();
  }

  /** Tears down in dependency order: attachments and HWPTs, vDEVICEs, vEVENTQs, the vIOMMU, the mappings. */
  destroy(): void {
    for (const a of this.assigned.values()) {
      this.entries.release(a);
      a.device.msiTarget = undefined;
    }
    this.assigned.clear();
    this.entries.shadows.destroyAll();
    this.pageRequests?.destroy();
    this.pageRequests = undefined;
    this.posted?.destroy();
    this.posted = undefined;
    this.hw?.setInterruptPost(undefined);
    for (const unmap of this.unmaps.splice(0).reverse()) unmap();
    for (const id of this.vdeviceIds.values()) this.ctx.destroy(id);
    this.vdeviceIds.clear();
    for (const q of [this.veventq, this.intercepts]) {
      if (q === undefined) continue;
      q.file.queue.onReadable = undefined;
      q.file.close();
      this.ctx.destroy(q.id);
    }
    this.veventq = undefined;
    this.intercepts = undefined;
    if (this.viommuId !== undefined) this.ctx.destroy(this.viommuId);
    this.viommuId = undefined;
    this.hw = undefined;
  }

  /** The IOMMU's view of a DTE for tests: the device table location the guest programmed. */
  get deviceTable(): Readonly<DeviceTableLocation> {
    return this.devtab;
  }

  /** Whether the hardware vIOMMU runs the guest's rings (nested "hw-vqueue"). */
  get hardwareQueues(): boolean {
    return this.hw !== undefined;
  }

  /** The IOMMU function's own DeviceID (BDF): the IVHD's DeviceID, 00:00.2 for the first instance as on AMD platforms. */
  get iommuDeviceId(): number {
    return IOMMU_DEVICE_ID + (this.options.instance ?? 0) * 8;
  }

  /** DTE address of a guest DeviceID. */
  dteAddress(deviceId: number): number {
    return this.devtab.base + deviceId * DTE_BYTES;
  }
}
