import { HOST_OWNER, type DmaDevice, type HostMemory, type Hpa, type MsiMessage, type VirtualMachine } from "@viommu/core";
import { classifyMsi, linuxMsiMessage, MsiAction, msiIrteIndex } from "../format/msi-remap.js";
import { gaTag, gaTagVcpu, type AmdVapicPosting } from "../format/vapic-posting.js";
import type { RemapOutcome } from "./interrupt-remapper.js";

/** What posting needs from the emulated IOMMU and the host. */
export interface PostedPorts {
  readonly posting: AmdVapicPosting;
  readonly host: HostMemory;
  readonly vm: VirtualMachine;
  /** The guest's own remapping of one of the device's MSIs (its DTE and IRT), with no event logged. */
  resolve(guestRid: number, msi: MsiMessage): RemapOutcome;
  /** How many IRTEs the device's guest table has (0 when it has none). */
  tableEntries(guestRid: number): number;
  /** Control.NumIntRemapMode = 1: MSIs with the address DM bit are remapped directly. */
  twoK(): boolean;
}

interface Route {
  readonly hostMsi: MsiMessage;
  readonly vcpu: number;
  readonly vector: number;
}

/** GA tags name at most 512 vCPUs per VM. */
const MAX_POSTED_VCPU = 512;
/** IRR of a vAPIC backing page: 8 registers of 32 bits, 16 bytes apart. */
const APIC_IRR = 0x200;

/**
 * Posted device interrupts for a VM's passthrough devices (what KVM's irq bypass does on AMD with AVIC): for each
 * valid entry of a device's guest IRT that targets one vCPU with a fixed or arbitrated vector, the host gets a
 * vAPIC-form IRTE posting that vector into the vCPU's backing page, and the physical device is given that host
 * entry's MSI. The device's interrupts then reach a running vCPU through the IOMMU alone (path "direct", no VMM
 * intervention); for a vCPU that does not run the IOMMU logs a GA entry and the host wakes the vCPU, which takes
 * the pending vector (one intervention). Routes are re-derived whenever the guest invalidates the device's IRT
 * or changes what remapping means (DTE, Control, restore). A guest MSI with no route (an invalid entry, a
 * logical or multi-vCPU destination, NMI and the pass-through kinds) is remapped by the VMM as before, faults
 * and events included.
 *
 * The model pins vCPU n to the physical CPU whose APIC id is n, and lets every vCPU run unless told otherwise.
 */
export class PostedInterrupts {
  /** vCPU → its vAPIC backing page (host memory, the host kernel's). */
  private readonly pages = new Map<number, number>();
  private readonly running: boolean[];
  /** guest DeviceID → IRTE index → route. */
  private readonly routes = new Map<number, Map<number, Route>>();
  private readonly devices = new Map<number, DmaDevice>();
  /** Interrupts posted directly, and wake-ups the host made for vCPUs that were not running. */
  posted = 0;
  wakeups = 0;

  constructor(private readonly ports: PostedPorts) {
    this.running = new Array<boolean>(ports.vm.vcpus).fill(true);
    ports.posting.setGaLogNotifier(ports.vm.id, (tag) => this.wake(gaTagVcpu(tag)));
  }

  private backingPage(vcpu: number): number | undefined {
    const existing = this.pages.get(vcpu);
    if (existing !== undefined) return existing;
    const page = this.ports.host.allocate(HOST_OWNER, 1);
    if (page === undefined) return undefined;
    this.ports.host.zero(page, 4096);
    this.pages.set(vcpu, page);
    return page;
  }

  /** The route one guest IRTE asks for, or undefined when it cannot be posted. */
  private wanted(guestRid: number, index: number): { vcpu: number; vector: number } | undefined {
    const m = linuxMsiMessage(index, this.ports.twoK());
    const r = this.ports.resolve(guestRid, { address: m.addressLo, data: m.data });
    if (!r.ok) return undefined;
    const irq = r.irq;
    if (irq.destinationMode !== "physical" || irq.deliveryMode > 1) return undefined;
    if (!(irq.destination < this.ports.vm.vcpus && irq.destination < MAX_POSTED_VCPU)) return undefined;
    return { vcpu: irq.destination, vector: irq.vector };
  }

  /** Re-derives the device's routes from its guest IRT; entries that did not change keep their host IRTE. */
  refresh(device: DmaDevice, guestRid: number): void {
    this.devices.set(guestRid, device);
    const old = this.routes.get(guestRid) ?? new Map<number, Route>();
    const next = new Map<number, Route>();
    const entries = this.ports.tableEntries(guestRid);
    for (let index = 0; index < entries; index++) {
      const want = this.wanted(guestRid, index);
      const had = old.get(index);
      if (had !== undefined && want !== undefined && had.vcpu === want.vcpu && had.vector === want.vector) {
        next.set(index, had);
        old.delete(index);
        continue;
      }
      if (want === undefined) continue;
      const page = this.backingPage(want.vcpu);
      if (page === undefined) continue;
      const target = { backingPage: page, guestVector: want.vector, hostApicId: want.vcpu, running: this.running[want.vcpu]!, gaTag: gaTag(this.ports.vm.id, want.vcpu), gaLogIntr: true };
      const host = this.ports.posting.postInterrupt(device, target);
      if (host.ok) next.set(index, { hostMsi: host.value, vcpu: want.vcpu, vector: want.vector });
    }
    for (const r of old.values()) this.ports.posting.unpostInterrupt(device, r.hostMsi);
    if (next.size > 0) this.routes.set(guestRid, next);
    else this.routes.delete(guestRid);
  }

  /** Every device's routes again (a Control change, a restore). */
  refreshAll(): void {
    for (const [guestRid, device] of this.devices) this.refresh(device, guestRid);
  }

  /** The device is gone from `guestRid`: its host IRTEs are freed. */
  drop(guestRid: number): void {
    const device = this.devices.get(guestRid);
    const routes = this.routes.get(guestRid);
    if (device !== undefined && routes !== undefined) for (const r of routes.values()) this.ports.posting.unpostInterrupt(device, r.hostMsi);
    this.routes.delete(guestRid);
    this.devices.delete(guestRid);
  }

  /**
   * The device wrote `msi` (the message its guest driver gave it): when it has a route, the physical device writes
   * that route's host MSI and the IOMMU posts it. True when posted; false when the VMM must remap it itself.
   */
  deliver(device: DmaDevice, guestRid: number, msi: MsiMessage): boolean {
    const routes = this.routes.get(guestRid);
    if (routes === undefined) return false;
    if (classifyMsi(msi.address >>> 0, Math.floor(msi.address / 2 ** 32), msi.data, this.ports.twoK()) !== MsiAction.Remap) return false;
    const route = routes.get(msiIrteIndex(msi.data));
    if (route === undefined || device.unit.remapInterrupt === undefined) return false;
    const r = device.unit.remapInterrupt(device, route.hostMsi);
    if (!r.ok || r.irq.posted === undefined) return false;
    // Running: the doorbell makes the vCPU take the vector from its IRR at once. Not running: the GA log woke it.
    if (this.running[route.vcpu]) this.take(route.vcpu, "direct");
    this.posted++;
    return true;
  }

  /** The vCPU takes every vector pending in its backing page's IRR. */
  private take(vcpu: number, path: "direct" | "vmm"): void {
    const page = this.pages.get(vcpu);
    if (page === undefined) return;
    const host = this.ports.host;
    for (let reg = 0; reg < 8; reg++) {
      const at = page + APIC_IRR + reg * 0x10;
      let bits = host.read32(at);
      if (bits === 0) continue;
      host.write32(at, 0);
      while (bits !== 0) {
        const bit = 31 - Math.clz32(bits);
        bits = (bits & ~(1 << bit)) >>> 0;
        const vector = reg * 32 + bit;
        if (path === "direct") this.ports.vm.interrupts.deliver(vector, vcpu, "direct", "msi:posted");
        else this.ports.vm.inject(vector, vcpu, "msi:posted");
      }
    }
  }

  /** avic_ga_log_notifier: the host wakes a vCPU that was not running; it takes what is pending (one intervention each). */
  private wake(vcpu: number): void {
    if (!(vcpu < this.ports.vm.vcpus)) return;
    this.wakeups++;
    this.take(vcpu, "vmm");
  }

  /** The vCPU was scheduled in or out (amd_iommu_update_ga); scheduled in, it takes what was posted meanwhile. */
  setRunning(vcpu: number, running: boolean): void {
    if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= this.running.length) return;
    this.running[vcpu] = running;
    const page = this.pages.get(vcpu);
    if (page !== undefined) this.ports.posting.updateVcpu(page, running, vcpu);
    if (running) this.take(vcpu, "direct");
  }

  destroy(): void {
    for (const guestRid of [...this.devices.keys()]) this.drop(guestRid);
    this.ports.posting.setGaLogNotifier(this.ports.vm.id, undefined);
    for (const page of this.pages.values()) this.ports.host.free(page as Hpa, 1);
    this.pages.clear();
  }
}
