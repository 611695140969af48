import {
  createShadowBackend,
  HostServices,
  ShadowMirror,
  StateReader,
  type HostLog,
  type GuestQueueView,
  type QueuePointerRegister,
  resolveToken,
  StaleTranslationAudit,
  type CoreEvents,
  type EventBus,
  decodeState,
  encodeState,
  err,
  fail,
  fromBytes,
  GuestTableReader,
  NO_PASID,
  newWalkResult,
  ok,
  parseVevents,
  Perm,
  RingIndex,
  saveFrozen,
  veventsLost,
  WalkFault,
  type DmaDevice,
  type EmulatedIommu,
  type InterruptResult,
  type MmioHandler,
  type MsiMessage,
  type Result,
  type StateValue,
  type TranslationMode,
  type VeventqFile,
  type VmmDeviceOptions,
  type VmmStats,
  type WalkResult,
} from "@viommu/core";
import { PageWalker } from "@viommu/core";
import { decodeMockCommand, decodeMockCommandInto, MOCK_CMD_BYTES, MockOpcode, type MockCommand } from "../format/command.js";
import { decodeMockDeviceEntry, MOCK_DTE_BYTES, mockDeviceEntryMalformed } from "../format/device-entry.js";
import { encodeMockEvent, MOCK_EVENT_BYTES, MockCommandError, MockEventType, MockFaultReason } from "../format/event.js";
import { decodeMockIrte, MOCK_IRTE_BYTES, mockMsiIndex } from "../format/irte.js";
import { mockGeometry, mockPteFormat } from "../format/pte.js";
import {
  decodeBase,
  MOCK_ID_VALUE,
  MOCK_ID_VQUEUE,
  MOCK_MMIO_BYTES,
  MOCK_VQ_BASE,
  MOCK_VQUEUE_PAGE_BYTES,
  MOCK_VQUEUE_PAGE_OFFSET,
  MockControl,
  MockReg,
  MockStatus,
} from "../format/registers.js";
import {
  encodeMockInvalidate,
  encodeMockS1,
  MOCK_HW_QUEUE_TYPE,
  MOCK_HWPT_DATA_TYPE,
  MOCK_INVALIDATE_BYTES,
  MOCK_INVALIDATE_DATA_TYPE,
  MOCK_VEVENT_BYTES,
  MOCK_VEVENTQ_TYPE,
  MOCK_VIOMMU_TYPE,
  MockInvalidateFlag,
} from "../format/uapi.js";
import { mockFaultReason } from "../hw/mock-fault.js";
import { GUEST_BLOCKED, GUEST_BYPASS, MockUnit } from "../hw/mock-unit.js";

/** Default guest-physical base of the register block (below 4 GiB, above typical RAM of small guests). */
export const MOCK_DEFAULT_MMIO_BASE = 0xfed9_0000;

const STATE_VERSION = 1;

interface AssignedDevice {
  readonly device: DmaDevice;
  readonly devId: number;
  /** Host HWPT currently attached (nested mode). */
  hwptId: number | undefined;
  /** Shadow address space the device is attached to (shadow mode). */
  shadowAsid: number | undefined;
}

interface ShadowSpace {
  readonly mirror: ShadowMirror;
  readonly root: number;
}

/** A base register's fields: a 4 KiB-aligned address below 2^52 and a log2 size the device accepts. */
const MAX_ADDRESS = 2 ** 52 - 4096;
const MAX_LOG2 = 16;

interface MockState {
  control: number;
  status: number;
  devtab: { address: number; log2: number };
  cmdq: { address: number; log2: number; head: number; tail: number };
  evtq: { address: number; log2: number; head: number; tail: number };
  irt: { address: number; log2: number };
  evtMsi: { address: number; data: number };
  vqBases: bigint[];
}

function parseBase(r: StateReader, name: string): { address: number; log2: number } {
  const [address, log2] = r.array(name, { exactly: 2 });
  const a = address!.asInt(0, MAX_ADDRESS);
  r.check(a % 4096 === 0, name, "address is not 4 KiB aligned");
  return { address: a, log2: log2!.asInt(0, MAX_LOG2) };
}

function parseRing(r: StateReader, name: string): MockState["cmdq"] {
  const v = r.array(name, { exactly: 4 });
  const address = v[0]!.asInt(0, MAX_ADDRESS);
  r.check(address % 4096 === 0, name, "address is not 4 KiB aligned");
  const log2 = v[1]!.asInt(0, MAX_LOG2);
  return { address, log2, head: v[2]!.asInt(0, 2 ** log2 - 1), tail: v[3]!.asInt(0, 2 ** log2 - 1) };
}

/** The mock's saved registers, each checked against what the register file itself would accept. */
function parseMockState(r: StateReader): MockState {
  const msi = r.array("evtMsi", { exactly: 2 });
  return {
    control: r.int("control", 0, 0x1f),
    status: r.int("status", 0, MockStatus.CMD_ERROR | MockStatus.EVT_OVERFLOW | MockStatus.GLOBAL_ERROR | 0x1f),
    devtab: parseBase(r, "devtab"),
    cmdq: parseRing(r, "cmdq"),
    evtq: parseRing(r, "evtq"),
    irt: parseBase(r, "irt"),
    evtMsi: { address: msi[0]!.asInt(0, 0xffff_ffff), data: msi[1]!.asInt(0, 0xffff_ffff) },
    vqBases: r.array("vqBases", { exactly: 2 }).map((b) => b.asU64()),
  };
}

/** What applying a device entry did: how many shadow mappings the back end refused (0 in nested mode). */
interface Applied {
  readonly refusedMappings: number;
}
const APPLIED: Applied = { refusedMappings: 0 };

/** What executing one trapped command did: 0 when it took effect, else the CMD_ERROR reason. */
type CommandOutcome = 0 | (typeof MockCommandError)[keyof typeof MockCommandError];

/**
 * The VMM half of the mock: its register file, trap-and-emulate command queue, event log injection (with
 * overflow), interrupt remapping, nested / shadow / IR-only translation through iommufd, guest-owned queues
 * (the vQUEUE) and save/restore. It is the template a vendor's `vmm/` follows.
 */
export class MockDevice implements EmulatedIommu {
  readonly vendor = "mock";
  readonly mode: TranslationMode;
  readonly mmioBase: number;
  readonly stats: VmmStats = { trapped: 0, forwarded: 0, eventsInjected: 0, shadowMappings: 0 };
  frozen = false;

  private control = 0;
  private status = 0;
  private devtab = { address: 0, log2: 0 };
  private cmdq = { address: 0, ring: new RingIndex(0, "one-slot-free"), head: 0, tail: 0 };
  private evtq = { address: 0, ring: new RingIndex(0, "one-slot-free"), head: 0, tail: 0 };
  private irt = { address: 0, log2: 0 };
  private evtMsi = { address: 0, data: 0 };
  private readonly vqBases: bigint[] = [0n, 0n];
  private readonly vqQueueIds: (number | undefined)[] = [undefined, undefined];

  private readonly assigned = new Map<number, AssignedDevice>();
  private readonly shadows = new Map<number, ShadowSpace>();
  private viommuId: number | undefined;
  private veventq: VeventqFile | undefined;
  private veventqId: number | undefined;
  /** vDEVICE ids by bound device id. */
  private readonly vdevices = new Map<number, number>();
  private lastSequence = -1;
  private vqueueMapping: { unmap(): void } | undefined;
  private registers: { unmap(): void } | undefined;
  private readonly walker = new PageWalker();
  private readonly hostFaultWalk = newWalkResult();
  private readonly reader: GuestTableReader;
  private readonly scratch = new Uint32Array(4);
  /** The command being executed, decoded in place: consuming the queue allocates nothing per command. */
  private readonly command: MockCommand = decodeMockCommand(new Uint32Array(4));

  private readonly events: EventBus<CoreEvents>;
  private readonly log: HostLog;
  /**
   * The stale-translation audit (VmmDeviceOptions.audit). The mock's own emulated unit caches nothing (device
   * entries and IRTEs are read at each use), so the caches audited are the host's: the unit's IOTLB and the
   * nested attachment built from a device entry, which stand for the guest's IOTLB and context cache.
   */
  readonly audit: StaleTranslationAudit | undefined;

  private constructor(readonly options: VmmDeviceOptions) {
    const host = resolveToken(options.vm.container, HostServices);
    this.events = host.events;
    this.log = host.log;
    this.mode = options.mode;
    this.mmioBase = options.mmioBase ?? MOCK_DEFAULT_MMIO_BASE + (options.instance ?? 0) * 0x10000;
    this.reader = new GuestTableReader(options.vm.memory);
    this.audit = options.audit === true ? new StaleTranslationAudit(host.events, host.clock) : undefined;
  }

  /** Has the host unit audit the device's translations against the guest's device entry for `guestRid`. */
  private startAudit(device: DmaDevice, guestRid: number): void {
    const audit = this.audit;
    if (audit === undefined || !(this.options.unit instanceof MockUnit)) return;
    this.options.unit.auditDevice(device.requesterId, {
      audit,
      vm: this.options.vm.id,
      guestRid,
      guestStage1Root: () => {
        const entry = this.readDeviceEntry(guestRid);
        if (!(this.control & MockControl.TRANSLATE_EN) || (entry !== undefined && entry.V && !entry.TR)) return GUEST_BYPASS;
        return entry === undefined || !entry.V ? GUEST_BLOCKED : entry.S1ROOT;
      },
    });
  }

  private stopAudit(device: DmaDevice): void {
    if (this.audit !== undefined && this.options.unit instanceof MockUnit) this.options.unit.auditDevice(device.requesterId, undefined);
  }

  /** Builds the device: maps its registers, and in nested mode allocates the vIOMMU and its vEVENTQ. */
  static create(options: VmmDeviceOptions): Result<MockDevice> {
    const device = new MockDevice(options);
    const registers: MmioHandler = { read: (o, s) => device.readRegister(o, s), write: (o, s, v) => device.writeRegister(o, s, v) };
    const mapped = options.vm.mapMmio(device.mmioBase, MOCK_MMIO_BYTES, registers, { name: "mock-iommu" });
    if (!mapped.ok) return fail(mapped);
    device.registers = { unmap: () => options.vm.unmapMmio(mapped.value) };
    if (options.mode === "nested") {
      const setup = device.setUpViommu();
      if (!setup.ok) {
        options.vm.unmapMmio(mapped.value);
        return fail(setup);
      }
    }
    return ok(device);
  }

  private get ctx(): VmmDeviceOptions["iommufd"] {
    return this.options.iommufd;
  }

  private setUpViommu(): Result<void> {
    const viommu = this.ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: this.options.anchorDevId, hwptId: this.options.parentHwptId });
    if (!viommu.ok) return fail(viommu);
    this.viommuId = viommu.value;
    const q = this.ctx.veventqAlloc({ flags: 0, viommuId: viommu.value, type: MOCK_VEVENTQ_TYPE, depth: 64 });
    if (!q.ok) return fail(q);
    this.veventq = q.value.file;
    this.veventqId = q.value.id;
    // The vQUEUE control page is the hardware's: map it straight into the guest, no exits.
    const v = this.ctx.viommu(viommu.value);
    if (v.ok) {
      const ops = v.value.ops as { mmapOffset?: number };
      if (ops.mmapOffset !== undefined) {
        const mapping = this.ctx.mmap({ offset: ops.mmapOffset, length: MOCK_VQUEUE_PAGE_BYTES, shared: true, prot: { read: true, write: true } });
        if (mapping.ok) {
          const m = this.options.vm.mapMmio(this.mmioBase + MOCK_VQUEUE_PAGE_OFFSET, MOCK_VQUEUE_PAGE_BYTES, mapping.value.region, { direct: true, name: "mock-vqueue" });
          if (m.ok) {
            const vm = this.options.vm;
            this.vqueueMapping = {
              unmap: () => {
                vm.unmapMmio(m.value);
                mapping.value.unmap();
              },
            };
          } else mapping.value.unmap();
        }
      }
    }
    return ok();
  }

  // ---- devices ----

  assignDevice(device: DmaDevice, devId: number, guestRid: number): Result<void> {
    if (this.assigned.has(guestRid)) return err("EEXIST", `guest RID 0x${guestRid.toString(16)} already assigned`);
    if (this.viommuId !== undefined) {
      const vdev = this.ctx.vdeviceAlloc({ viommuId: this.viommuId, devId, virtId: guestRid });
      if (!vdev.ok) return fail(vdev);
      this.vdevices.set(devId, vdev.value);
    }
    this.assigned.set(guestRid, { device, devId, hwptId: undefined, shadowAsid: undefined });
    device.msiTarget = (msi) => void this.deliverMsi(guestRid, msi);
    if (this.mode === "nested") this.startAudit(device, guestRid);
    if (this.mode === "ir-only") {
      const r = this.ctx.attach(devId, this.options.parentHwptId);
      if (!r.ok) return fail(r);
    }
    return ok();
  }

  unassignDevice(guestRid: number): Result<void> {
    const a = this.assigned.get(guestRid);
    if (a === undefined) return err("ENOENT", `nothing assigned at guest RID 0x${guestRid.toString(16)}`);
    const r = this.releaseDevice(a);
    this.assigned.delete(guestRid);
    a.device.msiTarget = undefined;
    this.stopAudit(a.device);
    return r;
  }

  renumberDevice(fromRid: number, toRid: number): Result<void> {
    const a = this.assigned.get(fromRid);
    if (a === undefined) return err("ENOENT", `nothing assigned at guest RID 0x${fromRid.toString(16)}`);
    if (this.assigned.has(toRid)) return err("EEXIST", `guest RID 0x${toRid.toString(16)} already assigned`);
    const released = this.releaseDevice(a);
    if (!released.ok) return released;
    this.assigned.delete(fromRid);
    this.stopAudit(a.device);
    // Assigned afresh at the new id: a new vDEVICE, and the host follows whatever the guest's entry there says.
    const r = this.assignDevice(a.device, a.devId, toRid);
    if (!r.ok) return r;
    this.deviceEntryChanged(toRid);
    return ok();
  }

  /** Detaches a device, drops its HWPT and vDEVICE: its DMA is blocked and nothing the host cached for it stays. */
  private releaseDevice(a: AssignedDevice): Result<void> {
    const detached = this.ctx.detach(a.devId);
    if (!detached.ok) return detached;
    if (a.hwptId !== undefined) this.logIfFailed(this.ctx.destroy(a.hwptId), "configuration-refused", "destroying a nested HWPT");
    a.hwptId = undefined;
    a.shadowAsid = undefined;
    const vdev = this.vdevices.get(a.devId);
    if (vdev !== undefined) {
      const r = this.ctx.destroy(vdev);
      if (!r.ok) return r;
      this.vdevices.delete(a.devId);
    }
    return ok();
  }

  /** A host call whose failure the guest cannot be told of (teardown): it goes to the host log. */
  private logIfFailed(r: Result<unknown>, kind: "configuration-refused" | "other", what: string): void {
    if (!r.ok) this.log.record({ vm: this.options.vm.id, source: this.source, kind, error: r.error, message: `${what}: ${r.error.errno} ${r.error.message}` });
  }

  private get source(): string {
    return `mock@0x${this.mmioBase.toString(16)}`;
  }

  guestQueues(): GuestQueueView[] {
    const ring = (name: string, role: "command" | "event", producedBy: "guest" | "device", q: () => MockDevice["cmdq"], prod: number, cons: number): GuestQueueView => ({
      name,
      role,
      producedBy,
      entryBytes: role === "command" ? MOCK_CMD_BYTES : MOCK_EVENT_BYTES,
      base: () => (q().ring.entries > 0 ? q().address : undefined),
      entries: () => q().ring.entries,
      producer: this.indexRegister(prod),
      consumer: this.indexRegister(cons),
    });
    return [
      ring("CMDQ", "command", "guest", () => this.cmdq, MockReg.CMDQ_TAIL, MockReg.CMDQ_HEAD),
      ring("EVTQ", "event", "device", () => this.evtq, MockReg.EVTQ_TAIL, MockReg.EVTQ_HEAD),
    ];
  }

  /** The mock's queue pointers: a plain slot index in bits 15:0, no wrap bit (one slot is kept free). */
  private indexRegister(offset: number): QueuePointerRegister {
    return {
      address: this.mmioBase + offset,
      size: 4,
      encode: (position, current) => (current & ~0xffffn) | BigInt(position.index & 0xffff),
      decode: (value) => ({ index: Number(value & 0xffffn), wrap: false }),
    };
  }

  // ---- registers ----

  private readRegister(offset: number, size: 4 | 8): bigint {
    const value = this.registerValue(offset & ~7);
    return size === 8 ? value : (offset & 4 ? value >> 32n : value) & 0xffff_ffffn;
  }

  private registerValue(offset: number): bigint {
    switch (offset) {
      case MockReg.ID:
        return MOCK_ID_VALUE | (this.viommuId !== undefined ? MOCK_ID_VQUEUE : 0n);
      case MockReg.CONTROL:
        return BigInt(this.control);
      case MockReg.STATUS:
        return BigInt(this.status | (this.control & 0x1f));
      case MockReg.DEVTAB_BASE:
        return BigInt(this.devtab.address) | BigInt(this.devtab.log2);
      case MockReg.CMDQ_BASE:
        return BigInt(this.cmdq.address) | BigInt(this.cmdq.ring.log2Entries);
      case MockReg.CMDQ_HEAD:
        return BigInt(this.cmdq.head);
      case MockReg.CMDQ_TAIL:
        return BigInt(this.cmdq.tail);
      case MockReg.EVTQ_BASE:
        return BigInt(this.evtq.address) | BigInt(this.evtq.ring.log2Entries);
      case MockReg.EVTQ_HEAD:
        return BigInt(this.evtq.head);
      case MockReg.EVTQ_TAIL:
        return BigInt(this.evtq.tail);
      case MockReg.IRT_BASE:
        return BigInt(this.irt.address) | BigInt(this.irt.log2);
      case MockReg.EVT_MSI_ADDR:
        return BigInt(this.evtMsi.address);
      case MockReg.EVT_MSI_DATA:
        return BigInt(this.evtMsi.data);
      default:
        if (offset >= MOCK_VQ_BASE(0) && offset <= MOCK_VQ_BASE(1)) return this.vqBases[(offset - MOCK_VQ_BASE(0)) / 8]!;
        return 0n;
    }
  }

  /** Register writes. Read-only registers and reserved offsets ignore writes, as the hardware does. */
  private writeRegister(offset: number, size: 4 | 8, raw: bigint): void {
    const aligned = offset & ~7;
    let value = raw;
    if (size === 4) {
      const old = this.registerValue(aligned);
      value = offset & 4 ? (old & 0xffff_ffffn) | ((raw & 0xffff_ffffn) << 32n) : (old & ~0xffff_ffffn) | (raw & 0xffff_ffffn);
    }
    switch (aligned) {
      case MockReg.CONTROL:
        this.control = Number(value & 0x1fn);
        if (this.control & MockControl.CMDQ_EN) this.processCommands();
        break;
      case MockReg.DEVTAB_BASE:
        this.devtab = decodeBase(value);
        break;
      case MockReg.CMDQ_BASE: {
        const b = decodeBase(value);
        this.cmdq = { address: b.address, ring: new RingIndex(Math.min(b.log2, 16), "one-slot-free"), head: 0, tail: 0 };
        break;
      }
      case MockReg.CMDQ_TAIL: {
        const tail = Number(value & 0xffffn);
        if (this.cmdq.ring.valid(tail)) this.cmdq.tail = tail;
        this.processCommands();
        break;
      }
      case MockReg.EVTQ_BASE: {
        // A new base resets both pointers: nothing of the old log is carried over.
        const b = decodeBase(value);
        this.evtq = { address: b.address, ring: new RingIndex(Math.min(b.log2, 16), "one-slot-free"), head: 0, tail: 0 };
        this.status &= ~MockStatus.EVT_OVERFLOW;
        break;
      }
      case MockReg.EVTQ_HEAD: {
        const head = Number(value & 0xffffn);
        if (this.evtq.ring.valid(head)) this.evtq.head = head;
        break;
      }
      case MockReg.IRT_BASE:
        this.irt = decodeBase(value);
        break;
      case MockReg.EVT_MSI_ADDR:
        this.evtMsi.address = Number(value & 0xffff_ffffn);
        break;
      case MockReg.EVT_MSI_DATA:
        this.evtMsi.data = Number(value & 0xffff_ffffn);
        break;
      case MockReg.STATUS_ACK: {
        const ack = Number(value & 0xffff_ffffn);
        const hadCmdError = (this.status & MockStatus.CMD_ERROR) !== 0;
        this.status &= ~(ack & (MockStatus.CMD_ERROR | MockStatus.EVT_OVERFLOW | MockStatus.GLOBAL_ERROR));
        if (hadCmdError && (ack & MockStatus.CMD_ERROR)) {
          // Acknowledging a command error skips the bad command and resumes the queue.
          this.cmdq.head = this.cmdq.ring.next(this.cmdq.head);
          this.processCommands();
        }
        break;
      }
      default:
        if (aligned >= MOCK_VQ_BASE(0) && aligned <= MOCK_VQ_BASE(1)) this.programVqueue((aligned - MOCK_VQ_BASE(0)) / 8, value);
        break;
    }
  }

  // ---- guest-owned queues (vQUEUE) ----

  /**
   * The guest programmed a queue base: allocate (or free) the HW queue. Queue memory must be physically
   * contiguous: the VMM backs it so before handing it to iommufd, as a VMM backs queues with a huge page.
   */
  private programVqueue(index: number, value: bigint): void {
    if (this.viommuId === undefined) return;
    const old = this.vqQueueIds[index];
    if (old !== undefined) {
      if (this.ctx.destroy(old).ok) this.vqQueueIds[index] = undefined;
      else return;
    }
    this.vqBases[index] = value;
    if (value === 0n) return;
    const { address, log2 } = decodeBase(value);
    const length = 2 ** Math.min(log2, 12) * MOCK_CMD_BYTES;
    const q = this.ctx.hwQueueAlloc({ flags: 0, viommuId: this.viommuId, type: MOCK_HW_QUEUE_TYPE, index, nestingParentIova: address, length });
    if (q.ok) this.vqQueueIds[index] = q.value;
    else this.globalError(MockFaultReason.TABLE_OUTSIDE_RAM);
  }

  // ---- command queue ----

  private processCommands(): void {
    if (this.frozen || !(this.control & MockControl.CMDQ_EN) || (this.status & MockStatus.CMD_ERROR)) return;
    const q = this.cmdq;
    for (let budget = q.ring.entries; budget > 0 && !q.ring.isEmpty(q.tail, q.head); budget--) {
      const at = q.address + q.ring.index(q.head) * MOCK_CMD_BYTES;
      if (!this.options.vm.memory.hostReadable(at, MOCK_CMD_BYTES)) {
        this.commandError(q.head, MockCommandError.FETCH);
        return;
      }
      const cmd = decodeMockCommandInto(this.options.vm.memory.readWords(at, this.scratch), this.command);
      this.stats.trapped++;
      const outcome = this.executeCommand(cmd);
      if (outcome !== 0) {
        this.commandError(q.head, outcome);
        return;
      }
      q.head = q.ring.next(q.head);
    }
  }

  /** The queue stops at the command: commands before it took effect, the ones after wait for the acknowledge. */
  private commandError(position: number, reason: number): void {
    this.status |= MockStatus.CMD_ERROR;
    this.injectEvent(encodeMockEvent({ TYPE: MockEventType.CMD_ERROR, REASON: reason, INDEX: position }));
  }

  private globalError(code: number): void {
    this.status |= MockStatus.GLOBAL_ERROR;
    this.injectEvent(encodeMockEvent({ TYPE: MockEventType.GLOBAL_ERROR, REASON: code }));
  }

  /** Executes one trapped command; a nonzero outcome stops the queue there with that reason. */
  private executeCommand(cmd: MockCommand): CommandOutcome {
    switch (cmd.OP) {
      case MockOpcode.INV_DEVICE:
        this.audit?.noteInvalidation("INV_DEVICE", { rid: cmd.RID });
        return this.deviceEntryChanged(cmd.RID) ? 0 : MockCommandError.HOST_REFUSED;
      case MockOpcode.INV_ASID:
      case MockOpcode.INV_ALL:
        return this.invalidate(cmd.ASID, 0, Infinity) ? 0 : MockCommandError.HOST_REFUSED;
      case MockOpcode.INV_RANGE:
        return this.invalidate(cmd.ASID, cmd.ADDR, (cmd.NPAGES + 1) * 4096) ? 0 : MockCommandError.HOST_REFUSED;
      case MockOpcode.INV_IRTE:
        // Interrupt entries are read from guest memory on every remap: nothing cached to drop.
        return 0;
      case MockOpcode.SYNC:
        if (cmd.ADDR !== 0) {
          if (!this.options.vm.memory.hostReadable(cmd.ADDR, 4)) return MockCommandError.ILLEGAL;
          this.options.vm.memory.write32(cmd.ADDR, cmd.DATA);
        }
        if (cmd.IRQ) this.raiseEventInterrupt();
        return 0;
      default:
        return MockCommandError.ILLEGAL;
    }
  }

  private readDeviceEntry(rid: number): ReturnType<typeof decodeMockDeviceEntry> | undefined {
    if (!(this.control & MockControl.TRANSLATE_EN) || rid >= 2 ** this.devtab.log2) return undefined;
    const at = this.devtab.address + rid * MOCK_DTE_BYTES;
    if (!this.options.vm.memory.hostReadable(at, MOCK_DTE_BYTES)) return undefined;
    const raw = this.options.vm.memory.readWords(at, this.scratch);
    if (mockDeviceEntryMalformed(raw)) return undefined;
    return decodeMockDeviceEntry(raw);
  }

  /**
   * The guest changed a device entry: rebuild the host side of that device. False when the host refused the
   * configuration (the refusal is in the host log; the device is left blocked, never on a stale table).
   */
  private deviceEntryChanged(rid: number): boolean {
    const a = this.assigned.get(rid);
    if (a === undefined || this.mode === "ir-only") return true;
    const entry = this.readDeviceEntry(rid);
    const r = this.mode === "nested" ? this.applyNested(a, entry) : this.applyShadow(a, entry);
    // A shadow installed up to the back end's limit stays attached: what is mapped works, the rest faults.
    if (r.ok) return r.value.refusedMappings === 0;
    this.log.record({ vm: this.options.vm.id, source: this.source, kind: "configuration-refused", error: r.error, message: `device 0x${rid.toString(16)}: ${r.error.errno} ${r.error.message}` });
    // Whatever was half-built, the device must not keep translating through its old configuration.
    this.ctx.detach(a.devId);
    if (a.hwptId !== undefined) this.ctx.destroy(a.hwptId);
    a.hwptId = undefined;
    a.shadowAsid = undefined;
    return false;
  }

  private applyNested(a: AssignedDevice, entry: ReturnType<typeof decodeMockDeviceEntry> | undefined): Result<Applied> {
    const previous = a.hwptId;
    const dropPrevious = (): Result<Applied> => {
      const r = previous === undefined ? ok() : this.ctx.destroy(previous);
      return r.ok ? ok(APPLIED) : fail(r);
    };
    if (entry === undefined || !entry.V) {
      const r = this.ctx.detach(a.devId);
      if (!r.ok) return fail(r);
      a.hwptId = undefined;
      return dropPrevious();
    }
    if (!entry.TR) {
      const r = this.ctx.attach(a.devId, this.options.parentHwptId);
      if (!r.ok) return fail(r);
      a.hwptId = undefined;
      return dropPrevious();
    }
    const hwpt = this.ctx.hwptAlloc({
      flags: 0,
      devId: a.devId,
      ptId: this.viommuId!,
      data: { type: MOCK_HWPT_DATA_TYPE, bytes: encodeMockS1({ s1Root: entry.S1ROOT, asid: entry.ASID, flags: 0 }) },
    });
    if (!hwpt.ok) return fail(hwpt);
    const attached = this.ctx.attach(a.devId, hwpt.value);
    if (!attached.ok) {
      this.ctx.destroy(hwpt.value);
      return fail(attached);
    }
    a.hwptId = hwpt.value;
    return dropPrevious();
  }

  private applyShadow(a: AssignedDevice, entry: ReturnType<typeof decodeMockDeviceEntry> | undefined): Result<Applied> {
    if (entry === undefined || !entry.V || !entry.TR) {
      a.shadowAsid = undefined;
      const r = entry !== undefined && entry.V && !entry.TR ? this.ctx.attach(a.devId, this.options.ioasId) : this.ctx.detach(a.devId);
      return r.ok ? ok(APPLIED) : fail(r);
    }
    let space = this.shadows.get(entry.ASID);
    let refusedMappings = 0;
    if (space === undefined || space.root !== entry.S1ROOT) {
      if (space !== undefined) this.dropShadow(entry.ASID, space);
      const backend = createShadowBackend(this.options.shadowBackend ?? "iommufd", this.ctx, this.options.vm.memory, this.options.dmaEntryLimit);
      if (!backend.ok) return fail(backend);
      space = { mirror: new ShadowMirror(backend.value, this.options.vm.memory, { log: this.log, vm: this.options.vm.id, source: this.source }), root: entry.S1ROOT };
      this.shadows.set(entry.ASID, space);
      refusedMappings = this.resync(space, 0, Infinity);
    }
    const r = this.ctx.attach(a.devId, space.mirror.backend.ioasId);
    if (!r.ok) return fail(r);
    a.shadowAsid = entry.ASID;
    return ok({ refusedMappings });
  }

  /** A shadow space whose table changed or that nobody uses: its mappings and IOAS go. */
  private dropShadow(asid: number, space: ShadowSpace): void {
    space.mirror.clear();
    this.shadows.delete(asid);
    if ([...this.assigned.values()].every((d) => d.shadowAsid !== asid)) this.logIfFailed(this.ctx.destroy(space.mirror.backend.ioasId), "other", "destroying a shadow IOAS");
  }

  /**
   * An invalidation: forwarded to the host (nested) or the shadow recomputed over the range (shadow). False
   * when the host refused it: the command then stops the queue with HOST_REFUSED, the refusal is in the host
   * log, and only what the host accepted counts as forwarded.
   */
  private invalidate(asid: number, address: number, length: number): boolean {
    if (this.mode === "nested" && this.viommuId !== undefined) {
      const all = !Number.isFinite(length);
      const entry = encodeMockInvalidate({
        flags: all ? MockInvalidateFlag.ALL : 0,
        asid,
        addr: all ? 0n : BigInt(address),
        npages: all ? 0n : BigInt(Math.ceil(length / 4096)),
      });
      const r = this.ctx.hwptInvalidate({ hwptId: this.viommuId, dataType: MOCK_INVALIDATE_DATA_TYPE, entryLen: MOCK_INVALIDATE_BYTES, entryNum: 1, entries: entry });
      this.stats.forwarded += r.handled;
      if (!r.result.ok) {
        this.log.record({ vm: this.options.vm.id, source: this.source, kind: "invalidation-refused", error: r.result.error, message: `INV ASID ${asid}: ${r.result.error.errno} ${r.result.error.message}` });
        return false;
      }
      return true;
    }
    if (this.mode === "shadow") {
      const space = this.shadows.get(asid);
      if (space === undefined) return true;
      if (this.resync(space, address, length) > 0) return false;
      this.stats.forwarded++;
      return true;
    }
    return true;
  }

  /**
   * Caching mode: makes the shadow equal to the guest's table over the range. A mapping the back end refuses
   * (the type1 entry limit) stays unmapped, so the device faults there rather than reaching a stale page, and
   * the invalidation that asked for it fails (ENOSPC) so the guest learns of it at once.
   */
  private resync(space: ShadowSpace, address: number, length: number): number {
    const report = space.mirror.resync({ format: mockPteFormat, geometry: mockGeometry, root: space.root, reader: this.reader }, address, length);
    this.stats.shadowMappings = [...this.shadows.values()].reduce((n, sp) => n + sp.mirror.entries, 0);
    return report.refused;
  }

  // ---- events ----

  /**
   * Writes one record into the guest's event log. A full log sets the overflow bit and drops the record:
   * the guest sees that it lost events, never a silently missing one.
   */
  private injectEvent(record: Uint32Array): void {
    const q = this.evtq;
    if (!(this.control & MockControl.EVTQ_EN) || q.ring.entries < 2) return;
    if (q.ring.isFull(q.tail, q.head)) {
      this.status |= MockStatus.EVT_OVERFLOW;
      this.events.emit("overflow", { vm: this.options.vm.id, queue: "mock-event-log" });
      return;
    }
    const at = q.address + q.ring.index(q.tail) * MOCK_EVENT_BYTES;
    if (!this.options.vm.memory.hostReadable(at, MOCK_EVENT_BYTES)) {
      this.status |= MockStatus.GLOBAL_ERROR;
      return;
    }
    this.options.vm.memory.writeWords(at, record);
    q.tail = q.ring.next(q.tail);
    this.stats.eventsInjected++;
    this.raiseEventInterrupt();
  }

  private raiseEventInterrupt(): void {
    if (!(this.control & MockControl.EVT_INT_EN) || this.evtMsi.address === 0) return;
    const destination = (this.evtMsi.address >>> 12) & 0xff;
    const vector = this.evtMsi.data & 0xff;
    this.options.vm.inject(vector, destination, "mock-iommu-event");
  }

  /**
   * The VMM's event loop: the vEVENTQ drained into the guest's log (nested), and the host's faults for this VM's
   * devices (shadow and stage-2 faults, which the host keeps) recorded as the guest's tables explain them.
   */
  poll(): void {
    if (this.frozen) return;
    this.pollHostFaults();
    this.pollVeventq();
  }

  /**
   * A fault in a shadow (or the stage 2 under a guest's stage 1) is the host's first: the guest sees it only when
   * its own tables refuse the access, with the reason the emulated unit would give (translateEmulated records it,
   * honouring FPD). One the guest's tables translate is the VMM's own business (a refused shadow mapping is in
   * the host log already). Reports the host dropped unread set the overflow bit.
   */
  private pollHostFaults(): void {
    if (!(this.options.unit instanceof MockUnit)) return;
    const { faults, lost } = this.options.unit.readHostFaults(this.options.vm.id);
    if (lost > 0) this.status |= MockStatus.EVT_OVERFLOW;
    for (const f of faults) {
      for (const [guestRid, a] of this.assigned) {
        if (a.device.requesterId === f.requesterId) this.translateEmulated(guestRid, NO_PASID, f.iova, f.write, this.hostFaultWalk);
      }
    }
  }

  /** Drains the vEVENTQ into the guest's log, with the virtual RIDs the host already put in. */
  private pollVeventq(): void {
    if (this.veventq === undefined) return;
    for (;;) {
      const bytes = this.veventq.read(64 * (8 + MOCK_VEVENT_BYTES));
      if (!bytes.ok || bytes.value.length === 0) return;
      for (const record of parseVevents(bytes.value, MOCK_VEVENT_BYTES)) {
        if (veventsLost(this.lastSequence, record)) this.status |= MockStatus.EVT_OVERFLOW;
        this.lastSequence = record.sequence;
        if (record.payload !== undefined) this.injectEvent(fromBytes(record.payload, 0, 128));
      }
    }
  }

  // ---- emulated devices ----

  translateEmulated(guestRid: number, pasid: number, iova: number, write: boolean, out: WalkResult): void {
    const access = write ? Perm.Write : Perm.Read;
    const entry = this.readDeviceEntry(guestRid);
    if (!(this.control & MockControl.TRANSLATE_EN) || (entry !== undefined && entry.V && !entry.TR)) {
      out.ok = this.options.vm.memory.contains(iova);
      out.output = iova;
      out.pageShift = 12;
      out.perms = Perm.ReadWrite;
      out.fault = out.ok ? WalkFault.None : WalkFault.AddressSize;
      return;
    }
    if (entry === undefined || !entry.V || pasid !== NO_PASID) {
      out.ok = false;
      out.mapped = false;
      out.fault = WalkFault.Translation;
      out.stage = 1;
      this.injectEvent(encodeMockEvent({ TYPE: MockEventType.DMA_FAULT, REASON: MockFaultReason.BAD_DEVICE_ENTRY, RID: guestRid, WRITE: write ? 1 : 0, ADDR: BigInt(iova) }));
      return;
    }
    this.walker.walk(mockPteFormat, mockGeometry, entry.S1ROOT, iova, access, this.reader, out);
    if (out.ok && !this.options.vm.memory.contains(out.output)) {
      out.ok = false;
      out.fault = WalkFault.AddressSize;
    }
    if (!out.ok && !entry.FPD) {
      this.injectEvent(
        encodeMockEvent({ TYPE: MockEventType.DMA_FAULT, REASON: mockFaultReason(out, true), RID: guestRid, WRITE: write ? 1 : 0, STAGE: 1, ADDR: BigInt(iova) }),
      );
    }
  }

  // ---- interrupt remapping ----

  deliverMsi(guestRid: number, msi: MsiMessage): InterruptResult {
    const result = this.remap(guestRid, msi);
    if (result.ok) this.options.vm.inject(result.irq.vector, result.irq.destination, `msi:${guestRid.toString(16)}`);
    else this.injectEvent(encodeMockEvent({ TYPE: MockEventType.IR_FAULT, REASON: result.fault.code, RID: guestRid, INDEX: result.fault.index ?? 0 }));
    return result;
  }

  private remap(guestRid: number, msi: MsiMessage): InterruptResult {
    const fault = (code: number, name: string, index?: number): InterruptResult => ({ ok: false, fault: { code, name, index } });
    if (!(this.control & MockControl.IR_EN)) {
      // Remapping off: compatibility format, vector in data, destination in address bits 19:12.
      return { ok: true, irq: { vector: msi.data & 0xff, destination: (msi.address >>> 12) & 0xff, destinationMode: "physical", deliveryMode: 0, trigger: "edge" } };
    }
    const index = mockMsiIndex(msi.address);
    if (index === undefined) return fault(MockFaultReason.IRTE_NOT_PRESENT, "IRTE_NOT_PRESENT");
    if (index >= 2 ** this.irt.log2) return fault(MockFaultReason.IRTE_INDEX_RANGE, "IRTE_INDEX_RANGE", index);
    const at = this.irt.address + index * MOCK_IRTE_BYTES;
    if (!this.options.vm.memory.hostReadable(at, MOCK_IRTE_BYTES)) return fault(MockFaultReason.IRTE_NOT_PRESENT, "IRTE_NOT_PRESENT", index);
    const irte = decodeMockIrte(this.options.vm.memory.readWords(at, this.scratch.subarray(0, 2)));
    if (!irte.P) return fault(MockFaultReason.IRTE_NOT_PRESENT, "IRTE_NOT_PRESENT", index);
    if (irte.SVT && irte.SID !== guestRid) return fault(MockFaultReason.IRTE_SID_MISMATCH, "IRTE_SID_MISMATCH", index);
    return { ok: true, irq: { vector: irte.VECTOR, destination: irte.DEST, destinationMode: "physical", deliveryMode: 0, trigger: "edge" } };
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

  save(): Uint8Array {
    return saveFrozen(this, () => {
      const state: StateValue = {
        control: this.control,
        status: this.status,
        devtab: [this.devtab.address, this.devtab.log2],
        cmdq: [this.cmdq.address, this.cmdq.ring.log2Entries, this.cmdq.head, this.cmdq.tail],
        evtq: [this.evtq.address, this.evtq.ring.log2Entries, this.evtq.head, this.evtq.tail],
        irt: [this.irt.address, this.irt.log2],
        evtMsi: [this.evtMsi.address, this.evtMsi.data],
        vqBases: this.vqBases.map((b) => b.toString()),
      };
      const blob = encodeState("mock-iommu", STATE_VERSION, state);
      this.events.emit("migration", { vm: this.options.vm.id, phase: "saved", bytes: blob.length });
      return blob;
    });
  }

  /**
   * Restores registers, then rebuilds the host side from the guest's tables (device entries, queues), as a
   * destination VMM does: the guest's memory came over with it. The stream is checked field by field first
   * (a forged or corrupted one is refused naming the field, and nothing changes).
   */
  restore(blob: Uint8Array): Result<void> {
    const decoded = decodeState(blob, "mock-iommu", [STATE_VERSION]);
    if (!decoded.ok) return fail(decoded);
    const parsed = StateReader.read(decoded.value.value, "mock", parseMockState);
    if (!parsed.ok) return fail(parsed);
    const st = parsed.value;
    this.frozen = true;
    this.control = st.control;
    this.status = st.status;
    this.devtab = st.devtab;
    this.cmdq = { address: st.cmdq.address, ring: new RingIndex(st.cmdq.log2, "one-slot-free"), head: st.cmdq.head, tail: st.cmdq.tail };
    this.evtq = { address: st.evtq.address, ring: new RingIndex(st.evtq.log2, "one-slot-free"), head: st.evtq.head, tail: st.evtq.tail };
    this.irt = st.irt;
    this.evtMsi = st.evtMsi;
    st.vqBases.forEach((b, i) => this.programVqueue(i, b));
    for (const rid of this.assigned.keys()) this.deviceEntryChanged(rid);
    this.frozen = false;
    this.events.emit("migration", { vm: this.options.vm.id, phase: "restored", bytes: blob.length });
    return ok();
  }

  /** Tears down in dependency order: attachments, queues, vDEVICEs, the vEVENTQ, then the vIOMMU. */
  destroy(): void {
    for (const a of this.assigned.values()) {
      this.ctx.detach(a.devId);
      if (a.hwptId !== undefined) this.ctx.destroy(a.hwptId);
      a.device.msiTarget = undefined;
      this.stopAudit(a.device);
    }
    this.assigned.clear();
    for (const id of this.vqQueueIds.slice().reverse()) if (id !== undefined) this.ctx.destroy(id);
    this.vqueueMapping?.unmap();
    for (const id of this.vdevices.values()) this.logIfFailed(this.ctx.destroy(id), "other", "destroying a vDEVICE");
    this.veventq?.close();
    if (this.veventqId !== undefined) this.ctx.destroy(this.veventqId);
    if (this.viommuId !== undefined) this.ctx.destroy(this.viommuId);
    this.registers?.unmap();
  }
}
