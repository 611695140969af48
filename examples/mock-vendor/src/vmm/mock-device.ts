import {
  createShadowBackend,
  HostServices,
  resolveToken,
  type CoreEvents,
  type EventBus,
  decodeState,
  encodeState,
  err,
  fail,
  forEachLeaf,
  fromBytes,
  GuestTableReader,
  NO_PASID,
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
  type PermBits,
  type Result,
  type ShadowBackend,
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
import { encodeMockEvent, MOCK_EVENT_BYTES, MockEventType, MockFaultReason } from "../format/event.js";
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
  readonly backend: ShadowBackend;
  readonly root: number;
  /** Installed mappings: IOVA → [GPA, length, perms]. */
  readonly maps: Map<number, [number, number, PermBits]>;
}

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
  private readonly vdeviceIds: number[] = [];
  private lastSequence = -1;
  private vqueueMapping: { unmap(): void } | undefined;
  private registers: { unmap(): void } | undefined;
  private readonly walker = new PageWalker();
  private readonly reader: GuestTableReader;
  private readonly scratch = new Uint32Array(4);
  /** The command being executed, decoded in place: consuming the queue allocates nothing per command. */
  private readonly command: MockCommand = decodeMockCommand(new Uint32Array(4));

  private readonly events: EventBus<CoreEvents>;

  private constructor(private readonly options: VmmDeviceOptions) {
    this.events = resolveToken(options.vm.container, HostServices).events;
    this.mode = options.mode;
    this.mmioBase = options.mmioBase ?? MOCK_DEFAULT_MMIO_BASE + (options.instance ?? 0) * 0x10000;
    this.reader = new GuestTableReader(options.vm.memory);
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
      this.vdeviceIds.push(vdev.value);
    }
    this.assigned.set(guestRid, { device, devId, hwptId: undefined, shadowAsid: undefined });
    device.msiTarget = (msi) => void this.deliverMsi(guestRid, msi);
    if (this.mode === "ir-only") {
      const r = this.ctx.attach(devId, this.options.parentHwptId);
      if (!r.ok) return fail(r);
    }
    return ok();
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
        this.commandError(q.head);
        return;
      }
      const cmd = decodeMockCommandInto(this.options.vm.memory.readWords(at, this.scratch), this.command);
      this.stats.trapped++;
      if (!this.executeCommand(cmd)) {
        this.commandError(q.head);
        return;
      }
      q.head = q.ring.next(q.head);
    }
  }

  private commandError(position: number): void {
    this.status |= MockStatus.CMD_ERROR;
    this.injectEvent(encodeMockEvent({ TYPE: MockEventType.CMD_ERROR, REASON: 1, INDEX: position }));
  }

  private globalError(code: number): void {
    this.status |= MockStatus.GLOBAL_ERROR;
    this.injectEvent(encodeMockEvent({ TYPE: MockEventType.GLOBAL_ERROR, REASON: code }));
  }

  /** Executes one trapped command; false marks it illegal (the queue stops there). */
  private executeCommand(cmd: MockCommand): boolean {
    switch (cmd.OP) {
      case MockOpcode.INV_DEVICE:
        this.deviceEntryChanged(cmd.RID);
        return true;
      case MockOpcode.INV_ASID:
      case MockOpcode.INV_ALL:
        this.invalidate(cmd.ASID, 0, Infinity);
        return true;
      case MockOpcode.INV_RANGE:
        this.invalidate(cmd.ASID, cmd.ADDR, (cmd.NPAGES + 1) * 4096);
        return true;
      case MockOpcode.INV_IRTE:
        // Interrupt entries are read from guest memory on every remap: nothing cached to drop.
        return true;
      case MockOpcode.SYNC:
        if (cmd.ADDR !== 0) {
          if (!this.options.vm.memory.hostReadable(cmd.ADDR, 4)) return false;
          this.options.vm.memory.write32(cmd.ADDR, cmd.DATA);
        }
        if (cmd.IRQ) this.raiseEventInterrupt();
        return true;
      default:
        return false;
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

  /** The guest changed a device entry: rebuild the host side of that device. */
  private deviceEntryChanged(rid: number): void {
    const a = this.assigned.get(rid);
    if (a === undefined || this.mode === "ir-only") return;
    const entry = this.readDeviceEntry(rid);
    if (this.mode === "nested") this.applyNested(a, entry);
    else this.applyShadow(a, entry);
  }

  private applyNested(a: AssignedDevice, entry: ReturnType<typeof decodeMockDeviceEntry> | undefined): void {
    const previous = a.hwptId;
    if (entry === undefined || !entry.V) {
      if (previous !== undefined) {
        this.ctx.detach(a.devId);
        this.ctx.destroy(previous);
        a.hwptId = undefined;
      }
      return;
    }
    if (!entry.TR) {
      this.ctx.attach(a.devId, this.options.parentHwptId);
      if (previous !== undefined) this.ctx.destroy(previous);
      a.hwptId = undefined;
      return;
    }
    const hwpt = this.ctx.hwptAlloc({
      flags: 0,
      devId: a.devId,
      ptId: this.viommuId!,
      data: { type: MOCK_HWPT_DATA_TYPE, bytes: encodeMockS1({ s1Root: entry.S1ROOT, asid: entry.ASID, flags: 0 }) },
    });
    if (!hwpt.ok) return;
    if (!this.ctx.attach(a.devId, hwpt.value).ok) {
      this.ctx.destroy(hwpt.value);
      return;
    }
    if (previous !== undefined) this.ctx.destroy(previous);
    a.hwptId = hwpt.value;
  }

  private applyShadow(a: AssignedDevice, entry: ReturnType<typeof decodeMockDeviceEntry> | undefined): void {
    if (entry === undefined || !entry.V || !entry.TR) {
      if (a.shadowAsid !== undefined) this.ctx.detach(a.devId);
      a.shadowAsid = undefined;
      if (entry !== undefined && entry.V && !entry.TR) this.ctx.attach(a.devId, this.options.ioasId);
      return;
    }
    let space = this.shadows.get(entry.ASID);
    if (space === undefined || space.root !== entry.S1ROOT) {
      const backend = createShadowBackend(this.options.shadowBackend ?? "iommufd", this.ctx, this.options.vm.memory, this.options.dmaEntryLimit);
      if (!backend.ok) return;
      space = { backend: backend.value, root: entry.S1ROOT, maps: new Map() };
      this.shadows.set(entry.ASID, space);
      this.resync(space, 0, Infinity);
    }
    if (this.ctx.attach(a.devId, space.backend.ioasId).ok) a.shadowAsid = entry.ASID;
  }

  /** An invalidation: forward it (nested) or recompute the shadow mappings of the range (shadow). */
  private invalidate(asid: number, address: number, length: number): void {
    this.stats.forwarded++;
    if (this.mode === "nested" && this.viommuId !== undefined) {
      const all = !Number.isFinite(length);
      const entry = encodeMockInvalidate({
        flags: all ? MockInvalidateFlag.ALL : 0,
        asid,
        addr: all ? 0n : BigInt(address),
        npages: all ? 0n : BigInt(Math.ceil(length / 4096)),
      });
      this.ctx.hwptInvalidate({ hwptId: this.viommuId, dataType: MOCK_INVALIDATE_DATA_TYPE, entryLen: MOCK_INVALIDATE_BYTES, entryNum: 1, entries: entry });
      return;
    }
    if (this.mode === "shadow") {
      const space = this.shadows.get(asid);
      if (space !== undefined) this.resync(space, address, length);
    }
  }

  /**
   * Caching mode: walks the guest's table over the range and makes the shadow equal to it: stale mappings
   * removed, new ones installed. A back end that refuses a map (the type1 entry limit) leaves the page
   * unmapped, so the device faults there rather than reaching a stale page.
   */
  private resync(space: ShadowSpace, address: number, length: number): void {
    const end = Number.isFinite(length) ? address + length : Number.MAX_SAFE_INTEGER;
    for (const [iova, [, size]] of [...space.maps]) {
      if (iova < end && iova + size > address) {
        space.backend.unmap(iova, size);
        space.maps.delete(iova);
      }
    }
    const span = Number.isFinite(length) ? length : 2 ** mockGeometry.inputBits;
    forEachLeaf(mockPteFormat, mockGeometry, space.root, this.reader, address, span, (leaf) => {
      const size = 2 ** leaf.pageShift;
      if (leaf.input < address || leaf.input + size > end || space.maps.has(leaf.input)) return;
      if (!this.options.vm.memory.contains(leaf.output, size) || (leaf.perms & Perm.ReadWrite) === 0) return;
      if (space.backend.map(leaf.input, leaf.output, size, leaf.perms & Perm.ReadWrite).ok) space.maps.set(leaf.input, [leaf.output, size, leaf.perms]);
    });
    this.stats.shadowMappings = [...this.shadows.values()].reduce((n, s) => n + s.maps.size, 0);
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

  /** Drains the vEVENTQ into the guest's log, with the virtual RIDs the host already put in. */
  poll(): void {
    if (this.frozen || this.veventq === undefined) return;
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
      this.injectEvent(encodeMockEvent({ TYPE: MockEventType.DMA_FAULT, REASON: MockFaultReason.BAD_DEVICE_ENTRY, RID: guestRid, WRITE: write ? 1 : 0, ADDR: iova }));
      return;
    }
    this.walker.walk(mockPteFormat, mockGeometry, entry.S1ROOT, iova, access, this.reader, out);
    if (out.ok && !this.options.vm.memory.contains(out.output)) {
      out.ok = false;
      out.fault = WalkFault.AddressSize;
    }
    if (!out.ok && !entry.FPD) {
      this.injectEvent(
        encodeMockEvent({ TYPE: MockEventType.DMA_FAULT, REASON: mockFaultReason(out, true), RID: guestRid, WRITE: write ? 1 : 0, STAGE: 1, ADDR: iova }),
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
   * destination VMM does: the guest's memory came over with it.
   */
  restore(blob: Uint8Array): Result<void> {
    const decoded = decodeState(blob, "mock-iommu", [STATE_VERSION]);
    if (!decoded.ok) return fail(decoded);
    const s = decoded.value.value as Record<string, StateValue>;
    const nums = (k: string): number[] => (Array.isArray(s[k]) ? (s[k] as StateValue[]).map((x) => Number(x)) : []);
    if (typeof s.control !== "number" || typeof s.status !== "number") return err("EINVAL", "mock state lacks registers");
    const [devAddr = 0, devLog2 = 0] = nums("devtab");
    const [cAddr = 0, cLog2 = 0, cHead = 0, cTail = 0] = nums("cmdq");
    const [eAddr = 0, eLog2 = 0, eHead = 0, eTail = 0] = nums("evtq");
    const [iAddr = 0, iLog2 = 0] = nums("irt");
    const [mAddr = 0, mData = 0] = nums("evtMsi");
    this.frozen = true;
    this.control = s.control;
    this.status = s.status;
    this.devtab = { address: devAddr, log2: devLog2 };
    this.cmdq = { address: cAddr, ring: new RingIndex(cLog2, "one-slot-free"), head: cHead, tail: cTail };
    this.evtq = { address: eAddr, ring: new RingIndex(eLog2, "one-slot-free"), head: eHead, tail: eTail };
    this.irt = { address: iAddr, log2: iLog2 };
    this.evtMsi = { address: mAddr, data: mData };
    const bases = Array.isArray(s.vqBases) ? (s.vqBases as StateValue[]).map((b) => BigInt(String(b))) : [];
    bases.forEach((b, i) => this.programVqueue(i, b));
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
    }
    this.assigned.clear();
    for (const id of this.vqQueueIds.slice().reverse()) if (id !== undefined) this.ctx.destroy(id);
    this.vqueueMapping?.unmap();
    for (const id of this.vdeviceIds) this.ctx.destroy(id);
    this.veventq?.close();
    if (this.veventqId !== undefined) this.ctx.destroy(this.veventqId);
    if (this.viommuId !== undefined) this.ctx.destroy(this.viommuId);
    this.registers?.unmap();
  }
}
