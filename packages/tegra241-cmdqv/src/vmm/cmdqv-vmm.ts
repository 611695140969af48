import {
  err,
  fail,
  HostServices,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  resolveToken,
  ok,
  type IommufdContext,
  type MmioHandler,
  type MmioMapping,
  type MmioRegion,
  type Result,
  type StateValue,
  type GuestQueueView,
  type UserData,
  type VeventqFile,
  type VirtualMachine,
} from "@viommu/core";
import { VeventqReader } from "@viommu/smmuv3";
import {
  CMDQV_PAGE_SIZE,
  cmdqvApertureSize,
  decodeCmdqvOffset,
  VCMDQ_PAGE0_BASE,
  VCMDQ_STRIDE,
  VcmdqPage0Reg,
  vintfPage0,
  type CmdqvRegisterRef,
  type Page1RegName,
} from "../format/aperture.js";
import { cmdqAllocLayout, CMDQV_CONFIG_RESET } from "../format/global-registers.js";
import {
  decodeHwInfoTegra241Cmdqv,
  decodeVeventTegra241Cmdqv,
  decodeViommuTegra241Cmdqv,
  guestParamFromHwInfo,
  HW_INFO_TEGRA241_CMDQV_SIZE,
  IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV,
  IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV,
  IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV,
  IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV,
  VEVENT_TEGRA241_CMDQV_SIZE,
  VIOMMU_TEGRA241_CMDQV_SIZE,
  type HwInfoTegra241Cmdqv,
} from "../format/iommufd-uapi.js";
import { bitmapSet, bitmapTest, decodeReg32 } from "../format/register-value.js";
import { cmdqErrorActive } from "../format/vcmdq-registers.js";
import { readCmdqvState, type CmdqvSavedState } from "./cmdqv-state.js";
import { vcmdqGuestQueues } from "./vcmdq-queue-views.js";

/** Depth of the Tegra vEVENTQ (QEMU allocates 1 << 16; the map in each event makes a deep queue unnecessary). */
const VEVENTQ_DEPTH = 64;
/** The guest's aperture: one VINTF (0x50000). */
const GUEST_APERTURE = cmdqvApertureSize(1);
const CONFIG_EN = 1;
const VINTF_CONFIG_HYP_OWN = 1 << 17;
/** The defined bits of BASE and CONS_INDX_BASE (spec arm-hyperv-virtio.md §4.4): [47:0]. */
const PAGE1_FIELDS = 0xffff_ffff_ffffn;

/** Where the CMDQV sits in the VM and which interrupt it raises. */
export interface CmdqvVmmPlacement {
  /** Guest physical base of the aperture. */
  readonly base: number;
  /** GSIV of the CMDQV error interrupt (in the _CRS; the VMM injects it). */
  readonly gsiv: number;
}

/** Counters of the CMDQV half of the VMM. */
export interface CmdqvVmmStats {
  /** Trapped accesses to the CMDQV aperture (config page and page-1 registers). */
  trapped: number;
  /** IOMMU_HW_QUEUE_ALLOC calls that succeeded / failed. */
  queuesAllocated: number;
  queueAllocFailures: number;
  /** Tegra vEVENTs read and error interrupts injected into the guest. */
  vevents: number;
  interruptsInjected: number;
}

/**
 * The VMM half of the Tegra241 CMDQV (as QEMU's hw/arm/tegra241-cmdqv.c does it): the guest sees a CMDQV with one
 * VINTF. Its VCMDQ page 0 — both the global view at +0x10000 and the VINTF0 view at +0x30000 — is the host's VINTF
 * page 0, mmapped from the iommufd and mapped `direct` into the VM: PROD/CONS/CONFIG/GERRORN accesses never exit.
 * Everything else is trapped and emulated: the config page (CONFIG, PARAM from hw_info, CMDQ_ALLOC, VINTF0 CONFIG
 * with HYP_OWN forced to 0, the error maps) and page 1, where a BASE write becomes IOMMU_HW_QUEUE_ALLOC once the
 * queue is mapped in CMDQ_ALLOC and both the CMDQV and the VINTF are enabled (and the queue is freed again when
 * any of those goes away, in descending order). Queue errors arrive on the TEGRA241_CMDQV vEVENTQ; `poll` turns
 * them into the guest's error maps and the CMDQV interrupt.
 *
 * The guest's VCMDQ q is host LVCMDQ q (its HW queue index), as QEMU assumes: Linux maps global VCMDQ q to
 * logical VCMDQ q of VINTF0.
 */
export class CmdqvVmm {
  readonly stats: CmdqvVmmStats = { trapped: 0, queuesAllocated: 0, queueAllocFailures: 0, vevents: 0, interruptsInjected: 0 };
  readonly info: HwInfoTegra241Cmdqv;
  /** Guest VCMDQs (= the host VINTF's logical VCMDQs). */
  readonly queues: number;
  private config = CMDQV_CONFIG_RESET;
  private readonly viIntMask = new Uint32Array(2);
  private readonly cmdqAlloc: Uint32Array;
  private vintfConfig = 0;
  private readonly sidMatch = new Uint32Array(16);
  private readonly sidReplace = new Uint32Array(16);
  /** LVCMDQs reported in error and not yet seen acknowledged. */
  private readonly errorMap = new Uint32Array(4);
  private readonly bases: bigint[];
  private readonly consBases: bigint[];
  private readonly hwQueueIds: (number | undefined)[];
  private readonly mappings: MmioMapping[] = [];
  private veventq: { id: number; file: VeventqFile; reader: VeventqReader } | undefined;
  private page0: { region: MmioRegion; unmap(): void } | undefined;

  private constructor(
    private readonly vm: VirtualMachine,
    private readonly iommufd: IommufdContext,
    private readonly viommuId: number,
    readonly placement: CmdqvVmmPlacement,
    info: HwInfoTegra241Cmdqv,
  ) {
    this.info = info;
    this.queues = Math.min(2 ** info.log2vcmdqs, 128);
    this.cmdqAlloc = new Uint32Array(this.queues);
    this.bases = new Array<bigint>(this.queues).fill(0n);
    this.consBases = new Array<bigint>(this.queues).fill(0n);
    this.hwQueueIds = new Array<number | undefined>(this.queues).fill(undefined);
  }

  /**
   * Step one, before the vIOMMU exists (QEMU's probe): GET_HW_INFO with INPUT_TYPE = TEGRA241_CMDQV on a bound
   * device. EOPNOTSUPP when the host SMMU has no CMDQV.
   */
  static probe(iommufd: IommufdContext, devId: number): Result<HwInfoTegra241Cmdqv> {
    const reply = iommufd.getHwInfo({ flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, devId, dataLen: HW_INFO_TEGRA241_CMDQV_SIZE, inDataType: IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV });
    if (!reply.ok) return fail(reply);
    if (reply.value.outDataType !== IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV) return err("EOPNOTSUPP", `hw_info answered type ${reply.value.outDataType}`);
    const info = decodeHwInfoTegra241Cmdqv(reply.value.data);
    return info === undefined ? err("EINVAL", "short hw_info") : ok(info);
  }

  /** The `iommu_viommu_tegra241_cmdqv` to pass to IOMMU_VIOMMU_ALLOC (the kernel writes the mmap offset back into it). */
  static viommuData(): UserData {
    return { type: IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV, bytes: new Uint8Array(VIOMMU_TEGRA241_CMDQV_SIZE) };
  }

  /**
   * Step two, once the vIOMMU is allocated with `viommuData()`: mmap the VINTF page 0, allocate the Tegra vEVENTQ,
   * and map the aperture into the VM (page 0 direct, the rest trapped). Undoes what it did on failure.
   */
  static attach(vm: VirtualMachine, iommufd: IommufdContext, viommuId: number, data: UserData, info: HwInfoTegra241Cmdqv, placement: CmdqvVmmPlacement): Result<CmdqvVmm> {
    const out = decodeViommuTegra241Cmdqv(data.bytes);
    if (out === undefined || out.out_vintf_mmap_length !== BigInt(CMDQV_PAGE_SIZE)) return err("EINVAL", "the vIOMMU data carries no VINTF page");
    const self = new CmdqvVmm(vm, iommufd, viommuId, placement, info);
    const r = self.setUp(Number(out.out_vintf_mmap_offset));
    if (!r.ok) {
      self.destroy();
      return fail(r);
    }
    return ok(self);
  }

  private setUp(mmapOffset: number): Result<void> {
    const handle = this.iommufd.mmap({ offset: mmapOffset, length: CMDQV_PAGE_SIZE, shared: true, prot: { read: true, write: true } });
    if (!handle.ok) return fail(handle);
    this.page0 = { region: handle.value.region, unmap: () => handle.value.unmap() };
    const q = this.iommufd.veventqAlloc({ flags: 0, viommuId: this.viommuId, type: IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV, depth: VEVENTQ_DEPTH });
    if (!q.ok) return fail(q);
    // Each poll reads at most the queue's depth and its lost-events marker, 16 records at a time.
    this.veventq = { ...q.value, reader: new VeventqReader(q.value.file, VEVENT_TEGRA241_CMDQV_SIZE, 16, VEVENTQ_DEPTH + 1) };
    const base = this.placement.base;
    const trapped: MmioHandler = { read: (o, s) => this.read(o, s), write: (o, s, v) => this.write(o, s, v) };
    const at = (offset: number): MmioHandler => ({ read: (o, s) => trapped.read(offset + o, s), write: (o, s, v) => trapped.write(offset + o, s, v) });
    const regions: [number, MmioHandler, boolean, string][] = [
      [0, trapped, false, "tegra241-cmdqv-config"],
      [VCMDQ_PAGE0_BASE, handle.value.region, true, "tegra241-cmdqv-vcmdq-page0"],
      [0x20000, at(0x20000), false, "tegra241-cmdqv-vcmdq-page1"],
      [vintfPage0(0), handle.value.region, true, "tegra241-cmdqv-vintf0-page0"],
      [vintfPage0(0) + CMDQV_PAGE_SIZE, at(vintfPage0(0) + CMDQV_PAGE_SIZE), false, "tegra241-cmdqv-vintf0-page1"],
    ];
    for (const [offset, handler, direct, name] of regions) {
      const m = this.vm.mapMmio(base + offset, CMDQV_PAGE_SIZE, handler, { direct, name });
      if (!m.ok) return fail(m);
      this.mappings.push(m.value);
    }
    return ok();
  }

  // ---- the trapped registers ----

  private read(offset: number, size: 4 | 8): bigint {
    this.stats.trapped++;
    const lo = this.read32(offset);
    return size === 8 ? (BigInt(this.read32(offset + 4)) << 32n) | BigInt(lo) : BigInt(lo);
  }

  private write(offset: number, size: 4 | 8, value: bigint): void {
    this.stats.trapped++;
    const ref = decodeCmdqvOffset(offset, 1);
    // A 64-bit BASE / CONS_INDX_BASE write is one register write (it allocates the queue once, with both halves).
    if (size === 8 && ref !== undefined && (ref.block === "vcmdq-page1" || ref.block === "vintf-page1") && (ref.register === "BASE" || ref.register === "CONS_INDX_BASE")) {
      this.writePage1(ref.queue, ref.register, value & 0xffff_ffff_ffffn);
      return;
    }
    this.write32(offset, Number(value & 0xffff_ffffn));
    if (size === 8) this.write32(offset + 4, Number((value >> 32n) & 0xffff_ffffn));
  }

  private read32(offset: number): number {
    if (offset >= GUEST_APERTURE) return 0;
    const ref = decodeCmdqvOffset(offset, 1);
    return ref === undefined ? 0 : this.readRef(ref);
  }

  private readRef(ref: CmdqvRegisterRef): number {
    switch (ref.block) {
      case "global":
        switch (ref.register) {
          case "CONFIG":
            return this.config;
          case "PARAM":
            return guestParamFromHwInfo(this.info);
          case "STATUS":
            return this.config & CONFIG_EN;
          case "VINTF_ERR_MAP":
            return ref.index === 0 && this.refreshErrors() ? 1 : 0;
          case "VINTF_INT_MASK":
            return this.viIntMask[ref.index]!;
          case "CMDQ_ERR_MAP":
            this.refreshErrors();
            return this.errorMap[ref.index]!;
          case "CMDQ_ALLOC":
            return this.cmdqAlloc[ref.index] ?? 0;
        }
        return 0;
      case "vintf":
        if (ref.vintf !== 0) return 0;
        switch (ref.register) {
          case "CONFIG":
            return this.vintfConfig;
          case "STATUS":
            return (this.vintfConfig & CONFIG_EN) | (this.refreshErrors() ? 1 << 1 : 0);
          case "SID_MATCH":
            return this.sidMatch[ref.index] ?? 0;
          case "SID_REPLACE":
            return this.sidReplace[ref.index] ?? 0;
          case "LVCMDQ_ERR_MAP":
            this.refreshErrors();
            return this.errorMap[ref.index]!;
        }
        return 0;
      case "vcmdq-page1":
      case "vintf-page1":
        return this.readPage1(ref.queue, ref.register);
      default:
        // Page 0 is mapped direct: a trapped access to it cannot happen.
        return 0;
    }
  }

  private write32(offset: number, value: number): void {
    if (offset >= GUEST_APERTURE) return;
    const ref = decodeCmdqvOffset(offset, 1);
    if (ref === undefined) return;
    switch (ref.block) {
      case "global":
        if (ref.register === "CONFIG") this.writeConfig(value);
        else if (ref.register === "VINTF_INT_MASK") this.viIntMask[ref.index] = value >>> 0;
        else if (ref.register === "CMDQ_ALLOC" && ref.index < this.queues) this.writeCmdqAlloc(ref.index, value);
        return;
      case "vintf":
        if (ref.vintf !== 0) return;
        if (ref.register === "CONFIG") this.writeVintfConfig(value);
        else if (ref.register === "SID_MATCH" && ref.index < this.sidMatch.length) this.sidMatch[ref.index] = value >>> 0;
        else if (ref.register === "SID_REPLACE" && ref.index < this.sidReplace.length) this.sidReplace[ref.index] = value >>> 0;
        return;
      case "vcmdq-page1":
      case "vintf-page1": {
        const old = this.page1Value(ref.queue, ref.register);
        if (old === undefined) return;
        const high = ref.register.endsWith("_H");
        const merged = high ? (old & 0xffff_ffffn) | (BigInt(value >>> 0) << 32n) : (old & ~0xffff_ffffn) | BigInt(value >>> 0);
        this.writePage1(ref.queue, high ? (ref.register === "BASE_H" ? "BASE" : "CONS_INDX_BASE") : ref.register, merged);
        return;
      }
      default:
        return;
    }
  }

  private writeConfig(value: number): void {
    this.config = value & 0x1f_ffff;
    if (this.config & CONFIG_EN) this.setUpAllQueues();
    else this.freeAllQueues();
  }

  /** VINTF0 CONFIG: HYP_OWN is the host's to give, never the guest's; EN follows at once in STATUS. */
  private writeVintfConfig(value: number): void {
    this.vintfConfig = (value & 0x3_ffff & ~VINTF_CONFIG_HYP_OWN) >>> 0;
    if (this.vintfConfig & CONFIG_EN) this.setUpAllQueues();
    else this.freeAllQueues();
  }

  private writeCmdqAlloc(q: number, value: number): void {
    const was = decodeReg32(cmdqAllocLayout, this.cmdqAlloc[q]!).CMDQV_CMDQ_ALLOCATED === 1;
    this.cmdqAlloc[q] = value & 0x1f_80ff;
    const now = (value & 1) === 1;
    if (!was && now) this.setUpQueue(q);
    else if (was && !now) this.freeQueue(q);
  }

  private page1Value(q: number, register: Page1RegName): bigint | undefined {
    if (q >= this.queues) return undefined;
    return register === "BASE" || register === "BASE_H" ? this.bases[q]! : this.consBases[q]!;
  }

  private readPage1(q: number, register: Page1RegName): number {
    const v = this.page1Value(q, register);
    if (v === undefined) return 0;
    return Number(register.endsWith("_H") ? v >> 32n : v & 0xffff_ffffn);
  }

  /** BASE keeps ADDR [47:5] and LOG2SIZE [4:0], CONS_INDX_BASE its address [47:0]: BASE_H holds addr[47:32] only. */
  private writePage1(q: number, register: Page1RegName, value: bigint): void {
    if (q >= this.queues) return;
    value &= PAGE1_FIELDS;
    if (register === "BASE" || register === "BASE_H") {
      this.bases[q] = value;
      this.setUpQueue(q);
    } else this.consBases[q] = value;
  }

  // ---- HW queues ----

  private ready(q: number): boolean {
    return CmdqvVmm.queueReady(this.config, this.vintfConfig, this.cmdqAlloc[q]!, this.bases[q]!);
  }

  /**
   * (Re)allocates guest queue q's HW queue from its cached BASE once it is ready. A queue the core refuses (not
   * contiguous, misaligned, out of order) stays unallocated: its page-0 registers then read zero in the guest, so
   * the guest's enable handshake fails and it keeps to the SMMU's own queue.
   */
  private setUpQueue(q: number): void {
    if (!this.ready(q)) return;
    if (!this.freeQueue(q)) return;
    const base = this.bases[q]!;
    const address = base & 0xffff_ffff_ffe0n;
    const length = 2n ** ((base & 0x1fn) + 4n);
    const r = this.iommufd.hwQueueAlloc({ flags: 0, viommuId: this.viommuId, type: IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, index: q, nestingParentIova: address, length });
    if (r.ok) {
      this.hwQueueIds[q] = r.value;
      this.stats.queuesAllocated++;
    } else {
      this.stats.queueAllocFailures++;
      resolveToken(this.vm.container, HostServices).log.record({
        vm: this.vm.id,
        source: `tegra241-cmdqv@0x${this.placement.base.toString(16)}`,
        kind: "configuration-refused",
        error: r.error,
        message: `VCMDQ${q}: IOMMU_HW_QUEUE_ALLOC of 0x${address.toString(16)} (${length} bytes) refused (${r.error.errno} ${r.error.message}); the queue stays down`,
      });
    }
  }

  private setUpAllQueues(): void {
    for (let q = 0; q < this.queues; q++) this.setUpQueue(q);
  }

  /** Frees queue q's HW queue; false when the core refuses (a higher queue still depends on it). */
  private freeQueue(q: number): boolean {
    const id = this.hwQueueIds[q];
    if (id === undefined) return true;
    if (!this.iommufd.destroy(id).ok) return false;
    this.hwQueueIds[q] = undefined;
    return true;
  }

  /** Frees every HW queue, in the descending order the hardware needs. */
  private freeAllQueues(): void {
    for (let q = this.queues - 1; q >= 0; q--) this.freeQueue(q);
  }

  /** The guest's VCMDQs as vendor-neutral queue views (see `vcmdqGuestQueues`). */
  guestQueues(): GuestQueueView[] {
    return vcmdqGuestQueues(this.placement.base, this.queues, {
      base: (q) => this.bases[q] ?? 0n,
      running: (q) => {
        const page0 = this.page0?.region;
        if (page0 === undefined || this.hwQueueIds[q] === undefined) return false;
        return (Number(page0.read(q * VCMDQ_STRIDE + VcmdqPage0Reg.CONFIG, 4)) & 1) === 1;
      },
    });
  }

  /** Which guest queues have a HW queue (for tests and the demo). */
  allocatedQueues(): number[] {
    return this.hwQueueIds.flatMap((id, q) => (id === undefined ? [] : [q]));
  }

  // ---- errors ----

  /**
   * Drains the Tegra vEVENTQ: each event's LVCMDQ map joins the guest's error maps and pulses the CMDQV
   * interrupt unless VINTF_INT_MASK masks it. Lost events (the marker or a sequence gap) are recovered by
   * reading every queue's GERROR / GERRORN in the mapped page 0.
   */
  poll(): void {
    const reader = this.veventq?.reader;
    if (reader === undefined) return;
    let raise = false;
    for (const record of reader.drain()) {
      if (record.lostBefore) raise = this.scanAllQueues() || raise;
      const event = record.payload === undefined ? undefined : decodeVeventTegra241Cmdqv(record.payload);
      if (event === undefined) continue;
      this.stats.vevents++;
      for (let half = 0; half < 2; half++) {
        const word = event.lvcmdq_err_map[half as 0 | 1];
        this.errorMap[half * 2] = (this.errorMap[half * 2]! | Number(word & 0xffff_ffffn)) >>> 0;
        this.errorMap[half * 2 + 1] = (this.errorMap[half * 2 + 1]! | Number(word >> 32n)) >>> 0;
      }
      raise = raise || event.lvcmdq_err_map[0] !== 0n || event.lvcmdq_err_map[1] !== 0n;
    }
    if (raise && (this.viIntMask[0]! & 1) === 0) {
      this.vm.inject(this.placement.gsiv, 0, "tegra241-cmdqv");
      this.stats.interruptsInjected++;
    }
  }

  /** An LVCMDQ is still in error while its GERROR.CMDQ_ERR differs from GERRORN (read from the mapped page 0). */
  private queueInError(q: number): boolean {
    const page0 = this.page0?.region;
    if (page0 === undefined) return false;
    const at = q * VCMDQ_STRIDE;
    return cmdqErrorActive(Number(page0.read(at + VcmdqPage0Reg.GERROR, 4)), Number(page0.read(at + VcmdqPage0Reg.GERRORN, 4)));
  }

  /** Drops the map bits of queues the guest has acknowledged; true while any remains. */
  private refreshErrors(): boolean {
    let any = false;
    for (let q = 0; q < this.queues; q++) {
      if (!bitmapTest(this.errorMap, q)) continue;
      if (this.queueInError(q)) any = true;
      else bitmapSet(this.errorMap, q, false);
    }
    return any;
  }

  private scanAllQueues(): boolean {
    let any = false;
    for (let q = 0; q < this.queues; q++) {
      if (!this.queueInError(q)) continue;
      bitmapSet(this.errorMap, q);
      any = true;
    }
    return any;
  }

  // ---- migration ----

  /**
   * The emulated registers and, per queue, the page-0 state the hardware holds (CONS.RD, PROD, CONFIG), read
   * through the mapped page. An error in progress is not carried: GERROR is the hardware's, so a queue stopped on
   * a bad command stops on it again on the destination, where the error is reported afresh.
   */
  saveState(): StateValue {
    const page0 = this.page0?.region;
    const hw = Array.from({ length: this.queues }, (_, q): StateValue => {
      if (page0 === undefined || this.hwQueueIds[q] === undefined) return null;
      const at = q * VCMDQ_STRIDE;
      return [Number(page0.read(at + VcmdqPage0Reg.CONS_INDX, 4)) & 0xf_ffff, Number(page0.read(at + VcmdqPage0Reg.PROD_INDX, 4)), Number(page0.read(at + VcmdqPage0Reg.CONFIG, 4))];
    });
    return {
      config: this.config,
      viIntMask: [...this.viIntMask],
      cmdqAlloc: [...this.cmdqAlloc],
      vintfConfig: this.vintfConfig,
      sidMatch: [...this.sidMatch],
      sidReplace: [...this.sidReplace],
      bases: this.bases.map((b) => b.toString()),
      consBases: this.consBases.map((b) => b.toString()),
      hw,
    };
  }

  /** Checks a CMDQV state for this VMM (`readCmdqvState`) without changing anything. */
  parseState(value: StateValue): Result<CmdqvSavedState> {
    return readCmdqvState(value, this.queues);
  }

  /**
   * Applies a checked state into a freshly attached CMDQV (it cannot fail): registers, then the HW queues, then
   * each queue's CONS, PROD and CONFIG through the mapped page 0. A HW queue the host refuses stays unallocated, as
   * it would on a guest write (counted in `stats.queueAllocFailures`).
   */
  applyState(state: CmdqvSavedState): void {
    this.freeAllQueues();
    this.config = state.config;
    this.viIntMask.set(state.viIntMask);
    this.cmdqAlloc.set(state.cmdqAlloc);
    this.vintfConfig = state.vintfConfig;
    this.sidMatch.set(state.sidMatch);
    this.sidReplace.set(state.sidReplace);
    state.bases.forEach((b, q) => (this.bases[q] = b));
    state.consBases.forEach((b, q) => (this.consBases[q] = b));
    this.setUpAllQueues();
    const page0 = this.page0?.region;
    state.hw.forEach((entry, q) => {
      if (page0 === undefined || entry === undefined || this.hwQueueIds[q] === undefined) return;
      const at = q * VCMDQ_STRIDE;
      page0.write(at + VcmdqPage0Reg.CONFIG, 4, 0n);
      page0.write(at + VcmdqPage0Reg.CONS_INDX, 4, BigInt(entry.cons));
      page0.write(at + VcmdqPage0Reg.PROD_INDX, 4, BigInt(entry.prod));
      page0.write(at + VcmdqPage0Reg.CONFIG, 4, BigInt(entry.config));
    });
  }

  /** Whether guest queue q gets a HW queue with these registers (BASE set, mapped, CMDQV and VINTF enabled). */
  static queueReady(config: number, vintfConfig: number, cmdqAlloc: number, base: bigint): boolean {
    return base !== 0n && (cmdqAlloc & 1) === 1 && (config & CONFIG_EN) !== 0 && (vintfConfig & CONFIG_EN) !== 0;
  }

  // ---- teardown ----

  /** Frees the HW queues (descending), unmaps page 0 and the aperture, closes the vEVENTQ. The vIOMMU is the caller's. */
  destroy(): void {
    this.freeAllQueues();
    for (const m of this.mappings) this.vm.unmapMmio(m);
    this.mappings.length = 0;
    this.page0?.unmap();
    this.page0 = undefined;
    if (this.veventq !== undefined) {
      this.veventq.file.close();
      this.iommufd.destroy(this.veventq.id);
      this.veventq = undefined;
    }
  }
}
