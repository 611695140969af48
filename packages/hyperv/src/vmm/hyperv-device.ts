import {
  decodeState,
  encodeState,
  fail,
  HostServices,
  ok,
  resolveToken,
  saveFrozen,
  StaleTranslationAudit,
  type DmaDevice,
  type EmulatedIommu,
  type GuestQueueView,
  type InterruptResult,
  type MsiMessage,
  type Result,
  type TranslationMode,
  type VmmDeviceOptions,
  type VmmStats,
  type WalkResult,
} from "@viommu/core";
import type { PartitionInstance } from "./partition-devices.js";
import { HypervPartition } from "./hyperv-partition.js";
import { HypervUnit } from "../hw/hyperv-unit.js";
import { PARTITION_STATE_VERSION, restorePartition, savePartition } from "./partition-state.js";

const STATE_KIND = "hyperv-pviommu";

/**
 * The VMM half of the Hyper-V pvIOMMU for one physical unit of a VM. There are no registers, no command queue
 * and no firmware table: the guest finds and drives the pvIOMMU with hypercalls, which reach the VM's
 * partition (shared by every instance of the VM). Each instance owns the passthrough devices behind its unit
 * and, in nested mode, a vIOMMU on that unit. Nothing is polled: Hyper-V gives the guest no fault log, so DMA
 * faults stay in the hypervisor's (the unit's) own log.
 */
export class HypervDevice implements EmulatedIommu {
  readonly vendor = "hyperv";
  readonly mode: TranslationMode;
  /** Hypercall-only: no register block. */
  readonly mmioBase = 0;
  frozen = false;
  private destroyed = false;
  /** The stale-translation audit (VmmDeviceOptions.audit): the host unit checks this instance's devices' IOTLB hits. */
  readonly audit: StaleTranslationAudit | undefined;
  /** Audited devices by the id the guest knows them by. */
  private readonly audited = new Map<number, DmaDevice>();

  private constructor(
    readonly options: VmmDeviceOptions,
    readonly partition: HypervPartition,
    private readonly instance: PartitionInstance,
  ) {
    this.mode = options.mode;
    const host = resolveToken(options.vm.container, HostServices);
    this.audit = options.audit === true ? new StaleTranslationAudit(host.events, host.clock) : undefined;
  }

  private startAudit(device: DmaDevice, guestRid: number): void {
    if (this.audit === undefined || !(device.unit instanceof HypervUnit)) return;
    device.unit.auditDevice(device.requesterId, { audit: this.audit, vm: this.options.vm.id, guestRid });
    this.audited.set(guestRid, device);
  }

  private stopAudit(guestRid: number): DmaDevice | undefined {
    const device = this.audited.get(guestRid);
    if (device !== undefined && device.unit instanceof HypervUnit) device.unit.auditDevice(device.requesterId, undefined);
    this.audited.delete(guestRid);
    return device;
  }

  /** Joins (or creates) the VM's partition; EOPNOTSUPP for shadow mode, which a pvIOMMU cannot serve. */
  static create(options: VmmDeviceOptions): Result<HypervDevice> {
    const partition = HypervPartition.of(options);
    if (!partition.ok) return fail(partition);
    const instance = partition.value.join(options);
    if (!instance.ok) return fail(instance);
    return ok(new HypervDevice(options, partition.value, instance.value));
  }

  /** Counters of the whole partition (every instance of the VM shares its hypercall interface). */
  get stats(): VmmStats {
    return this.partition.stats;
  }

  assignDevice(device: DmaDevice, devId: number, guestRid: number): Result<void> {
    const r = this.partition.addDevice(this.instance, device, devId, guestRid);
    if (r.ok) this.startAudit(device, guestRid);
    return r;
  }

  /** Hot-unplug of a device behind this instance (see HypervPartition.removeDevice). */
  unassignDevice(guestRid: number): Result<void> {
    const r = this.partition.removeDevice(this.instance, guestRid);
    if (r.ok) this.stopAudit(guestRid);
    return r;
  }

  /** The device's logical id changes (see HypervPartition.renumberDevice). */
  renumberDevice(fromRid: number, toRid: number): Result<void> {
    const r = this.partition.renumberDevice(this.instance, fromRid, toRid);
    if (r.ok) {
      const device = this.stopAudit(fromRid);
      if (device !== undefined) this.startAudit(device, toRid);
    }
    return r;
  }

  /**
   * None: the pvIOMMU has no guest-visible queue. Every request (map, unmap, flush, attach) is a hypercall,
   * processed and answered synchronously, and faults go to the hypervisor's log, not to the guest.
   */
  guestQueues(): GuestQueueView[] {
    return [];
  }

  translateEmulated(guestRid: number, pasid: number, iova: number, write: boolean, out: WalkResult): void {
    this.partition.translateEmulated(guestRid, pasid, iova, write, out);
  }

  deliverMsi(guestRid: number, msi: MsiMessage): InterruptResult {
    return this.partition.deliverMsi(guestRid, msi);
  }

  /** Nothing to drain: no vEVENTQ, no guest event log. */
  poll(): void {}

  freeze(): void {
    if (this.frozen) return;
    this.frozen = true;
    this.partition.frozen++;
  }

  thaw(): void {
    if (!this.frozen) return;
    this.frozen = false;
    this.partition.frozen--;
  }

  save(): Uint8Array {
    return saveFrozen(this, () => {
      const blob = encodeState(STATE_KIND, PARTITION_STATE_VERSION, savePartition(this.partition));
      resolveToken(this.options.vm.container, HostServices).events.emit("migration", { vm: this.options.vm.id, phase: "saved", bytes: blob.length });
      return blob;
    });
  }

  /**
   * Restores into a fresh device of the same configuration, its passthrough devices already assigned. The stream
   * is hostile input: it is checked whole before anything changes (EINVAL naming the field); a refused restore
   * leaves the device as it was and is recorded in the host's log.
   */
  restore(blob: Uint8Array): Result<void> {
    const decoded = decodeState(blob, STATE_KIND, [PARTITION_STATE_VERSION]);
    const r = decoded.ok ? restorePartition(this.partition, decoded.value.value) : fail<void>(decoded);
    if (r.ok) resolveToken(this.options.vm.container, HostServices).events.emit("migration", { vm: this.options.vm.id, phase: "restored", bytes: blob.length });
    else this.partition.report("other", "restore refused", r.error);
    return r;
  }

  /** Detaches this instance's devices, destroys its HWPTs and vIOMMU; the last instance ends the partition. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const guestRid of [...this.audited.keys()]) this.stopAudit(guestRid);
    this.thaw();
    this.partition.leave(this.instance);
  }
}
