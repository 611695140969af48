import {
  fail,
  fromBytes,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  ok,
  rawEquals,
  toBytes,
  type IommuError,
  type IommufdContext,
  type RawBits,
  type Result,
  type UserData,
  type VeventqFile,
} from "@viommu/core";
import {
  decodeHwInfoArmSmmuv3,
  encodeHwptArmSmmuv3,
  HW_INFO_ARM_SMMUV3_BYTES,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  VEVENT_ARM_SMMUV3_BYTES,
  VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES,
  type HwInfoArmSmmuv3,
} from "../format/uapi.js";
import { VeventqReader } from "./veventq-reader.js";

/** The most commands one invalidation ioctl carries (Linux CMDQ_BATCH_ENTRIES − 1, as QEMU batches them). */
export const MAX_FORWARD_BATCH = 63;

/** vEVENTQ depth the VMM asks for: room for bursts of faults between two polls. */
export const VEVENTQ_DEPTH = 1024;

/** A vSTE (dw0, dw1) asking for a plain V + Config entry. */
export function configVste(config: number): RawBits {
  return Uint32Array.of(1 | (config << 1), 0, 0, 0);
}

/** The all-zero vSTE: V = 0, which the host turns into an abort STE. */
export const INVALID_VSTE: RawBits = new Uint32Array(4);

/** What one IOMMU_HWPT_INVALIDATE did. */
export interface ForwardResult {
  /** Entries that took effect, from the first. */
  readonly handled: number;
  readonly ok: boolean;
  /** The host's refusal (undefined when `ok`). */
  readonly error: IommuError | undefined;
}

interface NestedDevice {
  readonly devId: number;
  hwptId: number | undefined;
  vste: RawBits | undefined;
}

/**
 * The VMM's iommufd side in nested mode (QEMU's smmuv3-accel): one vSMMU on the VM's stage-2 parent, its
 * vEVENTQ, a vDEVICE per passthrough device (vSID = the guest's StreamID), a nested HWPT per device built from
 * the guest's vSTE and attached in place of the previous one, and invalidations forwarded as raw commands.
 */
export class NestedHost {
  private readonly devices = new Map<number, NestedDevice>();
  private readonly vdeviceIds: number[] = [];
  /** Records of at most 64 reads of 64 each per poll. */
  private readonly reader: VeventqReader;
  private readonly payload = new Uint8Array(MAX_FORWARD_BATCH * VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES);

  private constructor(
    private readonly ctx: IommufdContext,
    readonly viommuId: number,
    private readonly veventq: VeventqFile,
    private readonly veventqId: number,
    readonly hostInfo: HwInfoArmSmmuv3 | undefined,
  ) {
    this.reader = new VeventqReader(veventq, VEVENT_ARM_SMMUV3_BYTES, 64, 64);
  }

  /**
   * Allocates the vSMMU (type ARM_SMMUV3 unless an extension's VMM asks for its own type, with its data) and its
   * ARM_SMMUV3 vEVENTQ, after reading the host's SMMUv3 hw_info for the ID registers to offer.
   */
  static create(ctx: IommufdContext, anchorDevId: number, parentHwptId: number, viommuType = IOMMU_VIOMMU_TYPE_ARM_SMMUV3, viommuData?: UserData): Result<NestedHost> {
    const info = ctx.getHwInfo({ flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, devId: anchorDevId, dataLen: HW_INFO_ARM_SMMUV3_BYTES, inDataType: IOMMU_HW_INFO_TYPE_ARM_SMMUV3 });
    const hostInfo = info.ok && info.value.outDataType === IOMMU_HW_INFO_TYPE_ARM_SMMUV3 ? decodeHwInfoArmSmmuv3(info.value.data) : undefined;
    const viommu = ctx.viommuAlloc({ flags: 0, type: viommuType, devId: anchorDevId, hwptId: parentHwptId, ...(viommuData !== undefined ? { data: viommuData } : {}) });
    if (!viommu.ok) return fail(viommu);
    const q = ctx.veventqAlloc({ flags: 0, viommuId: viommu.value, type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, depth: VEVENTQ_DEPTH });
    if (!q.ok) {
      ctx.destroy(viommu.value);
      return fail(q);
    }
    return ok(new NestedHost(ctx, viommu.value, q.value.file, q.value.id, hostInfo));
  }

  /** A passthrough device: its vDEVICE maps the guest's StreamID to the physical one. */
  addDevice(devId: number, vsid: number): Result<void> {
    const vdev = this.ctx.vdeviceAlloc({ viommuId: this.viommuId, devId, virtId: vsid });
    if (!vdev.ok) return fail(vdev);
    this.vdeviceIds.push(vdev.value);
    this.devices.set(vsid, { devId, hwptId: undefined, vste: undefined });
    return ok();
  }

  hasDevice(vsid: number): boolean {
    return this.devices.has(vsid);
  }

  /**
   * Installs `vste` for a device: a nested HWPT allocated on the vSMMU and attached, replacing (then freeing) the
   * previous one. An unchanged vSTE costs nothing. A vSTE the host refuses (EIO) falls back to an invalid one,
   * so the device is blocked rather than left on a stale configuration.
   */
  setVste(vsid: number, vste: RawBits): void {
    const d = this.devices.get(vsid);
    if (d === undefined || (d.vste !== undefined && rawEquals(d.vste, vste))) return;
    let hwpt = this.ctx.hwptAlloc({ flags: 0, devId: d.devId, ptId: this.viommuId, data: { type: IOMMU_HWPT_DATA_ARM_SMMUV3, bytes: encodeHwptArmSmmuv3(vste) } });
    let installed = vste;
    if (!hwpt.ok) {
      installed = INVALID_VSTE;
      if (d.vste !== undefined && rawEquals(d.vste, installed)) return;
      hwpt = this.ctx.hwptAlloc({ flags: 0, devId: d.devId, ptId: this.viommuId, data: { type: IOMMU_HWPT_DATA_ARM_SMMUV3, bytes: encodeHwptArmSmmuv3(installed) } });
      if (!hwpt.ok) return;
    }
    if (!this.ctx.attach(d.devId, hwpt.value).ok) {
      this.ctx.destroy(hwpt.value);
      return;
    }
    if (d.hwptId !== undefined) this.ctx.destroy(d.hwptId);
    d.hwptId = hwpt.value;
    d.vste = installed.slice();
  }

  /** The vSTE installed for a device (for tests and save/restore checks). */
  vsteOf(vsid: number): RawBits | undefined {
    return this.devices.get(vsid)?.vste;
  }

  /**
   * Forwards `count` raw guest commands (4 halves each, from `words` at command `from`) with
   * IOMMU_HWPT_INVALIDATE on the vSMMU. `handled` is how many the host says took effect (all of them when `ok`);
   * `error` is the host's refusal. The ioctl payload buffer is reused.
   */
  invalidate(words: Uint32Array, from: number, count: number): ForwardResult {
    if (count === 0) return { handled: 0, ok: true, error: undefined };
    const bytes = this.payload.subarray(0, count * VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES);
    toBytes(words.subarray(from * 4, (from + count) * 4), bytes);
    const r = this.ctx.hwptInvalidate({
      hwptId: this.viommuId,
      dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
      entryLen: VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES,
      entryNum: count,
      entries: bytes,
    });
    if (r.result.ok) return { handled: count, ok: true, error: undefined };
    return { handled: Math.max(0, Math.min(r.handled, count)), ok: false, error: r.result.error };
  }

  /** Drains the vEVENTQ: the records (StreamIDs already virtual) and whether events were lost on the way. */
  readEvents(): { records: RawBits[]; lost: boolean } {
    const records: RawBits[] = [];
    let lost = false;
    for (const record of this.reader.drain()) {
      if (record.lostBefore) lost = true;
      if (record.payload !== undefined && record.payload.length === VEVENT_ARM_SMMUV3_BYTES) records.push(fromBytes(record.payload, 0, 256));
    }
    return { records, lost };
  }

  /** Leaves first: attachments and nested HWPTs, vDEVICEs, the vEVENTQ, the vSMMU. */
  destroy(): void {
    for (const d of this.devices.values()) {
      this.ctx.detach(d.devId);
      if (d.hwptId !== undefined) this.ctx.destroy(d.hwptId);
    }
    this.devices.clear();
    for (const id of this.vdeviceIds) this.ctx.destroy(id);
    this.veventq.close();
    this.ctx.destroy(this.veventqId);
    this.ctx.destroy(this.viommuId);
  }
}

