import {
  err,
  fail,
  GuestTableReader,
  NO_PASID,
  ok,
  PageWalker,
  Perm,
  token,
  WalkFault,
  type DmaDevice,
  type GuestMemory,
  type IommufdContext,
  type InterruptResult,
  type MsiMessage,
  type Result,
  type TranslationMode,
  type VirtualMachine,
  type VmmDeviceOptions,
  type VmmStats,
  type WalkResult,
} from "@viommu/core";
import { readStruct } from "../format/byte-layout.js";
import { encodeHypercallResult } from "../format/hypercall-result.js";
import { HvStatus } from "../format/hv-status.js";
import { getIommuCapabilitiesOutputLayout } from "../format/iommu-discovery.js";
import { IOMMU_HW_INFO_TYPE_HYPERV, IOMMU_VIOMMU_TYPE_HYPERV } from "../format/iommufd-uapi.js";
import { hypervPageTableFormat, hypervStage1Geometry } from "../format/x86-page-table.js";
import type { CallContext } from "./call-context.js";
import { DeviceDomains, type DomainHost } from "./device-domains.js";
import { HypercallDispatcher } from "./hypercall-dispatcher.js";
import { InterruptTable } from "./interrupt-table.js";
import { PartitionDevices, type PartitionInstance } from "./partition-devices.js";

/** The per-VM slot holding the partition (in the VM's child container: one hypercall interface per VM). */
export const HypervPartitionSlot = token<{ partition: HypervPartition | undefined }>("HypervPartitionSlot");

const geometry4 = hypervStage1Geometry(4);
const geometry5 = hypervStage1Geometry(5);

/**
 * The hypervisor's view of one guest partition for the pvIOMMU: its devices, device domains, interrupt
 * remapping table and the hypercall dispatcher the VM's hypercalls reach. A VM has one hypercall interface, so
 * every emulated pvIOMMU instance of the VM (one per physical unit its devices sit behind) joins the same
 * partition; device domains are partition-wide and realised on each instance's vIOMMU as devices need them.
 */
export class HypervPartition implements CallContext, DomainHost {
  readonly devices = new PartitionDevices();
  readonly interrupts = new InterruptTable();
  readonly domains: DeviceDomains | undefined;
  readonly stats: VmmStats = { trapped: 0, forwarded: 0, eventsInjected: 0, shadowMappings: 0 };
  readonly partitionId: bigint;
  readonly capabilities: Uint8Array | undefined;
  readonly fiveLevel: boolean;
  readonly memory: GuestMemory;
  private readonly members: PartitionInstance[] = [];
  private readonly dispatcher: HypercallDispatcher;
  private readonly walker = new PageWalker();
  private readonly reader: GuestTableReader;
  frozen = 0;

  private constructor(
    readonly vm: VirtualMachine,
    readonly mode: TranslationMode,
    readonly ctx: IommufdContext,
    readonly parentHwptId: number,
    capabilities: Uint8Array | undefined,
  ) {
    this.partitionId = BigInt(vm.id);
    this.memory = vm.memory;
    this.capabilities = capabilities;
    this.fiveLevel = capabilities !== undefined && readStruct(getIommuCapabilitiesOutputLayout, capabilities).iommu_cap.S1_5LVL === 1;
    this.domains = mode === "nested" ? new DeviceDomains(this) : undefined;
    this.reader = new GuestTableReader(vm.memory);
    this.dispatcher = new HypercallDispatcher(this, this.stats, () => this.frozen > 0);
  }

  /** The VM's partition, created (and its hypercall handler installed) by the VM's first pvIOMMU instance. */
  static of(options: VmmDeviceOptions): Result<HypervPartition> {
    if (options.mode === "shadow") return err("EOPNOTSUPP", "the pvIOMMU nests; a guest that maps without hypercalls cannot be shadowed");
    const c = options.vm.container;
    if (!c.isRegistered(HypervPartitionSlot)) c.register(HypervPartitionSlot, { useValue: { partition: undefined } });
    const slot = c.resolve(HypervPartitionSlot);
    const existing = slot.partition;
    if (existing !== undefined) {
      if (existing.mode !== options.mode || existing.ctx !== options.iommufd || existing.parentHwptId !== options.parentHwptId) {
        return err("EINVAL", "every pvIOMMU instance of a VM shares its mode, iommufd and stage-2 parent");
      }
      return ok(existing);
    }
    let capabilities: Uint8Array | undefined;
    if (options.mode === "nested") {
      const info = options.iommufd.getHwInfo({ flags: 0, devId: options.anchorDevId, dataLen: getIommuCapabilitiesOutputLayout.size });
      if (!info.ok) return fail(info);
      if (info.value.outDataType !== IOMMU_HW_INFO_TYPE_HYPERV) return err("EOPNOTSUPP", "the unit is not a Hyper-V IOMMU");
      capabilities = info.value.data;
    }
    const partition = new HypervPartition(options.vm, options.mode, options.iommufd, options.parentHwptId, capabilities);
    options.vm.onHypercall((control, inputGpa, outputGpa) => partition.dispatcher.handle(control, inputGpa, outputGpa));
    slot.partition = partition;
    return ok(partition);
  }

  instances(): readonly PartitionInstance[] {
    return this.members;
  }

  /** A pvIOMMU instance joins: in nested mode it gets a vIOMMU on its unit for the paging domains. */
  join(options: VmmDeviceOptions): Result<PartitionInstance> {
    let viommuId: number | undefined;
    if (this.mode === "nested") {
      const v = options.iommufd.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_HYPERV, devId: options.anchorDevId, hwptId: options.parentHwptId });
      if (!v.ok) return fail(v);
      viommuId = v.value;
    }
    const instance: PartitionInstance = { ctx: options.iommufd, unit: options.unit, viommuId, anchorDevId: options.anchorDevId };
    this.members.push(instance);
    return ok(instance);
  }

  /** An instance leaves: its devices are detached and forgotten, its HWPTs and vIOMMU destroyed. */
  leave(instance: PartitionInstance): void {
    for (const dev of [...this.devices.all()]) {
      const p = dev.passthrough;
      if (p === undefined || p.instance !== instance) continue;
      instance.ctx.detach(p.devId);
      p.device.msiTarget = undefined;
      for (const d of this.domains?.all() ?? []) d.attached.delete(dev.rid);
      this.interrupts.dropDevice(dev.rid);
      this.devices.remove(dev.rid);
    }
    this.domains?.dropInstance(instance);
    if (instance.viommuId !== undefined) instance.ctx.destroy(instance.viommuId);
    this.members.splice(this.members.indexOf(instance), 1);
    if (this.members.length === 0) this.dispose();
  }

  /** The last instance left: host objects go, the VM's hypercalls reach no pvIOMMU any more. */
  private dispose(): void {
    this.domains?.dispose();
    this.interrupts.clear();
    this.vm.onHypercall(() => encodeHypercallResult(HvStatus.HV_STATUS_INVALID_HYPERCALL_CODE));
    const slot = this.vm.container.resolve(HypervPartitionSlot);
    if (slot.partition === this) slot.partition = undefined;
  }

  /** A passthrough device appears at `rid` in the default (identity) domain, its MSIs routed through the table. */
  addDevice(instance: PartitionInstance, device: DmaDevice, devId: number, rid: number): Result<void> {
    if (!Number.isInteger(rid) || rid < 0 || rid > 0xffff) return err("EINVAL", `requester id ${rid} is not 16-bit`);
    if (this.devices.get(rid)?.passthrough !== undefined) return err("EEXIST", `guest requester id 0x${rid.toString(16)} already assigned`);
    const attached = instance.ctx.attach(devId, this.parentHwptId);
    if (!attached.ok) return fail(attached);
    const state = this.devices.addPassthrough(rid, { device, devId, instance });
    if (this.domains !== undefined && state.domain !== 0) this.domains.apply(state);
    device.msiTarget = (msi) => void this.deliverMsi(rid, msi);
    return ok();
  }

  /** Delivers an MSI a device at `rid` wrote, as the remapping table says, or drops it. */
  deliverMsi(rid: number, msi: MsiMessage): InterruptResult {
    const r = this.interrupts.remap(rid, msi);
    if (r.ok) for (const vp of r.vps ?? [r.irq.destination]) this.vm.inject(r.irq.vector, vp, `msi:${rid.toString(16)}`);
    return r;
  }

  /**
   * The VMM's own emulated device at `rid`: its DMA translated as the device's domain says, by walking the
   * guest's stage-1 table (GPA out), the domain's stage-2 pages, or identity; GPAs must be inside RAM.
   */
  translateEmulated(rid: number, pasid: number, iova: number, write: boolean, out: WalkResult): void {
    const access = write ? Perm.Write : Perm.Read;
    const dev = this.devices.get(rid);
    const eff = dev === undefined || this.domains === undefined ? ({ kind: "identity" } as const) : this.domains.effective(dev);
    if (pasid !== NO_PASID || eff.kind === "blocked") return fault(out, iova, WalkFault.Translation);
    if (eff.kind === "identity") {
      if (!this.memory.contains(iova)) return fault(out, iova, WalkFault.AddressSize);
      return success(out, iova, Perm.ReadWrite);
    }
    if (eff.kind === "s2") {
      const page = eff.s2.lookup(Math.floor(iova / 4096));
      if (page === undefined) return fault(out, iova, WalkFault.Translation);
      const perms = Perm.Read | (page.writable ? Perm.Write : 0);
      success(out, page.gpaPage * 4096 + (iova % 4096), perms);
      if ((access & perms) !== access) {
        out.ok = false;
        out.fault = WalkFault.Permission;
      }
      return;
    }
    this.walker.walk(hypervPageTableFormat, eff.levels === 5 ? geometry5 : geometry4, eff.root, iova, access, this.reader, out);
    if (out.ok && !this.memory.contains(out.output)) {
      out.ok = false;
      out.fault = WalkFault.AddressSize;
    }
  }
}

function fault(out: WalkResult, iova: number, reason: WalkFault): void {
  out.ok = false;
  out.mapped = false;
  out.fault = reason;
  out.stage = 1;
  out.faultInput = iova;
}

function success(out: WalkResult, output: number, perms: number): void {
  out.ok = true;
  out.mapped = true;
  out.output = output;
  out.pageShift = 12;
  out.perms = perms;
  out.fault = WalkFault.None;
  out.stage = 1;
}
