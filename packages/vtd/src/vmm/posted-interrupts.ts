import {
  err,
  HOST_OWNER,
  ok,
  type HostMemory,
  type Hpa,
  type InterruptResult,
  type IommuError,
  type MsiMessage,
  type PhysicalDevice,
  type Result,
  type ShadowReporter,
  type VirtualMachine,
} from "@viommu/core";
import { irteDestination, irteHasReservedBits, irteMode, IrteMode, irteSourceIdValid } from "../format/irte.js";
import { isRemappableMsi, remappableMsiIndex } from "../format/msi.js";
import { encodePostedInterruptDescriptor, PI_DESC_BYTES, PI_DESC_ON, PiDescOffset, piDescNdst } from "../format/posted-interrupt-descriptor.js";
import type { HostCpus } from "../hw/host-cpus.js";
import type { AssignedDevice } from "./device-bindings.js";
import type { InterruptRemapper } from "./interrupt-remapper.js";

/** KVM's notification vectors (arch/x86/include/asm/irq_vectors.h): a running vCPU's, and a blocked one's wakeup. */
export const POSTED_INTR_VECTOR = 0xf2;
export const POSTED_INTR_WAKEUP_VECTOR = 0xf1;

/**
 * Posted IRTEs the VMM keeps for one VM at most: the host's interrupt remapping table is shared by every VM on
 * the unit, so a guest programming thousands of IRTEs cannot take it all; MSIs beyond are remapped by the VMM.
 */
export const MAX_POSTED_ROUTES = 256;

/** What a host unit that can post interrupts offers the VMM (the host driver's side of KVM's irq bypass). */
export interface PostingUnit {
  readonly cpus: HostCpus;
  postInterrupt(device: PhysicalDevice, vector: number, descriptor: number, urgent: boolean): Result<MsiMessage>;
  releaseInterrupt(msi: MsiMessage): void;
  remapInterrupt(device: PhysicalDevice, msi: MsiMessage): InterruptResult;
}

export function isPostingUnit(unit: object): unit is PostingUnit {
  const u = unit as Partial<PostingUnit>;
  return typeof u.postInterrupt === "function" && typeof u.releaseInterrupt === "function" && typeof u.remapInterrupt === "function" && u.cpus !== undefined;
}

/** One vCPU as the host runs it: the physical CPU it is on, its posted-interrupt descriptor. */
interface Vcpu {
  readonly index: number;
  readonly cpu: number;
  readonly descriptor: number;
  running: boolean;
}

/** A guest MSI posted on the host: the message the device's MSI-X entry holds instead, and what it posts. */
interface Route {
  readonly hostMsi: MsiMessage;
  readonly vector: number;
  readonly vcpu: number;
}

/**
 * Posted interrupts for a VM's passthrough devices (VT-d §5.2; what KVM's irq bypass and the host driver's
 * `intel_ir_set_vcpu_affinity` build): a posted-interrupt descriptor per vCPU in host memory (NV the running
 * vCPU's notification vector, NDST the physical CPU it runs on), and for every guest IRTE a device's MSI can use
 * that KVM could post (present, remapped format, fixed or lowest-priority delivery to one vCPU in physical mode,
 * edge), a posted host IRTE whose message is what the device's MSI-X entry holds. The device's MSI then goes
 * straight to the unit, which posts it and notifies the CPU; the vCPU in guest mode takes it with no VM exit.
 * A blocked vCPU's descriptor has the wakeup vector, so the host wakes it and the interrupt is injected (one
 * intervention). MSIs no route covers are remapped by the VMM and injected, as in remapped mode.
 */
export class PostedInterrupts {
  private readonly vcpus: Vcpu[] = [];
  private readonly routes = new Map<number, Map<number, Route>>();
  private descriptorPages = 0;
  private descriptorBase: Hpa | undefined;
  private routeCount = 0;
  private readonly irte = new Uint32Array(4);

  private constructor(
    private readonly vm: VirtualMachine,
    private readonly unit: PostingUnit,
    private readonly memory: HostMemory,
    private readonly remapper: InterruptRemapper,
    private readonly reporter: ShadowReporter,
    private readonly remapByVmm: (guestRid: number, msi: MsiMessage) => void,
  ) {}

  /** A descriptor for each vCPU (running, on a host CPU of its own), or ENOMEM. */
  static create(vm: VirtualMachine, unit: PostingUnit, memory: HostMemory, remapper: InterruptRemapper, reporter: ShadowReporter, remapByVmm: (guestRid: number, msi: MsiMessage) => void): Result<PostedInterrupts> {
    const p = new PostedInterrupts(vm, unit, memory, remapper, reporter, remapByVmm);
    const pages = Math.max(1, Math.ceil((vm.vcpus * PI_DESC_BYTES) / 4096));
    const base = memory.allocate(HOST_OWNER, pages);
    if (base === undefined) return err("ENOMEM", "no host memory for posted-interrupt descriptors");
    p.descriptorBase = base;
    p.descriptorPages = pages;
    for (let index = 0; index < vm.vcpus; index++) {
      const descriptor = base + index * PI_DESC_BYTES;
      const vcpu: Vcpu = { index, descriptor, running: true, cpu: unit.cpus.add((vector) => p.notified(vcpu, vector)) };
      p.vcpus.push(vcpu);
      p.writeControl(vcpu);
    }
    return ok(p);
  }

  /** The descriptor's control part for a vCPU's state (`vmx_vcpu_pi_load` / `pi_enable_wakeup_handler`). */
  private writeControl(vcpu: Vcpu): void {
    const raw = encodePostedInterruptDescriptor({ NV: vcpu.running ? POSTED_INTR_VECTOR : POSTED_INTR_WAKEUP_VECTOR, NDST: piDescNdst(vcpu.cpu, true) });
    const on = this.memory.read32(vcpu.descriptor + PiDescOffset.CONTROL) & PI_DESC_ON;
    this.memory.write32(vcpu.descriptor + PiDescOffset.CONTROL, (raw[8]! | on) >>> 0);
    this.memory.write32(vcpu.descriptor + PiDescOffset.NDST, raw[9]!);
  }

  /** The vCPU's host address of its descriptor (for tests and tools). */
  descriptorOf(vcpu: number): number | undefined {
    return this.vcpus[vcpu]?.descriptor;
  }

  /** A vCPU blocks (halts: its descriptor takes the wakeup vector) or runs again. */
  setRunning(vcpu: number, running: boolean): void {
    const v = this.vcpus[vcpu];
    if (v === undefined || v.running === running) return;
    v.running = running;
    this.writeControl(v);
  }

  /**
   * The notification event reached the vCPU's CPU. Running in guest mode, the CPU processes its posted
   * interrupts itself: ON cleared, each PIR bit taken and delivered to the vCPU. Blocked, the host's wakeup
   * handler runs and the interrupts are injected when the vCPU is entered again.
   */
  private notified(vcpu: Vcpu, vector: number): void {
    const m = this.memory;
    const d = vcpu.descriptor;
    const direct = vector === POSTED_INTR_VECTOR && vcpu.running;
    if (!direct && vector !== POSTED_INTR_WAKEUP_VECTOR) return;
    m.write32(d + PiDescOffset.CONTROL, (m.read32(d + PiDescOffset.CONTROL) & ~PI_DESC_ON) >>> 0);
    for (let word = 0; word < 8; word++) {
      let pending = m.read32(d + PiDescOffset.PIR + word * 4) >>> 0;
      if (pending === 0) continue;
      m.write32(d + PiDescOffset.PIR + word * 4, 0);
      for (let bit = 0; pending !== 0; bit++, pending >>>= 1) {
        if ((pending & 1) === 0) continue;
        if (direct) this.vm.interrupts.deliver(word * 32 + bit, vcpu.index, "direct", "msi:posted");
        else this.vm.inject(word * 32 + bit, vcpu.index, "msi:posted");
      }
    }
  }

  /**
   * A device MSI: the guest message maps to what the device's MSI-X entry holds (the host's posted message,
   * where a route exists), which goes to the unit with no VMM on the way; anything else the VMM remaps.
   */
  signal(a: AssignedDevice, msi: MsiMessage): void {
    const route = this.routeFor(a, msi);
    if (route === undefined) {
      this.remapByVmm(a.guestRid, msi);
      return;
    }
    const r = this.unit.remapInterrupt(a.device, route.hostMsi);
    if (!r.ok) this.log("other", undefined, `posted MSI of guest source id 0x${a.guestRid.toString(16)} blocked by the host unit: ${r.fault.name}`);
  }

  private routeFor(a: AssignedDevice, msi: MsiMessage): Route | undefined {
    const byIndex = this.routes.get(a.devId);
    if (byIndex === undefined || !this.remapper.enabled) return undefined;
    const lo = msi.address >>> 0;
    if (!isRemappableMsi(lo)) return undefined;
    const index = remappableMsiIndex(lo, Math.floor(msi.address / 2 ** 32), msi.data >>> 0);
    return index < 0 ? undefined : byIndex.get(index);
  }

  /**
   * Re-derives the routes of guest IRT entries [first, first + count) (the whole table when `first` is
   * undefined) for `devices`, as an interrupt-entry-cache invalidation makes the VMM translate again: entries KVM
   * could post get (or keep) a posted host IRTE, the rest lose theirs.
   */
  refresh(devices: Iterable<AssignedDevice>, first?: number, count?: number): void {
    const size = this.remapper.size;
    const from = first === undefined ? 0 : Math.max(0, first);
    const to = first === undefined ? size : Math.min(size, from + (count ?? 1));
    for (const a of devices) {
      let byIndex = this.routes.get(a.devId);
      if (byIndex === undefined) {
        byIndex = new Map();
        this.routes.set(a.devId, byIndex);
      }
      if (first === undefined) for (const index of [...byIndex.keys()]) if (index >= size) this.drop(byIndex, index);
      for (let index = from; index < to; index++) this.update(a, byIndex, index);
    }
  }

  private update(a: AssignedDevice, byIndex: Map<number, Route>, index: number): void {
    const wanted = this.postable(a, index);
    const have = byIndex.get(index);
    if (have !== undefined && wanted !== undefined && have.vector === wanted.vector && have.vcpu === wanted.vcpu) return;
    if (have !== undefined) this.drop(byIndex, index);
    if (wanted === undefined) return;
    if (this.routeCount >= MAX_POSTED_ROUTES) {
      this.log("configuration-refused", undefined, `guest source id 0x${a.guestRid.toString(16)} IRTE ${index}: more than ${MAX_POSTED_ROUTES} posted interrupts in this VM; the VMM remaps it`);
      return;
    }
    const vcpu = this.vcpus[wanted.vcpu]!;
    const hostMsi = this.unit.postInterrupt(a.device, wanted.vector, vcpu.descriptor, false);
    if (!hostMsi.ok) {
      this.log("configuration-refused", hostMsi.error, `posted IRTE for guest source id 0x${a.guestRid.toString(16)} IRTE ${index} refused: ${hostMsi.error.errno} ${hostMsi.error.message}; the VMM remaps it`);
      return;
    }
    byIndex.set(index, { hostMsi: hostMsi.value, vector: wanted.vector, vcpu: wanted.vcpu });
    this.routeCount++;
  }

  /** What a guest IRTE asks for, if KVM could post it for device `a` (`kvm_intr_is_single_vcpu` and the IRTE checks). */
  private postable(a: AssignedDevice, index: number): { vector: number; vcpu: number } | undefined {
    if (!this.remapper.enabled) return undefined;
    const irte = this.irte;
    if (!this.remapper.peek(index, irte)) return undefined;
    const w0 = irte[0]!;
    const eime = this.remapper.eime;
    if ((w0 & 1) === 0 || irteMode(w0) !== IrteMode.REMAPPED || irteHasReservedBits(irte, eime)) return undefined;
    if (!irteSourceIdValid((irte[2]! >>> 18) & 3, (irte[2]! >>> 16) & 3, irte[2]! & 0xffff, a.guestRid)) return undefined;
    const physical = (w0 & 4) === 0;
    const edge = (w0 & 0x10) === 0;
    const delivery = (w0 >>> 5) & 7;
    const vcpu = irteDestination(irte[1]!, eime);
    if (!physical || !edge || delivery > 1 || vcpu >= this.vcpus.length) return undefined;
    return { vector: (w0 >>> 16) & 0xff, vcpu };
  }

  private drop(byIndex: Map<number, Route>, index: number): void {
    const route = byIndex.get(index);
    if (route === undefined) return;
    byIndex.delete(index);
    this.unit.releaseInterrupt(route.hostMsi);
    this.routeCount--;
  }

  /** Drops every route of a device (it left the guest). */
  forget(devId: number): void {
    const byIndex = this.routes.get(devId);
    if (byIndex === undefined) return;
    for (const index of [...byIndex.keys()]) this.drop(byIndex, index);
    this.routes.delete(devId);
  }

  /** Posted host IRTEs in use. */
  get posted(): number {
    return this.routeCount;
  }

  /** Releases every host IRTE, the CPUs and the descriptors. */
  destroy(): void {
    for (const devId of [...this.routes.keys()]) this.forget(devId);
    for (const v of this.vcpus) this.unit.cpus.remove(v.cpu);
    this.vcpus.length = 0;
    if (this.descriptorBase !== undefined) this.memory.free(this.descriptorBase, this.descriptorPages);
    this.descriptorBase = undefined;
  }

  private log(kind: "configuration-refused" | "other", error: IommuError | undefined, message: string): void {
    this.reporter.log.record({ vm: this.reporter.vm, source: this.reporter.source, kind, error, message });
  }
}
