import {
  checkFullUserArray,
  copyStructFromUser,
  copyStructToUser,
  err,
  fail,
  HwptAllocFlag,
  ok,
  readUserArrayEntryWords,
  type InvalidateOutcome,
  type NestedDomain,
  type PhysicalDevice,
  type RawBits,
  type Result,
  type UserData,
  type UserDataArray,
  type VdeviceCore,
  type ViommuCore,
  type ViommuOps,
} from "@viommu/core";
import { CommandOpcode, commandOpcode, commandProblem, decodeInvalidationRange, newInvalidationRange } from "../format/command.js";
import { nestedGuestDteProblem } from "../format/device-table-entry.js";
import {
  AMD_INVALIDATE_ENTRY_BYTES,
  decodeHwptAmdGuest,
  decodeViommuAmd,
  encodeViommuAmd,
  HWPT_AMD_GUEST_BYTES,
  IOMMU_HWPT_DATA_AMD_GUEST,
  IOMMU_VEVENTQ_TYPE_AMD,
  IOMMU_VEVENTQ_TYPE_AMD_CMD_INTERCEPT,
  IOMMU_VIOMMU_INVALIDATE_DATA_AMD,
  IOMMU_VIOMMU_TYPE_AMD,
  VIOMMU_AMD_BYTES,
  VIOMMU_AMD_MIN_BYTES,
} from "../format/iommufd-uapi.js";
import { VF_MMIO_BYTES, type AmdHwQueueKind, type AmdHwViommuOps } from "../format/vf-mmio.js";
import { AmdNestedDomain, type GuestDomainMapping, type NestedDomainOwner } from "./amd-nested-domain.js";
import { AmdHwViommuRings } from "./hw-viommu.js";
import { Stage2Access } from "./stage2-access.js";

/** What a vIOMMU needs from the unit it was carved from. */
export interface ViommuUnitPorts {
  readonly hostFiveLevel: boolean;
  /** A host DomainID from the host-wide tag space, held once; its cached translations go when it is freed. */
  allocateDomainId(): Result<number>;
  /** One more holder of a host DomainID (a device attached to a nested domain carrying it). */
  retainDomainId(id: number): void;
  releaseDomainId(id: number): void;
  allocateGuestId(): Result<number>;
  releaseGuestId(id: number): void;
  /** Physical address of guest id `gid`'s VF-MMIO page. */
  vfMmioAddress(gid: number): number;
  invalidate(hdomId: number, pasid: number | undefined, base: number, size: number, all: boolean): void;
  register(viommu: AmdViommu): void;
  unregister(viommu: AmdViommu): void;
}

/**
 * An AMD vIOMMU (Linux amd_iommu_viommu). Every vIOMMU offers the mainline nested-DTE path: nested domains
 * from `iommu_hwpt_amd_guest` with the gDomID → hDomID map, plus (model's choice, see IOMMU_VIOMMU_INVALIDATE_
 * DATA_AMD) invalidation of raw guest commands for an emulated command buffer. Allocated with
 * `iommu_viommu_amd` data it is a hardware vIOMMU: a guest id, the VF-MMIO page offered for mmap, a
 * device-ID map programmed by vDEVICEs, and the guest's rings as hardware queues.
 */
export class AmdViommu implements ViommuOps, NestedDomainOwner, AmdHwViommuOps {
  readonly vdeviceSize = 64;
  private readonly gdoms = new Map<number, GuestDomainMapping>();
  /** gDevId → hDevId, as vdeviceInit programs it (the VFCTRL DID map). */
  readonly deviceMap = new Map<number, number>();
  readonly guestId: number;
  readonly mmapOffset: number | undefined;
  readonly rings: AmdHwViommuRings | undefined;
  private readonly range = newInvalidationRange();
  /** One invalidation entry's words, reused entry after entry. */
  private readonly entryWords = new Uint32Array(AMD_INVALIDATE_ENTRY_BYTES / 4);
  /** The IOMMU's path to this VM's memory by GPA (GCR3 tables, guest rings). */
  readonly stage2: Stage2Access;

  private constructor(
    readonly core: ViommuCore,
    private readonly ports: ViommuUnitPorts,
    stage2: Stage2Access,
    guestId: number,
    mmapOffset: number | undefined,
    rings: AmdHwViommuRings | undefined,
  ) {
    this.stage2 = stage2;
    this.guestId = guestId;
    this.mmapOffset = mmapOffset;
    this.rings = rings;
  }

  /**
   * viommu_init: without data, the mainline vIOMMU; with `iommu_viommu_amd`, a hardware vIOMMU whose out_gid
   * and out_vfmmio_mmap_offset are written back to the user's struct.
   */
  static create(core: ViommuCore, ports: ViommuUnitPorts, host: ConstructorParameters<typeof Stage2Access>[0], data: UserData | undefined): Result<AmdViommu> {
    const stage2 = new Stage2Access(host, core.parent, core.owner);
    if (data === undefined) {
      const v = new AmdViommu(core, ports, stage2, 0, undefined, undefined);
      ports.register(v);
      return ok(v);
    }
    const bytes = copyStructFromUser(data, IOMMU_VIOMMU_TYPE_AMD, VIOMMU_AMD_MIN_BYTES, VIOMMU_AMD_BYTES);
    if (!bytes.ok) return fail(bytes);
    const request = decodeViommuAmd(bytes.value);
    if (request.reserved !== 0) return err("EOPNOTSUPP", "iommu_viommu_amd.reserved must be 0");
    const gid = ports.allocateGuestId();
    if (!gid.ok) return fail(gid);
    let self: AmdViommu | undefined;
    const rings = new AmdHwViommuRings({
      stage2,
      invalidateGuestDomain: (gdomId, pasid, base, size, all) => self!.invalidateGuestDomain(gdomId, pasid, base, size, all),
      invalidateAllGuestDomains: () => self!.invalidateAll(),
      isMappedDevice: (gDevId) => self!.deviceMap.has(gDevId),
      hasMappedDevices: () => self!.deviceMap.size > 0,
      intercept: (command) => core.reportEvent(IOMMU_VEVENTQ_TYPE_AMD_CMD_INTERCEPT, new Uint8Array(command.buffer, command.byteOffset, 16)).ok,
    });
    const offset = core.allocMmap(ports.vfMmioAddress(gid.value), VF_MMIO_BYTES, rings);
    if (!offset.ok) {
      ports.releaseGuestId(gid.value);
      return fail(offset);
    }
    const written = copyStructToUser(data, IOMMU_VIOMMU_TYPE_AMD, VIOMMU_AMD_MIN_BYTES, VIOMMU_AMD_BYTES, encodeViommuAmd({ ...request, outGid: gid.value, outVfmmioMmapOffset: offset.value }));
    if (!written.ok) {
      core.destroyMmap(offset.value);
      ports.releaseGuestId(gid.value);
      return fail(written);
    }
    self = new AmdViommu(core, ports, stage2, gid.value, offset.value, rings);
    ports.register(self);
    return ok(self);
  }

  destroy(): void {
    this.ports.unregister(this);
    if (this.mmapOffset !== undefined) this.core.destroyMmap(this.mmapOffset);
    if (this.guestId > 0) this.ports.releaseGuestId(this.guestId);
    this.deviceMap.clear();
  }

  /** Host DomainIDs of every nested domain on this vIOMMU (a stage-2 change must reach them all). */
  hostDomainIds(): number[] {
    return [...this.gdoms.values()].map((g) => g.hdomId);
  }

  // ---- nested domains (mainline nested.c) ----

  allocDomainNested(_device: PhysicalDevice, flags: number, data: UserData): Result<NestedDomain> {
    if ((flags & ~HwptAllocFlag.FAULT_ID_VALID) !== 0) return err("EOPNOTSUPP", "nested flags other than FAULT_ID_VALID");
    if (data.type !== IOMMU_HWPT_DATA_AMD_GUEST) return err("EOPNOTSUPP", `HWPT data type ${data.type}`);
    const bytes = copyStructFromUser(data, IOMMU_HWPT_DATA_AMD_GUEST, HWPT_AMD_GUEST_BYTES, HWPT_AMD_GUEST_BYTES);
    if (!bytes.ok) return fail(bytes);
    const dte = decodeHwptAmdGuest(bytes.value);
    const problem = nestedGuestDteProblem(dte, this.ports.hostFiveLevel);
    if (problem !== undefined) return err(problem.errno, problem.reason);
    const gdomId = dte[2]! & 0xffff;
    let mapping = this.gdoms.get(gdomId);
    if (mapping === undefined) {
      const hdom = this.ports.allocateDomainId();
      if (!hdom.ok) return err("ENOSPC", "no host domain id left");
      mapping = { gdomId, hdomId: hdom.value, users: 0 };
      this.gdoms.set(gdomId, mapping);
    }
    mapping.users++;
    return ok(new AmdNestedDomain(this.core.unit, this.core.parent, dte, mapping, this, this.stage2));
  }

  retainDomainId(hdomId: number): void {
    this.ports.retainDomainId(hdomId);
  }

  releaseDomainId(hdomId: number): void {
    this.ports.releaseDomainId(hdomId);
  }

  releaseGuestDomain(mapping: GuestDomainMapping): void {
    this.ports.invalidate(mapping.hdomId, undefined, 0, 0, true);
    if (--mapping.users > 0) return;
    this.gdoms.delete(mapping.gdomId);
    this.ports.releaseDomainId(mapping.hdomId);
  }

  // ---- invalidation ----

  invalidateGuestDomain(gdomId: number, pasid: number | undefined, base: number, size: number, all: boolean): void {
    const mapping = this.gdoms.get(gdomId);
    // A guest DomainID no nested domain carries has nothing cached.
    if (mapping !== undefined) this.ports.invalidate(mapping.hdomId, pasid, base, size, all);
  }

  invalidateAll(): void {
    for (const g of this.gdoms.values()) this.ports.invalidate(g.hdomId, undefined, 0, 0, true);
  }

  /**
   * Raw guest invalidation commands (IOMMU_VIOMMU_INVALIDATE_DATA_AMD), stopping at the first the hardware
   * would refuse (EIO, as SMMUv3 answers for a bad command): INVALIDATE_IOMMU_PAGES and INVALIDATE_IOMMU_ALL
   * act on the guest DomainIDs' host DomainIDs; INVALIDATE_IOTLB_PAGES is accepted (no device TLBs
   * modelled); anything else is not an invalidation.
   */
  cacheInvalidate(array: UserDataArray): InvalidateOutcome {
    if (array.type !== IOMMU_VIOMMU_INVALIDATE_DATA_AMD) return { handled: 0, result: err("EINVAL", `invalidation data type ${array.type}`) };
    if (array.entryNum === 0) return { handled: 0, result: ok() };
    const checked = checkFullUserArray(array, IOMMU_VIOMMU_INVALIDATE_DATA_AMD, AMD_INVALIDATE_ENTRY_BYTES);
    if (!checked.ok) return { handled: 0, result: checked };
    const raw = this.entryWords;
    for (let i = 0; i < array.entryNum; i++) {
      readUserArrayEntryWords(array, i, AMD_INVALIDATE_ENTRY_BYTES, raw);
      if (commandProblem(raw) !== undefined) return { handled: i, result: err("EIO", `entry ${i} is not a well-formed command`) };
      switch (commandOpcode(raw)) {
        case CommandOpcode.INVALIDATE_IOMMU_PAGES: {
          const r = decodeInvalidationRange(raw[2]!, raw[3]!, this.range);
          this.invalidateGuestDomain(raw[1]! & 0xffff, raw[2]! & 4 ? raw[0]! & 0xfffff : undefined, r.base, r.size, r.all);
          break;
        }
        case CommandOpcode.INVALIDATE_IOMMU_ALL:
          this.invalidateAll();
          break;
        case CommandOpcode.INVALIDATE_IOTLB_PAGES:
          break;
        default:
          return { handled: i, result: err("EIO", `entry ${i} is not an invalidation command`) };
      }
    }
    return { handled: array.entryNum, result: ok() };
  }

  // ---- vDEVICEs: the device-ID map ----

  vdeviceInit(vdevice: VdeviceCore): Result<void> {
    if (vdevice.virtId > 0xffff) return err("EINVAL", `guest DeviceID ${vdevice.virtId} wider than 16 bits`);
    this.deviceMap.set(vdevice.virtId, vdevice.device.requesterId);
    vdevice.destroy = () => void this.deviceMap.delete(vdevice.virtId);
    return ok();
  }

  // ---- hardware vIOMMU (out of tree) ----

  private requireHw(): Result<AmdHwViommuRings> {
    return this.rings === undefined ? err("EOPNOTSUPP", "not a hardware vIOMMU (allocated without iommu_viommu_amd)") : ok(this.rings);
  }

  hwQueueInit(kind: AmdHwQueueKind, baseGpa: number, lengthCode: number): Result<void> {
    const rings = this.requireHw();
    return rings.ok ? rings.value.queueInit(kind, baseGpa, lengthCode) : fail(rings);
  }

  hwQueueDestroy(kind: AmdHwQueueKind): void {
    this.rings?.queueDestroy(kind);
  }

  setGuestRegister(offset: number, value: bigint): Result<void> {
    const rings = this.requireHw();
    return rings.ok ? rings.value.setGuestRegister(offset, value) : fail(rings);
  }

  resumeCommands(): void {
    this.rings?.resume();
  }

  commandsHalted(): boolean {
    return this.rings?.commandsHalted ?? false;
  }

  setCommandsHalted(halted: boolean): void {
    this.rings?.setCommandsHalted(halted);
  }

  insertGuestEvent(record: RawBits): Result<void> {
    const rings = this.requireHw();
    if (!rings.ok) return fail(rings);
    return rings.value.logEvent(record) ? ok() : err("ENOSPC", "the guest event log did not take the event (full, overflowed or disabled)");
  }

  setInterruptPost(post: ((vector: number, destination: number) => void) | undefined): void {
    this.rings?.setInterruptPost(post);
  }

  /**
   * A fault of a device on this vIOMMU, already in guest terms: into the guest's own log when the hardware
   * owns it, else as a vEVENT for the VMM. False when neither took it.
   */
  deliverGuestEvent(record: Uint32Array): boolean {
    if (this.rings !== undefined && this.rings.logEvent(record)) return true;
    if (this.rings !== undefined) return false;
    return this.core.reportEvent(IOMMU_VEVENTQ_TYPE_AMD, new Uint8Array(record.buffer, record.byteOffset, 16)).ok;
  }

  insertPageRequest(record: RawBits): Result<void> {
    const rings = this.requireHw();
    if (!rings.ok) return fail(rings);
    return rings.value.logPageRequest(record) ? ok() : err("ENOSPC", "the guest PPR log did not take the request (full, overflowed or disabled)");
  }
}
