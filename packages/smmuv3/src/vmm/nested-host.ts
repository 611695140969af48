import {
  err,
  fail,
  fromBytes,
  HwptAllocFlag,
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

/** Whether typed arrays are little-endian here (every host Node runs on in practice; checked, not assumed). */
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

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
  vdeviceId: number;
  hwptId: number | undefined;
  vste: RawBits | undefined;
  /** The fault queue its nested HWPT was allocated with (undefined: none). */
  faultId: number | undefined;
}

/**
 * The VMM's iommufd side in nested mode (QEMU's smmuv3-accel): one vSMMU on the VM's stage-2 parent, its
 * vEVENTQ, a vDEVICE per passthrough device (vSID = the guest's StreamID), a nested HWPT per device built from
 * the guest's vSTE and attached in place of the previous one, and invalidations forwarded as raw commands.
 */
export class NestedHost {
  private readonly devices = new Map<number, NestedDevice>();
  /** Records of at most 64 reads of 64 each per poll. */
  private readonly reader: VeventqReader;
  private readonly payload = new Uint8Array(MAX_FORWARD_BATCH * VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES);
  private readonly payloadWords = new Uint32Array(this.payload.buffer);

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
    this.devices.set(vsid, { devId, vdeviceId: vdev.value, hwptId: undefined, vste: undefined, faultId: undefined });
    return ok();
  }

  /**
   * Hot-unplug: the device is detached (its DMA blocked: no STE for it on the host), then its nested HWPT and its
   * vDEVICE are destroyed, so nothing on the vSMMU names the vSID any more.
   */
  removeDevice(vsid: number): void {
    const d = this.devices.get(vsid);
    if (d === undefined) return;
    this.ctx.detach(d.devId);
    if (d.hwptId !== undefined) this.ctx.destroy(d.hwptId);
    this.ctx.destroy(d.vdeviceId);
    this.devices.delete(vsid);
  }

  /**
   * The device is now seen at `to`: its vDEVICE is re-created with the new virtual id (the vSMMU's vSID → pSID
   * table follows), keeping the HWPT attached until the caller installs what the guest has at `to`. On failure
   * the old vDEVICE is restored and the error returned.
   */
  renumberDevice(from: number, to: number): Result<void> {
    const d = this.devices.get(from);
    if (d === undefined) return err("ENOENT", `no device at vSID 0x${from.toString(16)}`);
    this.ctx.destroy(d.vdeviceId);
    const vdev = this.ctx.vdeviceAlloc({ viommuId: this.viommuId, devId: d.devId, virtId: to });
    if (!vdev.ok) {
      const back = this.ctx.vdeviceAlloc({ viommuId: this.viommuId, devId: d.devId, virtId: from });
      if (back.ok) d.vdeviceId = back.value;
      return fail(vdev);
    }
    d.vdeviceId = vdev.value;
    d.vste = undefined;
    this.devices.delete(from);
    this.devices.set(to, d);
    return ok();
  }

  hasDevice(vsid: number): boolean {
    return this.devices.has(vsid);
  }

  /** The vSID of an iommufd device, undefined for one this vSMMU does not place. */
  vsidOf(devId: number): number | undefined {
    for (const [vsid, d] of this.devices) if (d.devId === devId) return vsid;
    return undefined;
  }

  /**
   * Installs `vste` for a device: a nested HWPT allocated on the vSMMU (with the fault queue `faultId`, when the
   * guest takes page requests for the stream) and attached, replacing (then freeing) the previous one. An unchanged
   * vSTE and fault queue cost nothing. Returns the host's refusal, if any: the device is then blocked (an invalid
   * vSTE, the host's abort; detached if even that is refused) rather than left on a stale configuration, and the
   * caller reports it.
   */
  setVste(vsid: number, vste: RawBits, faultId?: number): IommuError | undefined {
    const d = this.devices.get(vsid);
    if (d === undefined || (d.vste !== undefined && rawEquals(d.vste, vste) && d.faultId === faultId)) return undefined;
    const refused = this.install(d, vste, faultId);
    if (refused === undefined) return undefined;
    if (d.vste === undefined || !rawEquals(d.vste, INVALID_VSTE)) {
      if (this.install(d, INVALID_VSTE, undefined) !== undefined) {
        this.ctx.detach(d.devId);
        if (d.hwptId !== undefined) this.ctx.destroy(d.hwptId);
        d.hwptId = undefined;
        d.vste = INVALID_VSTE.slice();
      }
    }
    return refused;
  }

  private install(d: NestedDevice, vste: RawBits, faultId: number | undefined): IommuError | undefined {
    const fault = faultId !== undefined ? { flags: HwptAllocFlag.FAULT_ID_VALID, faultId } : { flags: 0 };
    const hwpt = this.ctx.hwptAlloc({ ...fault, devId: d.devId, ptId: this.viommuId, data: { type: IOMMU_HWPT_DATA_ARM_SMMUV3, bytes: encodeHwptArmSmmuv3(vste) } });
    if (!hwpt.ok) return hwpt.error;
    const attached = this.ctx.attach(d.devId, hwpt.value);
    if (!attached.ok) {
      this.ctx.destroy(hwpt.value);
      return attached.error;
    }
    if (d.hwptId !== undefined) this.ctx.destroy(d.hwptId);
    d.hwptId = hwpt.value;
    d.vste = vste.slice();
    d.faultId = faultId;
    return undefined;
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
    // The halves are the little-endian entry's bytes: on a little-endian host a typed-array copy writes them as is.
    if (LITTLE_ENDIAN) this.payloadWords.set(words.subarray(from * 4, (from + count) * 4));
    else toBytes(words.subarray(from * 4, (from + count) * 4), bytes);
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
    for (const d of this.devices.values()) this.ctx.destroy(d.vdeviceId);
    this.devices.clear();
    this.veventq.close();
    this.ctx.destroy(this.veventqId);
    this.ctx.destroy(this.viommuId);
  }
}

