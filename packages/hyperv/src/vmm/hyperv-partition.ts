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
  type IommuError,
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
import { HV_DEVICE_DOMAIN_ID_DEFAULT } from "../format/device-domain.js";
import { hostReporter, type HostReport } from "./host-report.js";
import type { SavedPartition } from "./partition-state.js";
import { HOST_PT_UNKNOWN, PartitionDevices, type DeviceState, type PartitionInstance, type PassthroughDevice } from "./partition-devices.js";

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
  readonly report: HostReport;
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
    this.report = hostReporter(vm);
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
      // A refused detach is logged; the device goes all the same, its iommufd binding is the VMM's to close.
      this.detachHost(dev.rid, p);
      this.forget(dev.rid, p);
    }
    this.domains?.dropInstance(instance);
    if (instance.viommuId !== undefined) {
      const r = instance.ctx.destroy(instance.viommuId);
      if (!r.ok) this.report("other", `vIOMMU ${instance.viommuId} on ${instance.unit.name} not destroyed`, r.error);
    }
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

  /** Detaches a passthrough device on the host (its DMA blocked); the refusal, logged, or undefined. */
  private detachHost(rid: number, p: PassthroughDevice): IommuError | undefined {
    const r = p.instance.ctx.detach(p.devId);
    // ENOENT: not attached (older iommufd) or no longer bound; either way nothing translates for it.
    if (!r.ok && r.error.errno !== "ENOENT") {
      this.report("configuration-refused", `detach of device 0x${rid.toString(16)}`, r.error);
      return r.error;
    }
    p.hostPt = undefined;
    return undefined;
  }

  /** The partition forgets device `rid`: its domain membership, interrupt entries and MSI route go. */
  private forget(rid: number, p: PassthroughDevice): void {
    p.device.msiTarget = undefined;
    for (const d of this.domains?.all() ?? []) d.attached.delete(rid);
    this.interrupts.dropDevice(rid);
    this.devices.remove(rid);
  }

  /**
   * A passthrough device appears at `rid`, in the default (identity) domain, or in whatever the hypervisor
   * already holds for that logical id when the guest named it before; its MSIs are routed through the table.
   */
  addDevice(instance: PartitionInstance, device: DmaDevice, devId: number, rid: number): Result<void> {
    if (!isRid(rid)) return err("EINVAL", `requester id ${rid} is not 16-bit`);
    if (this.devices.get(rid)?.passthrough !== undefined) return err("EEXIST", `guest requester id 0x${rid.toString(16)} already assigned`);
    const p: PassthroughDevice = { device, devId, instance, hostPt: HOST_PT_UNKNOWN };
    const { state, adopted } = this.devices.addPassthrough(rid, p);
    const failure = this.place(state);
    if (failure !== undefined) {
      this.devices.releasePassthrough(state, adopted);
      return err(failure.errno, `device 0x${rid.toString(16)} cannot be placed: ${failure.message}`);
    }
    device.msiTarget = (msi) => void this.deliverMsi(rid, msi);
    return ok();
  }

  /** Attaches a device where its record says (the parent in IR-only mode, which has no device domains). */
  private place(state: DeviceState): IommuError | undefined {
    if (this.domains !== undefined) return this.domains.apply(state);
    const p = state.passthrough!;
    const r = p.instance.ctx.attach(p.devId, this.parentHwptId);
    if (!r.ok) {
      this.report("configuration-refused", `attach of device 0x${state.rid.toString(16)} to the stage-2 parent`, r.error);
      return r.error;
    }
    p.hostPt = this.parentHwptId;
    return undefined;
  }

  /** No domains, no interrupt entries, every device a passthrough one in the default domain: what restore needs. */
  isFresh(): boolean {
    if ((this.domains?.count ?? 0) > 0 || this.interrupts.size > 0) return false;
    for (const dev of this.devices.all()) if (dev.passthrough === undefined || dev.domain !== HV_DEVICE_DOMAIN_ID_DEFAULT || dev.direct !== undefined) return false;
    return true;
  }

  /**
   * Applies a checked saved state (parsePartition) to this fresh partition: domains, device placements, then
   * interrupt entries. A host refusal (the only failure left) resets the partition to fresh and is returned.
   */
  applySaved(saved: SavedPartition): IommuError | undefined {
    const domains = this.domains;
    const failed = (error: IommuError, what: string): IommuError => {
      this.resetToFresh();
      return { ...error, message: `${what}: ${error.message}` };
    };
    for (const d of saved.domains) {
      const e = domains!.restore(d);
      if (e !== undefined) return failed(e, `domain ${d.id}`);
    }
    for (const v of saved.devices) {
      // The saved state was checked against the device table's limit: the record exists or can be made.
      const dev = this.devices.getOrCreate(v.rid)!;
      dev.domain = v.domain;
      dev.direct = v.direct;
      if (v.direct === undefined) domains!.get(v.domain)?.attached.add(v.rid);
      const e = domains!.apply(dev);
      if (e !== undefined) return failed(e, `device 0x${v.rid.toString(16)}`);
    }
    for (const e of saved.interrupts) this.interrupts.restore(e.slot, e.rid, e.target);
    return undefined;
  }

  /** Back to fresh after a refused restore: devices in the default domain, no emulated records, no domains or entries. */
  private resetToFresh(): void {
    for (const dev of [...this.devices.all()]) {
      dev.direct = undefined;
      dev.domain = HV_DEVICE_DOMAIN_ID_DEFAULT;
      if (dev.passthrough === undefined) this.devices.remove(dev.rid);
      else if (this.domains?.apply(dev) !== undefined) this.detachHost(dev.rid, dev.passthrough);
    }
    this.domains?.dispose();
    this.interrupts.clear();
  }

  /** The passthrough device at `rid` behind `instance`, if any. */
  private assigned(instance: PartitionInstance, rid: number): { state: DeviceState; p: PassthroughDevice } | undefined {
    const state = this.devices.get(rid);
    const p = state?.passthrough;
    return state !== undefined && p !== undefined && p.instance === instance ? { state, p } : undefined;
  }

  /**
   * Hot-unplug: the device at `rid` leaves the partition. It is detached on the host (DMA blocked: the unit
   * resolves a requester to its domain before any cached translation), leaves its device domain, its interrupt
   * entries go, and the logical id is free: a device assigned there later starts in the default domain with
   * no entries. ENOENT when no device of this instance is there; the host's errno when it refuses the detach
   * (nothing changes then).
   */
  removeDevice(instance: PartitionInstance, rid: number): Result<void> {
    const found = this.assigned(instance, rid);
    if (found === undefined) return err("ENOENT", `no device assigned at guest requester id ${rid}`);
    const failure = this.detachHost(rid, found.p);
    if (failure !== undefined) return err(failure.errno, `device 0x${rid.toString(16)} not detached: ${failure.message}`);
    this.forget(rid, found.p);
    return ok();
  }

  /**
   * The device at `fromRid` is seen at `toRid` from now on. The hypervisor keys devices by logical id, so the
   * device takes over what it holds for `toRid`: the default domain, or the domain the guest put that id in
   * before (as a device assigned there would). What was held for `fromRid` (domain membership, interrupt
   * entries, a direct attach) goes: the guest re-attaches and re-maps under the new id. ENOENT when no device
   * of this instance is at `fromRid`, EEXIST when a device is at `toRid` (the device itself included), the
   * host's errno when it refuses the new attachment (nothing changes then).
   */
  renumberDevice(instance: PartitionInstance, fromRid: number, toRid: number): Result<void> {
    const found = this.assigned(instance, fromRid);
    if (found === undefined) return err("ENOENT", `no device assigned at guest requester id ${fromRid}`);
    if (!isRid(toRid)) return err("EINVAL", `requester id ${toRid} is not 16-bit`);
    if (this.devices.get(toRid)?.passthrough !== undefined) return err("EEXIST", `guest requester id 0x${toRid.toString(16)} already assigned`);
    const p = found.p;
    const { state, adopted } = this.devices.addPassthrough(toRid, p);
    const failure = this.place(state);
    if (failure !== undefined) {
      this.devices.releasePassthrough(state, adopted);
      return err(failure.errno, `device 0x${fromRid.toString(16)} cannot be placed at 0x${toRid.toString(16)}: ${failure.message}`);
    }
    this.forget(fromRid, p);
    p.device.msiTarget = (msi) => void this.deliverMsi(toRid, msi);
    return ok();
  }

  /**
   * Delivers an MSI a device at `rid` wrote, as the remapping table says, or drops it. Hyper-V tells the guest
   * nothing of a dropped interrupt; the host's log records it.
   */
  deliverMsi(rid: number, msi: MsiMessage): InterruptResult {
    const r = this.interrupts.remap(rid, msi);
    if (r.ok) for (const vp of r.vps ?? [r.irq.destination]) this.vm.inject(r.irq.vector, vp, `msi:${rid.toString(16)}`);
    else this.report("other", `MSI of device 0x${rid.toString(16)} (address 0x${msi.address.toString(16)}, data 0x${msi.data.toString(16)}) blocked: ${r.fault.name}`);
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

function isRid(rid: number): boolean {
  return Number.isInteger(rid) && rid >= 0 && rid <= 0xffff;
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
