import type { DmaRequest, PhysicalDevice, PhysicalIommu } from "../contract/iommu-unit.js";
import { NO_PASID } from "../contract/iommu-unit.js";
import type { MsiMessage } from "../irq/interrupts.js";
import { HOST_OWNER, type HostMemory, type OwnerId } from "../memory/host-memory.js";
import { PAGE_SIZE } from "../memory/page.js";
import { Perm } from "../translate/access.js";
import { WalkFault } from "../translate/page-table-format.js";
import { newWalkResult, walkFaultNames, type WalkResult } from "../translate/walk-result.js";
import type { EventBus } from "../events/event-bus.js";
import type { CoreEvents } from "./core-events.js";
import { PageResponseCode } from "../iommufd/uapi.js";

/** The outcome of one DMA transfer. */
export type DmaOutcome =
  | { readonly ok: true; readonly data: Uint8Array; readonly hpas: readonly number[] }
  | {
      readonly ok: false;
      readonly iova: number;
      readonly fault: WalkFault;
      readonly reason: string;
      readonly stage: 1 | 2;
      readonly isolation: boolean;
      /** The page request group the device sent for this fault (PRI): retry once it is answered SUCCESS. */
      readonly pageRequest?: number;
    };

/** A transfer that did not complete: where, and why. */
export type DmaFault = Extract<DmaOutcome, { ok: false }>;

/** Where a page request group stands, from the device's side. */
export type PageRequestStatus = "waiting" | "success" | "invalid" | "failure";

/**
 * A device issues 64-bit unsigned addresses: any non-negative integer is a DMA the IOMMU answers (with the
 * architecture's fault beyond its input width, however large). A negative, fractional or non-finite number is
 * no address at all: a caller's bug, not guest input.
 */
function checkAddress(iova: number): void {
  if (!(iova >= 0) || !Number.isInteger(iova)) notAnAddress(iova);
}

/** Apart from `checkAddress`, which runs on every access and so stays small enough to inline. */
function notAnAddress(iova: number): never {
  throw new TypeError(`DMA address ${iova} is not a non-negative integer`);
}

function checkSpan(buffer: Uint8Array, offset: number, length: number): void {
  if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > buffer.length) {
    throw new RangeError(`DMA span [${offset}, +${length}) is outside a buffer of ${buffer.length} bytes`);
  }
}

/**
 * A physical device that does DMA through its IOMMU unit (the NVMe-like device of the demo, an SR-IOV
 * function). Each page of a transfer is translated; a fault stops the transfer before anything is touched
 * and is recorded by the unit the way the hardware records it; the host then checks the page belongs to the
 * device's VM, the last line of isolation.
 */
export class DmaDevice implements PhysicalDevice {
  owner: OwnerId = HOST_OWNER;
  private readonly walk = newWalkResult();
  /** The one bus request of this device, refilled per access (units read it during `translate` and keep nothing). */
  private readonly request: { requesterId: number; pasid: number; iova: number; access: number; prgi: number; privileged: boolean };
  /**
   * The mode the device issues PASID-tagged requests in: supervisor (the PASID prefix's Privileged Mode Requested
   * bit set, as a kernel-mode SVA client's) or user. Requests without a PASID are never privileged.
   */
  privilegedMode = false;
  /** Host addresses of the pages of the transfer in progress, reused across transfers. */
  private hpas = new Float64Array(16);
  private hpaCount = 0;
  /** Why the last `readInto`/`writeFrom` failed (undefined after one that moved every byte). */
  lastFault: DmaFault | undefined;
  /** Where the device's MSI writes go (set by the VMM when it assigns the device). */
  msiTarget: ((msi: MsiMessage) => void) | undefined;
  /** PCIe PRI: page request groups in flight (PRGI → status), 512 indices as the 9-bit field allows. */
  private readonly groups = new Map<number, PageRequestStatus>();
  private nextGroup = 0;

  constructor(
    readonly name: string,
    readonly requesterId: number,
    readonly unit: PhysicalIommu,
    private readonly host: HostMemory,
    private readonly events: EventBus<CoreEvents> | undefined,
    readonly pasidBits = 0,
    /** The device has the PRI capability: a fault the IOMMU can resolve is a page request, then a retry. */
    readonly pri = false,
  ) {
    this.request = { requesterId, pasid: NO_PASID, iova: 0, access: Perm.Read, prgi: -1, privileged: false };
  }

  pageResponse(_pasid: number | undefined, groupId: number, code: number): void {
    if (!this.groups.has(groupId)) return;
    this.groups.set(groupId, code === PageResponseCode.SUCCESS ? "success" : code === PageResponseCode.INVALID ? "invalid" : "failure");
  }

  /** Where the page request group `groupId` stands (undefined: the device sent none by that index). */
  pageRequestStatus(groupId: number): PageRequestStatus | undefined {
    return this.groups.get(groupId);
  }

  /** A free PRGI (the oldest answered one is reused when all 512 are taken), or -1 without PRI. */
  private pageRequestGroup(): number {
    if (!this.pri) return -1;
    for (let tries = 0; tries < 512; tries++) {
      const g = this.nextGroup;
      this.nextGroup = (this.nextGroup + 1) % 512;
      if (this.groups.get(g) !== "waiting") return g;
    }
    return -1;
  }

  /** Translates one address without transferring (what an ATS request would return). Allocates nothing. */
  translate(iova: number, write: boolean, pasid = NO_PASID, out: WalkResult = this.walk): WalkResult {
    checkAddress(iova);
    const request = this.request;
    request.pasid = pasid;
    request.iova = iova;
    request.access = write ? Perm.Write : Perm.Read;
    request.prgi = -1;
    request.privileged = pasid !== NO_PASID && this.privilegedMode;
    this.unit.translate(request, out);
    return out;
  }

  /** Reads `length` bytes at `iova` into a new buffer (allocates; `readInto` is the allocation-free form). */
  read(iova: number, length: number, pasid = NO_PASID): DmaOutcome {
    const buffer = new Uint8Array(length);
    return this.transfer(iova, buffer, 0, length, false, pasid) ? { ok: true, data: buffer, hpas: this.movedHpas() } : this.lastFault!;
  }

  write(iova: number, data: Uint8Array, pasid = NO_PASID): DmaOutcome {
    return this.transfer(iova, data, 0, data.length, true, pasid) ? { ok: true, data, hpas: this.movedHpas() } : this.lastFault!;
  }

  /**
   * Reads `length` bytes at `iova` into buffer[offset, offset + length): the caller's buffer is filled, nothing is
   * allocated per transfer. False when a page faulted (nothing was read) or the host refused an access;
   * `lastFault` then says which and why.
   */
  readInto(iova: number, buffer: Uint8Array, offset = 0, length = buffer.length - offset, pasid = NO_PASID): boolean {
    checkSpan(buffer, offset, length);
    return this.transfer(iova, buffer, offset, length, false, pasid);
  }

  /** Writes buffer[offset, offset + length) at `iova`, allocating nothing per transfer; as `readInto` for faults. */
  writeFrom(iova: number, buffer: Uint8Array, offset = 0, length = buffer.length - offset, pasid = NO_PASID): boolean {
    checkSpan(buffer, offset, length);
    return this.transfer(iova, buffer, offset, length, true, pasid);
  }

  private movedHpas(): number[] {
    return Array.from(this.hpas.subarray(0, this.hpaCount));
  }

  private transfer(iova: number, buffer: Uint8Array, offset: number, length: number, write: boolean, pasid: number): boolean {
    checkAddress(iova);
    this.lastFault = undefined;
    // Offsets in a page by a 32-bit mask (exact for any integer address), never a floating-point remainder.
    const pages = length === 0 ? 1 : Math.ceil(((iova & (PAGE_SIZE - 1)) + length) / PAGE_SIZE);
    if (this.hpas.length < pages) this.hpas = new Float64Array(Math.max(pages, this.hpas.length * 2));
    const hpas = this.hpas;
    const request = this.request;
    request.pasid = pasid;
    request.access = write ? Perm.Write : Perm.Read;
    request.privileged = pasid !== NO_PASID && this.privilegedMode;
    const walk = this.walk;
    // Translate every page first: a faulting transfer touches nothing.
    let count = 0;
    const span = Math.max(length, 1);
    for (let done = 0; done < span; ) {
      const at = iova + done;
      request.iova = at;
      request.prgi = this.pri ? this.pageRequestGroup() : -1;
      this.unit.translate(request, walk);
      if (!walk.ok) {
        this.fault(at, write, pasid, request);
        return false;
      }
      hpas[count++] = walk.output;
      done += PAGE_SIZE - (at & (PAGE_SIZE - 1));
    }
    this.hpaCount = count;
    let moved = 0;
    for (let i = 0; i < count && moved < length; i++) {
      const hpa = hpas[i]!;
      const n = Math.min(PAGE_SIZE - (hpa & (PAGE_SIZE - 1)), length - moved);
      const allowed = write ? this.host.dmaWriteFrom(this.owner, hpa, buffer, offset + moved, n) : this.host.dmaReadInto(this.owner, hpa, buffer, offset + moved, n);
      if (!allowed) {
        this.lastFault = { ok: false, iova: iova + moved, fault: WalkFault.External, reason: "isolation", stage: 2, isolation: true };
        return false;
      }
      moved += n;
    }
    return true;
  }

  /** A page did not translate: a page request the device waits on, or a final fault the unit records. */
  private fault(at: number, write: boolean, pasid: number, request: DmaRequest): void {
    const walk = this.walk;
    if (walk.pageRequest >= 0) {
      // Not a final fault: the IOMMU forwarded a page request; the device waits for the response, then retries.
      this.groups.set(walk.pageRequest, "waiting");
      this.lastFault = { ok: false, iova: at, fault: walk.fault, reason: "page-request", stage: walk.stage, isolation: false, pageRequest: walk.pageRequest };
      return;
    }
    // The unit may keep what it records: it gets a request of its own.
    this.unit.reportDmaFault({ requesterId: request.requesterId, pasid: request.pasid, iova: request.iova, access: request.access, prgi: request.prgi, privileged: request.privileged }, walk);
    const reason = walkFaultNames[walk.fault];
    this.events?.emit("fault", { vm: this.owner, unit: this.unit.name, requesterId: this.requesterId, pasid, iova: at, write, reason, stage: walk.stage });
    this.lastFault = { ok: false, iova: at, fault: walk.fault, reason, stage: walk.stage, isolation: false };
  }

  /** The device signals an MSI with the address/data its driver programmed. */
  signalMsi(msi: MsiMessage): boolean {
    if (this.msiTarget === undefined) return false;
    this.msiTarget(msi);
    return true;
  }
}
