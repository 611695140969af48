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

/** Where a page request group stands, from the device's side. */
export type PageRequestStatus = "waiting" | "success" | "invalid" | "failure";

/**
 * A device issues 64-bit unsigned addresses: any non-negative integer is a DMA the IOMMU answers (with the
 * architecture's fault beyond its input width, however large). A negative, fractional or non-finite number is
 * no address at all: a caller's bug, not guest input.
 */
function checkAddress(iova: number): void {
  if (!(iova >= 0) || !Number.isInteger(iova)) throw new TypeError(`DMA address ${iova} is not a non-negative integer`);
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
  ) {}

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

  /** Translates one address without transferring (what an ATS request would return). */
  translate(iova: number, write: boolean, pasid = NO_PASID, out: WalkResult = this.walk): WalkResult {
    checkAddress(iova);
    const request: DmaRequest = { requesterId: this.requesterId, pasid, iova, access: write ? Perm.Write : Perm.Read };
    this.unit.translate(request, out);
    return out;
  }

  read(iova: number, length: number, pasid = NO_PASID): DmaOutcome {
    return this.transfer(iova, new Uint8Array(length), false, pasid);
  }

  write(iova: number, data: Uint8Array, pasid = NO_PASID): DmaOutcome {
    return this.transfer(iova, data, true, pasid);
  }

  private transfer(iova: number, buffer: Uint8Array, write: boolean, pasid: number): DmaOutcome {
    checkAddress(iova);
    const hpas: number[] = [];
    // Translate every page first: a faulting transfer touches nothing.
    for (let done = 0; done < Math.max(buffer.length, 1); ) {
      const at = iova + done;
      const prgi = this.pageRequestGroup();
      const request: DmaRequest = { requesterId: this.requesterId, pasid, iova: at, access: write ? Perm.Write : Perm.Read, prgi };
      this.unit.translate(request, this.walk);
      if (!this.walk.ok) {
        if (this.walk.pageRequest >= 0) {
          // Not a final fault: the IOMMU forwarded a page request; the device waits for the response, then retries.
          this.groups.set(this.walk.pageRequest, "waiting");
          return { ok: false, iova: at, fault: this.walk.fault, reason: "page-request", stage: this.walk.stage, isolation: false, pageRequest: this.walk.pageRequest };
        }
        this.unit.reportDmaFault(request, this.walk);
        const reason = walkFaultNames[this.walk.fault];
        this.events?.emit("fault", { vm: this.owner, unit: this.unit.name, requesterId: this.requesterId, pasid, iova: at, write, reason, stage: this.walk.stage });
        return { ok: false, iova: at, fault: this.walk.fault, reason, stage: this.walk.stage, isolation: false };
      }
      hpas.push(this.walk.output);
      done += PAGE_SIZE - (at % PAGE_SIZE);
    }
    let offset = 0;
    for (const hpa of hpas) {
      const n = Math.min(PAGE_SIZE - (hpa % PAGE_SIZE), buffer.length - offset);
      if (n <= 0) break;
      const chunk = buffer.subarray(offset, offset + n);
      const allowed = write ? this.host.dmaWrite(this.owner, hpa, chunk) : this.host.dmaRead(this.owner, hpa, chunk);
      if (!allowed) {
        return { ok: false, iova: iova + offset, fault: WalkFault.External, reason: "isolation", stage: 2, isolation: true };
      }
      offset += n;
    }
    return { ok: true, data: buffer, hpas };
  }

  /** The device signals an MSI with the address/data its driver programmed. */
  signalMsi(msi: MsiMessage): boolean {
    if (this.msiTarget === undefined) return false;
    this.msiTarget(msi);
    return true;
  }
}
