import type { DmaDevice, IommufdContext, PhysicalIommu } from "@viommu/core";
import { HV_DEVICE_DOMAIN_ID_DEFAULT } from "../format/device-domain.js";
import type { HvDeviceId } from "../format/device-id.js";

/** One emulated pvIOMMU instance of the partition: a physical unit, and its vIOMMU in nested mode. */
export interface PartitionInstance {
  readonly ctx: IommufdContext;
  readonly unit: PhysicalIommu;
  /** The vIOMMU the instance's paging device domains are nested on (undefined in IR-only mode). */
  readonly viommuId: number | undefined;
  readonly anchorDevId: number;
}

/** `PassthroughDevice.hostPt` before the partition has attached or detached the device itself. */
export const HOST_PT_UNKNOWN = -1;

/** A passthrough device of the partition: the physical device, its iommufd binding, its instance. */
export interface PassthroughDevice {
  readonly device: DmaDevice;
  readonly devId: number;
  readonly instance: PartitionInstance;
  /**
   * What the partition last attached the device to on the host (the HWPT or IOAS id it passed), undefined
   * once detached, HOST_PT_UNKNOWN before either. A device is never re-attached to what it is on: the host
   * has nothing to change, and a re-attach is where reference counting goes wrong.
   */
  hostPt: number | undefined;
}

/**
 * A device as the hypervisor tracks it for one partition. The guest names it by its logical device id, which
 * the model's VMM makes equal to the device's guest requester id (on Hyper-V it is the vPCI bus prefix | PCI
 * function; the model has no VMBus). Devices the VMM did not pass through are its own emulated PCI functions.
 */
export interface DeviceState {
  readonly rid: number;
  passthrough: PassthroughDevice | undefined;
  /** The device domain it is in: DEFAULT (identity) when assigned, NULL (blocked) after a detach. */
  domain: number;
  /** Set while the device is given to the partition with HVCALL_ATTACH_DEVICE: its logical device id. */
  direct: bigint | undefined;
}

/** Logical ids the model's VMM answers for: 16-bit requester ids. */
export const MAX_LOGICAL_DEVICE_ID = 0xffff;

/** At most this many emulated devices are tracked, so a guest naming random ids cannot grow the table. */
export const MAX_EMULATED_DEVICES = 4096;

/**
 * The requester id a hypercall's device id names: a logical id, or a PCI id on segment 0 (bus:device.function).
 * Undefined for other device types, other segments or ids no device can have.
 */
export function ridOfDeviceId(id: HvDeviceId): number | undefined {
  if (id.kind === "LOGICAL") {
    return id.fields.id <= BigInt(MAX_LOGICAL_DEVICE_ID) ? Number(id.fields.id) : undefined;
  }
  if (id.kind === "PCI") {
    const f = id.fields;
    if (f.segment !== 0 || f.source_shadow !== 0 || f.phantom_function_bits !== 0) return undefined;
    return (f.bus << 8) | (f.device << 3) | f.function;
  }
  return undefined;
}

/** The device table of one partition: passthrough devices, and emulated ones created when first named. */
export class PartitionDevices {
  private readonly byRid = new Map<number, DeviceState>();
  private emulated = 0;

  get(rid: number): DeviceState | undefined {
    return this.byRid.get(rid);
  }

  /** The device with `rid`, creating an emulated one in the default domain; undefined when the table is full. */
  getOrCreate(rid: number): DeviceState | undefined {
    const found = this.byRid.get(rid);
    if (found !== undefined) return found;
    if (rid < 0 || rid > MAX_LOGICAL_DEVICE_ID || this.emulated >= MAX_EMULATED_DEVICES) return undefined;
    const state: DeviceState = { rid, passthrough: undefined, domain: HV_DEVICE_DOMAIN_ID_DEFAULT, direct: undefined };
    this.byRid.set(rid, state);
    this.emulated++;
    return state;
  }

  /**
   * Makes `rid` a passthrough device: an emulated record at that id becomes it (the device takes over what the
   * hypervisor holds for the logical id), otherwise a new record in the default domain. `adopted` says which,
   * for `releasePassthrough`.
   */
  addPassthrough(rid: number, passthrough: PassthroughDevice): { state: DeviceState; adopted: boolean } {
    const existing = this.byRid.get(rid);
    if (existing !== undefined) {
      if (existing.passthrough === undefined) this.emulated--;
      existing.passthrough = passthrough;
      return { state: existing, adopted: true };
    }
    const state: DeviceState = { rid, passthrough, domain: HV_DEVICE_DOMAIN_ID_DEFAULT, direct: undefined };
    this.byRid.set(rid, state);
    return { state, adopted: false };
  }

  /** Undoes `addPassthrough`: an adopted record is emulated again, a new one goes. */
  releasePassthrough(state: DeviceState, adopted: boolean): void {
    if (!adopted) {
      this.byRid.delete(state.rid);
      return;
    }
    state.passthrough = undefined;
    this.emulated++;
  }

  remove(rid: number): void {
    const s = this.byRid.get(rid);
    if (s !== undefined && s.passthrough === undefined) this.emulated--;
    this.byRid.delete(rid);
  }

  /** Emulated records tracked (bounded by MAX_EMULATED_DEVICES). */
  get emulatedCount(): number {
    return this.emulated;
  }

  /** The device given to the partition under logical id `logical` (HVCALL_ATTACH_DEVICE), if any. */
  byDirectId(logical: bigint): DeviceState | undefined {
    for (const s of this.byRid.values()) if (s.direct === logical) return s;
    return undefined;
  }

  all(): IterableIterator<DeviceState> {
    return this.byRid.values();
  }
}
