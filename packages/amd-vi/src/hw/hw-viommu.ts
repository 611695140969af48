import { ok, err, type MmioRegion, type Result } from "@viommu/core";
import { CommandOpcode, commandOpcode, commandProblem, decodeInvalidationRange, newInvalidationRange } from "../format/command.js";
import { controlLayout } from "../format/control-register.js";
import { commandHardwareErrorEvent, illegalCommandEvent } from "../format/fault-event.js";
import { MmioOffset } from "../format/mmio-register-map.js";
import { RING_POINTER_MASK_16 } from "../format/ring-pointer-registers.js";
import { STATUS_W1C_MASK, StatusBit } from "../format/status-register.js";
import { VfMmioOffset, type AmdHwQueueKind } from "../format/vf-mmio.js";
import type { Stage2Access } from "./stage2-access.js";

/** What the hardware vIOMMU needs from its vIOMMU and unit (kept narrow so this file is only the rings). */
export interface HwViommuPorts {
  readonly stage2: Stage2Access;
  /** Drops cached translations of a guest DomainID (mapped to its host DomainID); `pasid` undefined = every PASID. */
  invalidateGuestDomain(gdomId: number, pasid: number | undefined, base: number, size: number, all: boolean): void;
  invalidateAllGuestDomains(): void;
  /** Whether a guest DeviceID is a passthrough device the hypervisor manages (the device-ID map). */
  isMappedDevice(gDevId: number): boolean;
  /** Whether the hypervisor manages any passthrough device. */
  hasMappedDevices(): boolean;
  /** Hands a command to the hypervisor (a vEVENT); false when no one listens (the command then completes). */
  intercept(command: Uint32Array): boolean;
}

interface GuestRing {
  base: number;
  bytes: number;
  head: number;
  tail: number;
}

const bit = (name: Parameters<typeof controlLayout.field>[0]): number => controlLayout.field(name).bit;
const CONTROL_IOMMU_EN = bit("IommuEn");
const CONTROL_EVENT_LOG_EN = bit("EventLogEn");
const CONTROL_EVENT_INT_EN = bit("EventIntEn");
const CONTROL_COM_WAIT_INT_EN = bit("ComWaitIntEn");
const CONTROL_CMD_BUF_EN = bit("CmdBufEn");
const CONTROL_PPR_LOG_EN = bit("PPRLogEn");
const CONTROL_PPR_INT_EN = bit("PPRIntEn");
const CONTROL_INT_CAP_XT_EN = bit("IntCapXTEn");
const RING_ENTRY = 16;

function ringBytesFor(lengthCode: number): number {
  return 2 ** (lengthCode + 4);
}

/**
 * The IOMMU's per-guest hardware vIOMMU state: the guest's command buffer, event log and PPR log as rings
 * the IOMMU reads and writes by guest physical address through stage 2, and the VF-MMIO page (head, tail,
 * Status) the guest drives directly. A tail write starts command processing with no VM exit; invalidations
 * are translated through the guest-DomainID map and applied to the IOTLB; COMPLETION_WAIT stores into guest
 * memory and posts the guest's interrupt. A device table change, a passthrough device's interrupt table and a
 * page request's response are the hypervisor's business: the IOMMU stops at INVALIDATE_DEVTAB_ENTRY,
 * INVALIDATE_INTERRUPT_TABLE or COMPLETE_PPR_REQUEST for a mapped device (and after INVALIDATE_IOMMU_ALL while
 * any device is mapped, for the interrupt tables it covers) and hands it over until the hypervisor resumes the
 * buffer.
 *
 * Ring lengths follow QEMU in accepting codes below 8 (reserved in the spec) as 2^len entries.
 */
export class AmdHwViommuRings implements MmioRegion {
  /** Control as two 32-bit halves, so the queue loop tests bits without BigInt. */
  private controlLo = 0;
  private controlHi = 0;
  private status = 0;
  /** The command processor stopped on an error (CmdBufRun clear until CmdBufEn is toggled). */
  private halted = false;
  /** Waiting for the hypervisor to finish an intercepted command at `head`. */
  private stalled = false;
  private busy = false;
  private again = false;
  private cmd: GuestRing | undefined;
  private evt: GuestRing | undefined;
  private ppr: GuestRing | undefined;
  private xtEventInterrupt = 0n;
  private xtPprInterrupt = 0n;
  private msiAddressLow = 0;
  private msiData = 0;
  private post: ((vector: number, destination: number) => void) | undefined;
  private readonly scratch = new Uint32Array(4);
  private readonly range = newInvalidationRange();
  private readonly store = new Uint32Array(2);
  /** Commands the hardware executed without the hypervisor. */
  consumed = 0;
  /** Interrupts raised with no posting route programmed (the guest would never see them). */
  undeliveredInterrupts = 0;
  /** Events the log could not take (full, disabled, overflowed or unreachable). */
  droppedEvents = 0;

  constructor(private readonly ports: HwViommuPorts) {}

  private controlBit(b: number): boolean {
    return b < 32 ? ((this.controlLo >>> b) & 1) === 1 : ((this.controlHi >>> (b - 32)) & 1) === 1;
  }

  private get commandsRun(): boolean {
    return this.cmd !== undefined && !this.halted && this.controlBit(CONTROL_IOMMU_EN) && this.controlBit(CONTROL_CMD_BUF_EN);
  }

  private get eventsRun(): boolean {
    return this.evt !== undefined && this.controlBit(CONTROL_IOMMU_EN) && this.controlBit(CONTROL_EVENT_LOG_EN);
  }

  private get pprRun(): boolean {
    return this.ppr !== undefined && this.controlBit(CONTROL_IOMMU_EN) && this.controlBit(CONTROL_PPR_LOG_EN);
  }

  /** Status as the guest reads it: the sticky bits plus the run bits the enables imply. */
  get statusValue(): number {
    let s = this.status;
    if (this.commandsRun) s |= StatusBit.CmdBufRun;
    if (this.eventsRun) s |= StatusBit.EventLogRun;
    if (this.pprRun) s |= StatusBit.PPRLogRun;
    return s;
  }

  // ---- hypervisor side ----

  queueInit(kind: AmdHwQueueKind, baseGpa: number, lengthCode: number): Result<void> {
    if (!Number.isSafeInteger(baseGpa) || baseGpa < 0 || baseGpa % 4096 !== 0 || baseGpa >= 2 ** 52) return err("EINVAL", "queue base is not a 4 KiB-aligned 52-bit address");
    if (!Number.isInteger(lengthCode) || lengthCode < 0 || lengthCode > 15) return err("EINVAL", `queue length code ${lengthCode}`);
    const ring: GuestRing = { base: baseGpa, bytes: ringBytesFor(lengthCode), head: 0, tail: 0 };
    if (kind === "command") {
      this.cmd = ring;
      this.halted = false;
      this.stalled = false;
    } else if (kind === "event") this.evt = ring;
    else this.ppr = ring;
    return ok();
  }

  queueDestroy(kind: AmdHwQueueKind): void {
    if (kind === "command") this.cmd = undefined;
    else if (kind === "event") this.evt = undefined;
    else this.ppr = undefined;
  }

  /** Guest registers the hypervisor forwards (and, for migration, the VF-page registers it restores). */
  setGuestRegister(offset: number, value: bigint): Result<void> {
    switch (offset) {
      case MmioOffset.Control: {
        const wasEnabled = this.controlBit(CONTROL_CMD_BUF_EN);
        this.controlLo = Number(value & 0xffff_ffffn);
        this.controlHi = Number((value >> 32n) & 0xffff_ffffn);
        // Re-enabling the command buffer clears a halt (the AMD restart procedure).
        if (!wasEnabled && this.controlBit(CONTROL_CMD_BUF_EN)) this.halted = false;
        this.kick();
        return ok();
      }
      case MmioOffset.XtGeneralInterruptControl:
        this.xtEventInterrupt = value;
        return ok();
      case MmioOffset.XtPprInterruptControl:
        this.xtPprInterrupt = value;
        return ok();
      case MmioOffset.MsiAddressLow:
        this.msiAddressLow = Number(value & 0xffff_ffffn);
        return ok();
      case MmioOffset.MsiData:
        this.msiData = Number(value & 0xffff_ffffn);
        return ok();
      case MmioOffset.Status:
        this.status = Number(value & BigInt(STATUS_W1C_MASK));
        return ok();
      case MmioOffset.CommandBufferHead:
      case MmioOffset.CommandBufferTail:
      case MmioOffset.EventLogHead:
      case MmioOffset.EventLogTail:
      case MmioOffset.PprLogHead:
      case MmioOffset.PprLogTail:
        this.setPointer(offset - MmioOffset.CommandBufferHead, Number(value & 0xffff_ffffn), true);
        return ok();
      default:
        return err("EINVAL", `register 0x${offset.toString(16)} is not forwarded to the hardware vIOMMU`);
    }
  }

  setInterruptPost(post: ((vector: number, destination: number) => void) | undefined): void {
    this.post = post;
  }

  get commandsHalted(): boolean {
    return this.halted;
  }

  /** The hypervisor restores an error stop (migration); clearing it lets the buffer run on. */
  setCommandsHalted(halted: boolean): void {
    this.halted = halted;
    if (!halted) this.kick();
  }

  /** The hypervisor finished an intercepted command: step past it and go on. */
  resume(): void {
    if (!this.stalled || this.cmd === undefined) return;
    this.cmd.head = (this.cmd.head + RING_ENTRY) % this.cmd.bytes;
    this.stalled = false;
    this.kick();
  }

  // ---- the VF-MMIO page (guest side, no exits) ----

  read(offset: number, size: 4 | 8): bigint {
    const value = this.registerValue(offset & ~7);
    return size === 8 ? value : (offset & 4 ? value >> 32n : value) & 0xffff_ffffn;
  }

  private registerValue(offset: number): bigint {
    switch (offset) {
      case VfMmioOffset.CommandBufferHead:
        return BigInt(this.cmd?.head ?? 0);
      case VfMmioOffset.CommandBufferTail:
        return BigInt(this.cmd?.tail ?? 0);
      case VfMmioOffset.EventLogHead:
        return BigInt(this.evt?.head ?? 0);
      case VfMmioOffset.EventLogTail:
        return BigInt(this.evt?.tail ?? 0);
      case VfMmioOffset.Status:
        return BigInt(this.statusValue);
      case VfMmioOffset.PprLogHead:
        return BigInt(this.ppr?.head ?? 0);
      case VfMmioOffset.PprLogTail:
        return BigInt(this.ppr?.tail ?? 0);
      default:
        return 0n;
    }
  }

  write(offset: number, size: 4 | 8, value: bigint): void {
    const aligned = offset & ~7;
    // The upper half of a pointer register is reserved; Status is W1C in its low bits.
    if (size === 4 && offset & 4) return;
    if (aligned === VfMmioOffset.Status) {
      this.status = (this.status & ~(Number(value & 0xffff_ffffn) & STATUS_W1C_MASK)) >>> 0;
      return;
    }
    this.setPointer(aligned, Number(value & 0xffff_ffffn), false);
  }

  /** A pointer write; the hardware-owned tails take writes only while their ring is stopped (or from the hypervisor). */
  private setPointer(vfOffset: number, raw: number, hypervisor: boolean): void {
    const pointer = raw & RING_POINTER_MASK_16;
    switch (vfOffset) {
      case VfMmioOffset.CommandBufferHead:
        if (!this.cmd) return;
        this.cmd.head = pointer % this.cmd.bytes;
        // The IOMMU fetches whenever head and tail differ: moving the head (the restart procedure, or a
        // hostile write) is as much a reason to run as moving the tail, as on the trapped path.
        if (!hypervisor) this.kick();
        return;
      case VfMmioOffset.CommandBufferTail:
        if (!this.cmd) return;
        this.cmd.tail = pointer % this.cmd.bytes;
        if (!hypervisor) this.kick();
        return;
      case VfMmioOffset.EventLogHead:
        if (this.evt) this.evt.head = pointer % this.evt.bytes;
        return;
      case VfMmioOffset.EventLogTail:
        if (this.evt && (hypervisor || !this.eventsRun)) this.evt.tail = pointer % this.evt.bytes;
        return;
      case VfMmioOffset.PprLogHead:
        if (this.ppr) this.ppr.head = pointer % this.ppr.bytes;
        return;
      case VfMmioOffset.PprLogTail:
        if (this.ppr && (hypervisor || !this.pprRun)) this.ppr.tail = pointer % this.ppr.bytes;
        return;
      default:
        return;
    }
  }

  // ---- command processing ----

  /** Runs the command processor; re-entrant calls (an intercept resumed from inside) just ask for another pass. */
  private kick(): void {
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    try {
      do {
        this.again = false;
        this.drain();
      } while (this.again);
    } finally {
      this.busy = false;
    }
  }

  private drain(): void {
    const q = this.cmd;
    if (q === undefined) return;
    // At most one pass over the ring per kick: a hostile tail cannot make this loop forever.
    for (let budget = q.bytes / RING_ENTRY; budget > 0 && this.commandsRun && !this.stalled && q.head !== q.tail; budget--) {
      const at = q.base + q.head;
      if (!this.ports.stage2.readWords(at, this.scratch)) return this.halt(commandHardwareErrorEvent(at));
      if (commandProblem(this.scratch) !== undefined) return this.halt(illegalCommandEvent(at));
      const outcome = this.execute(at);
      if (outcome === "halted") return;
      if (outcome === "intercepted") {
        this.stalled = true;
        if (this.ports.intercept(this.scratch.slice())) return;
        this.stalled = false;
      }
      q.head = (q.head + RING_ENTRY) % q.bytes;
      this.consumed++;
    }
  }

  private halt(event: Uint32Array): void {
    this.halted = true;
    this.logEvent(event);
  }

  private execute(at: number): "done" | "halted" | "intercepted" {
    const c = this.scratch;
    switch (commandOpcode(c)) {
      case CommandOpcode.COMPLETION_WAIT: {
        if (c[0]! & 1) {
          const address = ((c[0]! & 0xfffffff8) >>> 0) + (c[1]! & 0xfffff) * 0x1_0000_0000;
          this.store[0] = c[2]!;
          this.store[1] = c[3]!;
          if (!this.ports.stage2.writeWords(address, this.store)) {
            this.halt(commandHardwareErrorEvent(address));
            return "halted";
          }
        }
        if (c[0]! & 2) {
          this.status |= StatusBit.ComWaitInt;
          if (this.controlBit(CONTROL_COM_WAIT_INT_EN)) this.raiseInterrupt();
        }
        return "done";
      }
      case CommandOpcode.INVALIDATE_DEVTAB_ENTRY:
        return this.ports.isMappedDevice(c[0]! & 0xffff) ? "intercepted" : "done";
      // A response to a passthrough device's page request goes back through the HWPT's fault queue, which the
      // hypervisor answers (model's choice, as for page requests: see AmdHwViommuOps.insertPageRequest).
      case CommandOpcode.COMPLETE_PPR_REQUEST:
        return this.ports.isMappedDevice(c[0]! & 0xffff) ? "intercepted" : "done";
      // A passthrough device's interrupts are routed by the hypervisor (posting follows the guest's IRT).
      case CommandOpcode.INVALIDATE_INTERRUPT_TABLE:
        return this.ports.isMappedDevice(c[0]! & 0xffff) ? "intercepted" : "done";
      case CommandOpcode.INVALIDATE_IOMMU_PAGES: {
        const r = decodeInvalidationRange(c[2]!, c[3]!, this.range);
        const gn = (c[2]! & 4) !== 0;
        this.ports.invalidateGuestDomain(c[1]! & 0xffff, gn ? c[0]! & 0xfffff : undefined, r.base, r.size, r.all);
        return "done";
      }
      // The IOTLB half is the IOMMU's; the interrupt tables it also covers are the hypervisor's (as above).
      case CommandOpcode.INVALIDATE_IOMMU_ALL:
        this.ports.invalidateAllGuestDomains();
        return this.ports.hasMappedDevices() ? "intercepted" : "done";
      default:
        // INVALIDATE_IOTLB_PAGES (no ATS modelled) and PREFETCH_IOMMU_PAGES need nothing here.
        return "done";
    }
  }

  // ---- logs ----

  /** The guest's IOMMU interrupt: the source's XT register with IntCapXTEn (the PPR log has its own), else the MSI. */
  private raiseInterrupt(ppr = false): void {
    let vector: number;
    let destination: number;
    if (this.controlBit(CONTROL_INT_CAP_XT_EN)) {
      const v = ppr ? this.xtPprInterrupt : this.xtEventInterrupt;
      vector = Number((v >> 32n) & 0xffn);
      destination = Number((v >> 8n) & 0xffffffn) + Number((v >> 56n) & 0xffn) * 2 ** 24;
    } else {
      vector = this.msiData & 0xff;
      destination = (this.msiAddressLow >>> 12) & 0xff;
    }
    if (this.post === undefined || (vector === 0 && destination === 0)) this.undeliveredInterrupts++;
    else this.post(vector, destination);
  }

  /** Writes an event into the guest's log by GPA (hardware faults, and INSERT_GUEST_EVENT). */
  logEvent(record: Uint32Array): boolean {
    return this.logInto(this.evt, this.eventsRun, record, StatusBit.EventOverflow, StatusBit.EventLogInt, CONTROL_EVENT_INT_EN);
  }

  /** Writes a PPR log entry (a device's page request) into the guest's PPR log. */
  logPageRequest(record: Uint32Array): boolean {
    return this.logInto(this.ppr, this.pprRun, record, StatusBit.PPROverflow, StatusBit.PPRInt, CONTROL_PPR_INT_EN);
  }

  /**
   * A full ring sets the overflow bit and drops the record; nothing more is logged until software clears
   * the overflow bit, so every lost record is covered by it.
   */
  private logInto(ring: GuestRing | undefined, running: boolean, record: Uint32Array, overflowBit: number, intBit: number, intEnable: number): boolean {
    if (ring === undefined || !running || this.status & overflowBit) {
      this.droppedEvents++;
      return false;
    }
    if ((ring.tail + RING_ENTRY) % ring.bytes === ring.head) {
      this.status |= overflowBit;
      this.droppedEvents++;
      if (this.controlBit(intEnable)) this.raiseInterrupt(intEnable === CONTROL_PPR_INT_EN);
      return false;
    }
    if (!this.ports.stage2.writeWords(ring.base + ring.tail, record)) {
      this.droppedEvents++;
      return false;
    }
    ring.tail = (ring.tail + RING_ENTRY) % ring.bytes;
    this.status |= intBit;
    if (this.controlBit(intEnable)) this.raiseInterrupt(intEnable === CONTROL_PPR_INT_EN);
    return true;
  }
}
