import { err, fail, ok, type Result } from "../errors/errno.js";
import { NO_PASID, type HwInfo, type IommuDomain, type NestedDomain, type PagingDomain, type PhysicalDevice } from "../contract/iommu-unit.js";
import type { UserData } from "../contract/user-data.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import type { OwnerId } from "../memory/host-memory.js";
import { PAGE_SIZE } from "../memory/page.js";
import { ADDRESS_LIMIT } from "../address/addresses.js";
import { BoundDevice } from "./device.js";
import { FaultQueue, FaultQueueFile } from "./fault-queue.js";
import { HwQueue } from "./hw-queue.js";
import { HwptNested, HwptPaging, hwptPagingOf, type Hwpt } from "./hwpt.js";
import { Ioas, mapAreaInto, permsFromMapFlags, type IovaRange } from "./ioas.js";
import { Perm } from "../translate/access.js";
import { MmapTable, type MmapRequest, type MmapHandle } from "./mmap.js";
import { drop, hold, ObjectTable, type IommufdObject } from "./object-table.js";
import {
  DIRTY_BITMAP_NO_CLEAR,
  DIRTY_TRACKING_ENABLE,
  IommuOption,
  IommuOptionOp,
  VfioIoasOp,
  CORE_HW_QUEUE_SIZE,
  CORE_VDEVICE_SIZE,
  CORE_VIOMMU_SIZE,
  HwptAllocFlag,
  INVALIDATE_ENTRY_LEN_MAX,
  INVALIDATE_ENTRY_NUM_MAX,
  IommufdObjectType,
  IoasMapFlag,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_QUEUE_TYPE_DEFAULT,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_VEVENTQ_TYPE_DEFAULT,
  IOMMU_VIOMMU_TYPE_DEFAULT,
  U64_MAX,
  VEVENTQ_DEPTH_MAX,
} from "./uapi.js";
import { Vdevice } from "./vdevice.js";
import { Veventq, VeventqFile } from "./veventq.js";
import { Viommu } from "./viommu.js";

/** Where an IOAS mapping's pages come from: guest RAM from `gpa` (the VMM's mapping of guest memory). */
export interface MapSource {
  readonly memory: GuestMemory;
  readonly gpa: number;
}

export interface IoasMapArgs {
  readonly ioasId: number;
  readonly flags: number;
  /**
   * The source, or how to find it: the ioctl layer resolves the user pointer only where the kernel pins the
   * pages (after the flag, range and IOVA checks), so its EFAULT comes in the kernel's order.
   */
  readonly memory?: GuestMemory;
  readonly gpa?: number;
  readonly resolve?: () => MapSource | undefined;
  readonly length: number;
  /** Used with FIXED_IOVA. */
  readonly iova?: number;
  /** IOAS_MAP_FILE (a memfd) rather than IOAS_MAP (a user VA). */
  readonly fromFile?: boolean;
}

export interface IoasUnmapArgs {
  readonly ioasId: number;
  readonly iova: number | bigint;
  readonly length: number | bigint;
}

export interface IoasCopyArgs {
  readonly flags: number;
  readonly dstIoasId: number;
  readonly srcIoasId: number;
  readonly length: number | bigint;
  readonly dstIova: number | bigint;
  readonly srcIova: number | bigint;
}

export interface OptionArgs {
  readonly optionId: number;
  readonly op: number;
  readonly objectId: number;
  readonly val64: bigint;
}

export interface DirtyBitmapArgs {
  readonly hwptId: number;
  readonly flags: number;
  readonly iova: number | bigint;
  readonly length: number | bigint;
  readonly pageSize: number | bigint;
  /** The user's bitmap of `bytes` bytes (undefined: not user memory, EFAULT). */
  readonly bitmap: (bytes: number) => Uint8Array | undefined;
}

export interface HwptAllocArgs {
  readonly flags: number;
  readonly devId: number;
  readonly ptId: number;
  readonly data?: UserData;
  readonly faultId?: number;
}

export interface ViommuAllocArgs {
  readonly flags: number;
  readonly type: number;
  readonly devId: number;
  readonly hwptId: number;
  readonly data?: UserData;
}

export interface VdeviceAllocArgs {
  readonly viommuId: number;
  readonly devId: number;
  readonly virtId: number;
}

export interface HwQueueAllocArgs {
  readonly flags: number;
  readonly viommuId: number;
  readonly type: number;
  readonly index: number;
  readonly nestingParentIova: number | bigint;
  readonly length: number | bigint;
}

export interface VeventqAllocArgs {
  readonly flags: number;
  readonly viommuId: number;
  readonly type: number;
  readonly depth: number;
}

export interface HwptInvalidateArgs {
  readonly hwptId: number;
  readonly dataType: number;
  readonly entryLen: number;
  readonly entryNum: number;
  /** The user's entry array (`data_uptr`); undefined models a NULL pointer. */
  readonly entries: Uint8Array | undefined;
}

export interface GetHwInfoArgs {
  readonly flags: number;
  readonly devId: number;
  /** The user's buffer length (`data_len` in). */
  readonly dataLen: number;
  readonly inDataType?: number;
}

export interface GetHwInfoReply {
  readonly outDataType: number;
  /** The driver's data length (`data_len` out). */
  readonly dataLen: number;
  /** The user's buffer: min(user, kernel) bytes copied, the rest zero. */
  readonly data: Uint8Array;
  readonly maxPasidLog2: number;
  readonly capabilities: number;
}

const HWPT_ALLOC_FLAGS = HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING | HwptAllocFlag.FAULT_ID_VALID | HwptAllocFlag.PASID;
const NESTED_ALLOC_FLAGS = HwptAllocFlag.FAULT_ID_VALID | HwptAllocFlag.PASID;

function asSafe(value: number | bigint): number | undefined {
  if (typeof value === "bigint") return value >= 0n && value < BigInt(ADDRESS_LIMIT) ? Number(value) : undefined;
  return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

/**
 * One open iommufd, as a VMM holds it for one VM: the object table and every ioctl of the vIOMMU flow, with
 * the kernel's validation order and errno for each failure. Methods return typed `Result`s; nothing here
 * throws for bad arguments.
 */
export class IommufdContext {
  readonly objects = new ObjectTable();
  readonly mmaps = new MmapTable();
  private closed = false;
  /** IOMMU_OPTION_RLIMIT_MODE: pinned pages charged to the user (0) or to the process (1). */
  accountMode: "user" | "mm" = "user";
  /** IOMMU_VFIO_IOAS: the IOAS the VFIO compatibility path uses. */
  private vfioCompatIoas: Ioas | undefined;
  /** How many times IOMMU_IOAS_CHANGE_PROCESS moved the accounting (the model has one process per VMM). */
  processChanges = 0;

  /**
   * @param owner the VM whose memory this context maps and whose devices it binds
   * @param privileged whether the VMM holds CAP_SYS_RESOURCE (IOMMU_OPTION_RLIMIT_MODE may be set)
   */
  constructor(
    readonly owner: OwnerId,
    readonly privileged = true,
  ) {}

  // ---- devices (VFIO cdev bind / attach; not iommufd ioctls) ----

  /** Binds a physical device (VFIO_DEVICE_BIND_IOMMUFD); its DMA then belongs to this context's VM. */
  bindDevice(device: PhysicalDevice): Result<number> {
    if (this.objects.objects().some((o) => o instanceof BoundDevice && o.device === device)) return err("EBUSY", `${device.name} already bound`);
    const r = this.objects.add(new BoundDevice(device));
    if (!r.ok) return fail(r);
    device.owner = this.owner;
    return ok(r.value.id);
  }

  /**
   * Unbinds a device (VFIO unbind / device FD close): its vDEVICE is destroyed first and leaves a tombstone,
   * its attachments are dropped, its DMA is blocked.
   */
  unbindDevice(devId: number): Result<void> {
    const r = this.objects.get<BoundDevice>(devId, IommufdObjectType.DEVICE);
    if (!r.ok) return fail(r);
    const idev = r.value;
    idev.dying = true;
    if (idev.vdevice) this.objects.remove(idev.vdevice, true);
    for (const pasid of [...idev.attachments.keys()]) this.detach(devId, pasid);
    idev.users = 1;
    this.objects.remove(idev);
    return ok();
  }

  /**
   * VFIO_DEVICE_ATTACH_IOMMUFD_PT: VFIO attaches a device (or one of its PASIDs) that is not attached yet and
   * replaces the attachment of one that is (vfio_iommufd_physical_attach_ioas). `ptId` is a HWPT, or an IOAS
   * reached through an automatically created paging HWPT. Returns the HWPT id.
   */
  attach(devId: number, ptId: number, pasid = NO_PASID): Result<number> {
    const d = this.objects.get<BoundDevice>(devId, IommufdObjectType.DEVICE);
    if (!d.ok) return fail(d);
    return d.value.attachments.has(pasid) ? this.deviceReplace(devId, ptId, pasid) : this.deviceAttach(devId, ptId, pasid);
  }

  /**
   * iommufd_device_attach: connects a device (PASID) that has no attachment. EBUSY when it is attached already
   * (the kernel's device_array insert), EINVAL when the HWPT is incompatible (another driver, PASID rules).
   */
  deviceAttach(devId: number, ptId: number, pasid = NO_PASID): Result<number> {
    return this.changePt(devId, ptId, pasid, false);
  }

  /**
   * iommufd_device_replace: moves an attached device (PASID) to another HWPT without a window of blocked DMA.
   * EINVAL when nothing is attached; replacing with the HWPT already attached changes nothing (Linux returns
   * before touching any reference, which is what keeps an automatic HWPT alive across a re-attach).
   */
  deviceReplace(devId: number, ptId: number, pasid = NO_PASID): Result<number> {
    return this.changePt(devId, ptId, pasid, true);
  }

  /** iommufd_device_change_pt: the body attach and replace share, for a HWPT or an IOAS. */
  private changePt(devId: number, ptId: number, pasid: number, replace: boolean): Result<number> {
    const d = this.objects.get<BoundDevice>(devId, IommufdObjectType.DEVICE);
    if (!d.ok) return fail(d);
    const idev = d.value;
    const pt = this.objects.get(ptId);
    if (!pt.ok) return fail(pt);
    if (pt.value instanceof HwptPaging || pt.value instanceof HwptNested) {
      const r = replace ? this.doReplace(idev, pasid, pt.value) : this.doAttach(idev, pasid, pt.value);
      return r.ok ? ok(pt.value.id) : fail(r);
    }
    if (pt.value instanceof Ioas) return this.autoDomain(idev, pasid, pt.value, replace);
    return err("EINVAL", `object ${ptId} is a ${pt.value.type}, not an IOAS or HWPT`);
  }

  /**
   * iommufd_device_auto_get_domain: an existing automatic HWPT of the IOAS that the device can use (EINVAL
   * from one means incompatible: try the next), else a new one, destroyed again if the attach fails.
   */
  private autoDomain(idev: BoundDevice, pasid: number, ioas: Ioas, replace: boolean): Result<number> {
    for (const o of this.objects.objects()) {
      if (!(o instanceof HwptPaging) || !o.autoDomain || o.ioas !== ioas) continue;
      const r = replace ? this.doReplace(idev, pasid, o) : this.doAttach(idev, pasid, o);
      if (r.ok) return ok(o.id);
      if (r.error.errno !== "EINVAL") return fail(r);
    }
    const id = this.objects.reserve();
    if (!id.ok) return fail(id);
    const domain = idev.device.unit.domainAllocPaging(idev.device, 0, this.owner);
    if (!domain.ok) {
      this.objects.abort(id.value);
      return fail(domain);
    }
    const hwpt = new HwptPaging(ioas, domain.value, true, undefined, false);
    hwpt.id = id.value;
    const added = this.addDomainToIoas(ioas, hwpt);
    if (!added.ok) {
      this.objects.abort(id.value);
      hwpt.release();
      return fail(added);
    }
    const r = replace ? this.doReplace(idev, pasid, hwpt) : this.doAttach(idev, pasid, hwpt);
    if (!r.ok) {
      this.objects.abort(id.value);
      hwpt.release();
      return fail(r);
    }
    return ok(this.objects.finalize(id.value, hwpt).id);
  }

  /**
   * iommufd_hwpt_pasid_compat and iommu_attach_device_pasid's checks: a PASID needs a PASID-capable device
   * (the PASID below its width), a HWPT allocated with IOMMU_HWPT_ALLOC_PASID, and a RID attachment (if any)
   * that is PASID-compatible too; a RID attachment to a HWPT that is not PASID-compatible is refused while
   * PASIDs are attached. All EINVAL.
   */
  private pasidCompatible(idev: BoundDevice, pasid: number, hwpt: Hwpt): Result<void> {
    if (pasid === NO_PASID) {
      if (!hwpt.pasidCompat && [...idev.attachments.keys()].some((p) => p !== NO_PASID)) return err("EINVAL", "PASIDs are attached and the HWPT is not PASID-compatible");
      return ok();
    }
    if (!hwpt.pasidCompat) return err("EINVAL", "HWPT was not allocated with IOMMU_HWPT_ALLOC_PASID");
    const rid = idev.attachments.get(NO_PASID);
    if (rid !== undefined && !rid.pasidCompat) return err("EINVAL", "the device's RID HWPT is not PASID-compatible");
    if (!Number.isSafeInteger(pasid) || pasid < 0 || pasid >= 2 ** idev.device.pasidBits) return err("EINVAL", `PASID ${pasid} beyond the device's ${idev.device.pasidBits}-bit PASID width`);
    return ok();
  }

  /**
   * Holds (or lets go of) the tag a domain's translations are cached under, for one attached device: the
   * domain's own tag, or a nested domain's parent's VMID when it has none of its own.
   */
  private static holdTag(domain: IommuDomain, take: boolean): void {
    const holder = domain.retainTag !== undefined ? domain : domain.kind === "nested" ? domain.parent : undefined;
    if (take) holder?.retainTag?.();
    else holder?.releaseTag?.();
  }

  /** The device's reserved regions in the IOAS the HWPT maps (RID attachments only, as Linux enforces them). */
  private reserveForDevice(idev: BoundDevice, pasid: number, hwpt: Hwpt): Result<void> {
    const paging = hwptPagingOf(hwpt);
    if (paging === undefined || pasid !== NO_PASID) return ok();
    for (const r of idev.device.unit.reservedRegions?.(idev.device) ?? []) {
      const done = paging.ioas.reserve(BigInt(r.start), BigInt(r.start) + BigInt(r.length) - 1n, idev);
      if (!done.ok) {
        paging.ioas.unreserve(idev);
        return done;
      }
    }
    return ok();
  }

  private doAttach(idev: BoundDevice, pasid: number, hwpt: Hwpt): Result<void> {
    if (idev.attachments.has(pasid)) return err("EBUSY", "already attached: use replace");
    if (hwpt.domain.unit.vendor !== idev.device.unit.vendor) return err("EINVAL", "HWPT belongs to another IOMMU driver");
    const compat = this.pasidCompatible(idev, pasid, hwpt);
    if (!compat.ok) return compat;
    const resv = this.reserveForDevice(idev, pasid, hwpt);
    if (!resv.ok) return resv;
    const r = idev.device.unit.attachDevice(idev.device, hwpt.domain as IommuDomain, pasid);
    if (!r.ok) {
      hwptPagingOf(hwpt)?.ioas.unreserve(idev);
      return fail(r);
    }
    this.hold(idev, pasid, hwpt);
    return ok();
  }

  private doReplace(idev: BoundDevice, pasid: number, hwpt: Hwpt): Result<void> {
    const old = idev.attachments.get(pasid);
    if (old === undefined) return err("EINVAL", "not attached: nothing to replace");
    if (old === hwpt) return ok();
    if (hwpt.domain.unit.vendor !== idev.device.unit.vendor) return err("EINVAL", "HWPT belongs to another IOMMU driver");
    const compat = this.pasidCompatible(idev, pasid, hwpt);
    if (!compat.ok) return compat;
    const oldPaging = hwptPagingOf(old);
    const newPaging = hwptPagingOf(hwpt);
    const moveResv = pasid === NO_PASID && newPaging !== undefined && newPaging.ioas !== oldPaging?.ioas;
    if (moveResv) {
      // Reservations are keyed by device: re-key the old ones so a failure can restore exactly them.
      const resv = this.reserveForDevice(idev, pasid, hwpt);
      if (!resv.ok) return resv;
    }
    const r = idev.device.unit.attachDevice(idev.device, hwpt.domain as IommuDomain, pasid);
    if (!r.ok) {
      if (moveResv) newPaging!.ioas.unreserve(idev);
      return fail(r);
    }
    if (pasid === NO_PASID && oldPaging !== undefined && oldPaging.ioas !== newPaging?.ioas) oldPaging.ioas.unreserve(idev);
    // The new HWPT is held before the old one is let go: an automatic HWPT is never freed under a device.
    this.hold(idev, pasid, hwpt);
    this.release(idev, old);
    return ok();
  }

  /** Records an attachment: a reference on the HWPT and on the tag its translations are cached under. */
  private hold(idev: BoundDevice, pasid: number, hwpt: Hwpt): void {
    hold(hwpt);
    IommufdContext.holdTag(hwpt.domain as IommuDomain, true);
    idev.attachments.set(pasid, hwpt);
  }

  /** Drops an attachment's references; an automatic HWPT lives only while devices use it. */
  private release(idev: BoundDevice, hwpt: Hwpt): void {
    if (hwpt.fault) hwpt.fault.autoRespond(idev.id);
    drop(hwpt);
    IommufdContext.holdTag(hwpt.domain as IommuDomain, false);
    if (hwpt instanceof HwptPaging && hwpt.autoDomain && hwpt.users === 1) this.objects.remove(hwpt);
  }

  /**
   * VFIO_DEVICE_DETACH_IOMMUFD_PT: DMA of the device (PASID) is blocked afterwards. Detaching what is not
   * attached is not an error (iommufd_hw_pagetable_detach returns nothing to put).
   */
  detach(devId: number, pasid = NO_PASID): Result<void> {
    const d = this.objects.get<BoundDevice>(devId, IommufdObjectType.DEVICE);
    if (!d.ok) return fail(d);
    const hwpt = d.value.attachments.get(pasid);
    if (hwpt === undefined) return ok();
    d.value.device.unit.detachDevice(d.value.device, pasid);
    d.value.attachments.delete(pasid);
    if (pasid === NO_PASID) hwptPagingOf(hwpt)?.ioas.unreserve(d.value);
    this.release(d.value, hwpt);
    return ok();
  }

  /**
   * Adds a paging HWPT's domain to its IOAS (iopt_table_add_domain): the domain's aperture is reserved (an
   * existing mapping outside it is EADDRINUSE) and every area is written into it.
   */
  private addDomainToIoas(ioas: Ioas, hwpt: HwptPaging): Result<void> {
    const limit = 2n ** BigInt(hwpt.domain.table.geometry.inputBits);
    if (limit <= U64_MAX) {
      const r = ioas.reserve(limit, U64_MAX, hwpt);
      if (!r.ok) return r;
    }
    const filled = this.fillDomain(ioas, hwpt.domain);
    if (!filled.ok) {
      ioas.unreserve(hwpt);
      return filled;
    }
    ioas.domains.add(hwpt.domain);
    return ok();
  }

  // ---- IOAS ----

  ioasAlloc(): Result<number> {
    const r = this.objects.add(new Ioas());
    return r.ok ? ok(r.value.id) : fail(r);
  }

  /**
   * IOMMU_IOAS_MAP (and IOMMU_IOAS_MAP_FILE) in ioas.c's order: flags (EOPNOTSUPP), sizes (EOVERFLOW),
   * permissions (EINVAL), the IOAS (ENOENT), alignment (EINVAL), the IOVA (ENOSPC / reserved EINVAL /
   * overlap EEXIST), then the pages (EFAULT). Returns the IOVA (chosen by the allocator unless FIXED_IOVA).
   */
  ioasMap(args: IoasMapArgs): Result<number> {
    const known = IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE;
    if ((args.flags & ~known) !== 0) return err("EOPNOTSUPP", `unknown map flags 0x${args.flags.toString(16)}`);
    if (asSafe(args.length) === undefined || (args.iova !== undefined && asSafe(args.iova) === undefined)) return err("EOVERFLOW", "iova or length too large");
    if ((args.flags & (IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE)) === 0) return err("EINVAL", "mapping neither readable nor writeable");
    const ioas = this.objects.get<Ioas>(args.ioasId, IommufdObjectType.IOAS);
    if (!ioas.ok) return fail(ioas);
    const align = ioas.value.iovaAlignment;
    if (args.length === 0 || args.length % align !== 0) return err("EINVAL", "length must be whole pages");
    let iova: number;
    if (args.flags & IoasMapFlag.FIXED_IOVA) {
      iova = args.iova ?? 0;
      if (iova % align !== 0) return err("EINVAL", "IOVA not page aligned");
      if (iova + args.length > ADDRESS_LIMIT) return err("EOVERFLOW", "IOVA range overflows");
    } else {
      const hole = ioas.value.findHole(args.length, ADDRESS_LIMIT);
      if (hole === undefined) return err("ENOSPC", "no free IOVA range");
      iova = hole;
    }
    const source = args.resolve !== undefined ? args.resolve() : args.memory !== undefined && args.gpa !== undefined ? { memory: args.memory, gpa: args.gpa } : undefined;
    if (source === undefined) return err("EFAULT", "source is not mapped memory");
    if (source.gpa % PAGE_SIZE !== 0) return err("EINVAL", "source must be page aligned");
    if (source.memory.owner !== this.owner) return err("EFAULT", "source memory belongs to another VM");
    if (!source.memory.contains(source.gpa, args.length)) return err("EFAULT", "source range outside guest RAM");
    const perms = permsFromMapFlags((args.flags & IoasMapFlag.READABLE) !== 0, (args.flags & IoasMapFlag.WRITEABLE) !== 0);
    const r = ioas.value.addArea({ iova, length: args.length, memory: source.memory, gpa: source.gpa, perms, locks: 0, source: args.fromFile ? "file" : "user" });
    return r.ok ? ok(iova) : fail(r);
  }

  /** IOMMU_IOAS_UNMAP: returns the bytes unmapped. iova 0 with length U64_MAX unmaps everything. */
  ioasUnmap(args: IoasUnmapArgs): Result<number> {
    const ioas = this.objects.get<Ioas>(args.ioasId, IommufdObjectType.IOAS);
    if (!ioas.ok) return fail(ioas);
    if (BigInt(args.iova) === 0n && BigInt(args.length) === U64_MAX) {
      if (ioas.value.areas.some((a) => a.locks > 0)) return err("EBUSY", "an area is pinned by a HW queue");
      if (ioas.value.areas.length === 0) return ok(0);
      const first = ioas.value.areas[0]!;
      const last = ioas.value.areas[ioas.value.areas.length - 1]!;
      return ioas.value.removeRange(first.iova, last.iova + last.length - first.iova);
    }
    const iova = asSafe(args.iova);
    const length = asSafe(args.length);
    if (iova === undefined || length === undefined || iova + length > ADDRESS_LIMIT) return err("EOVERFLOW", "iova or length too large");
    if (length === 0) return err("EINVAL", "zero length");
    return ioas.value.removeRange(iova, length);
  }

  /** IOMMU_IOAS_IOVA_RANGES: the usable IOVA ranges (holes between reserved ranges) and the map alignment. */
  ioasIovaRanges(ioasId: number): Result<{ ranges: IovaRange[]; alignment: number }> {
    const ioas = this.objects.get<Ioas>(ioasId, IommufdObjectType.IOAS);
    if (!ioas.ok) return fail(ioas);
    return ok({ ranges: ioas.value.usableRanges(), alignment: ioas.value.iovaAlignment });
  }

  /**
   * IOMMU_IOAS_ALLOW_IOVAS: replaces the allowed list. Each range needs start < last and no overlap with
   * another in the list (EINVAL, iommufd_ioas_load_iovas); one meeting a reserved range is EADDRINUSE.
   */
  ioasAllowIovas(ioasId: number, ranges: readonly IovaRange[]): Result<void> {
    const ioas = this.objects.get<Ioas>(ioasId, IommufdObjectType.IOAS);
    if (!ioas.ok) return fail(ioas);
    const loaded: IovaRange[] = [];
    for (const r of ranges) {
      if (r.start >= r.last) return err("EINVAL", `allowed range 0x${r.start.toString(16)}-0x${r.last.toString(16)} is empty or reversed`);
      if (loaded.some((l) => l.start <= r.last && r.start <= l.last)) return err("EINVAL", "allowed ranges overlap");
      loaded.push({ start: r.start, last: r.last });
    }
    return ioas.value.setAllowed(loaded);
  }

  /**
   * IOMMU_IOAS_COPY: maps into `dstIoasId` the pages already mapped at [srcIova, srcIova + length) of
   * `srcIoasId`, without pinning again. Checks in ioas.c's order; the source range must be mapped without a
   * gap (ENOENT), and a writeable copy needs writeable source pages (EPERM). Returns the destination IOVA.
   */
  ioasCopy(args: IoasCopyArgs): Result<number> {
    const known = IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE;
    if ((args.flags & ~known) !== 0) return err("EOPNOTSUPP", `unknown copy flags 0x${args.flags.toString(16)}`);
    const length = asSafe(args.length);
    const srcIova = asSafe(args.srcIova);
    const dstIova = asSafe(args.dstIova);
    if (length === undefined || srcIova === undefined || dstIova === undefined) return err("EOVERFLOW", "length or IOVA too large");
    if ((args.flags & (IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE)) === 0) return err("EINVAL", "copy neither readable nor writeable");
    const src = this.objects.get<Ioas>(args.srcIoasId, IommufdObjectType.IOAS);
    if (!src.ok) return fail(src);
    if (length === 0 || srcIova + length > ADDRESS_LIMIT) return err("EINVAL", "empty or overflowing source range");
    const slices = src.value.areasCovering(srcIova, length);
    if (slices === undefined) return err("ENOENT", "source range not fully mapped");
    const dst = this.objects.get<Ioas>(args.dstIoasId, IommufdObjectType.IOAS);
    if (!dst.ok) return fail(dst);
    const align = dst.value.iovaAlignment;
    if (length % align !== 0 || srcIova % align !== 0) return err("EINVAL", "copy not page aligned");
    const writeable = (args.flags & IoasMapFlag.WRITEABLE) !== 0;
    if (writeable && slices.some((a) => (a.perms & Perm.Write) === 0)) return err("EPERM", "source pages are not writeable");
    let iova: number;
    if (args.flags & IoasMapFlag.FIXED_IOVA) {
      iova = dstIova;
      if (iova % align !== 0) return err("EINVAL", "IOVA not page aligned");
      if (iova + length > ADDRESS_LIMIT) return err("EOVERFLOW", "IOVA range overflows");
    } else {
      const hole = dst.value.findHole(length, ADDRESS_LIMIT);
      if (hole === undefined) return err("ENOSPC", "no free IOVA range");
      iova = hole;
    }
    const perms = permsFromMapFlags((args.flags & IoasMapFlag.READABLE) !== 0, writeable);
    const added: { iova: number; length: number }[] = [];
    for (const a of slices) {
      const from = Math.max(a.iova, srcIova);
      const to = Math.min(a.iova + a.length, srcIova + length);
      const at = iova + (from - srcIova);
      const r = dst.value.addArea({ iova: at, length: to - from, memory: a.memory, gpa: a.gpa + (from - a.iova), perms, locks: 0, source: a.source });
      if (!r.ok) {
        for (const done of added) dst.value.removeRange(done.iova, done.length);
        return fail(r);
      }
      added.push({ iova: at, length: to - from });
    }
    return ok(iova);
  }

  /**
   * IOMMU_OPTION: RLIMIT_MODE (global: object_id 0, set only by a privileged caller and only while the context
   * holds no object) and HUGE_PAGES (per IOAS; disabling is refused once a domain has pages mapped). Returns
   * the option's value (for GET, and the value set for SET).
   */
  option(args: OptionArgs): Result<bigint> {
    if (args.optionId === IommuOption.RLIMIT_MODE) {
      if (args.objectId !== 0) return err("EOPNOTSUPP", "RLIMIT_MODE is global: object_id must be 0");
      if (args.op === IommuOptionOp.GET) return ok(this.accountMode === "mm" ? 1n : 0n);
      if (args.op !== IommuOptionOp.SET) return err("EOPNOTSUPP", `unknown option op ${args.op}`);
      if (!this.privileged) return err("EPERM", "RLIMIT_MODE needs CAP_SYS_RESOURCE");
      if (this.objects.objects().length > 0) return err("EBUSY", "objects exist: the accounting mode is fixed");
      if (args.val64 !== 0n && args.val64 !== 1n) return err("EINVAL", "RLIMIT_MODE is 0 (user) or 1 (process)");
      this.accountMode = args.val64 === 1n ? "mm" : "user";
      return ok(args.val64);
    }
    if (args.optionId === IommuOption.HUGE_PAGES) {
      const ioas = this.objects.get<Ioas>(args.objectId, IommufdObjectType.IOAS);
      if (!ioas.ok) return fail(ioas);
      if (args.op === IommuOptionOp.GET) return ok(ioas.value.hugePages ? 1n : 0n);
      if (args.op !== IommuOptionOp.SET) return err("EOPNOTSUPP", `unknown option op ${args.op}`);
      if (args.val64 === 1n) ioas.value.hugePages = true;
      else if (args.val64 === 0n) {
        if (ioas.value.hugePages && ioas.value.domains.size > 0 && ioas.value.areas.length > 0) return err("EINVAL", "domains already have pages mapped");
        ioas.value.hugePages = false;
      } else return err("EINVAL", "HUGE_PAGES is 0 or 1");
      return ok(args.val64);
    }
    return err("EOPNOTSUPP", `unknown option ${args.optionId}`);
  }

  /** IOMMU_VFIO_IOAS: gets, sets or clears the IOAS the VFIO compatibility path uses. Returns its id for GET. */
  vfioIoas(op: number, ioasId: number): Result<number> {
    switch (op) {
      case VfioIoasOp.GET:
      {
        // A destroyed IOAS stops being the compatibility IOAS (iommufd_object_remove clears it).
        const current = this.vfioCompatIoas === undefined ? undefined : this.objects.get(this.vfioCompatIoas.id, IommufdObjectType.IOAS);
        if (current === undefined || !current.ok || current.value !== this.vfioCompatIoas) return err("ENODEV", "no compatibility IOAS");
        return ok(current.value.id);
      }
      case VfioIoasOp.SET: {
        const ioas = this.objects.get<Ioas>(ioasId, IommufdObjectType.IOAS);
        if (!ioas.ok) return fail(ioas);
        this.vfioCompatIoas = ioas.value;
        return ok(ioas.value.id);
      }
      case VfioIoasOp.CLEAR:
        this.vfioCompatIoas = undefined;
        return ok(0);
      default:
        return err("EOPNOTSUPP", `unknown VFIO_IOAS op ${op}`);
    }
  }

  /**
   * IOMMU_IOAS_CHANGE_PROCESS: moves the accounting of every pinned page to the calling process. Only
   * file-backed mappings (IOAS_MAP_FILE) can move: any user-VA mapping makes it EINVAL and nothing changes.
   */
  ioasChangeProcess(): Result<void> {
    for (const o of this.objects.objects()) {
      if (o instanceof Ioas && o.areas.some((a) => a.source !== "file")) return err("EINVAL", `IOAS ${o.id} has user-VA mappings, which belong to their process`);
    }
    this.processChanges++;
    return ok();
  }

  /** Writes every existing area of the IOAS into a new paging domain (rolling back on failure). */
  private fillDomain(ioas: Ioas, domain: PagingDomain): Result<void> {
    const mapped: typeof ioas.areas = [];
    for (const area of ioas.areas) {
      const r = mapAreaInto(domain, area, ioas.hugePages);
      if (!r.ok) {
        for (const a of mapped) domain.unmap(a.iova, a.length);
        return r;
      }
      mapped.push(area);
    }
    return ok();
  }

  // ---- HWPT ----

  /**
   * IOMMU_HWPT_ALLOC: a paging HWPT on an IOAS, or a nested HWPT on a paging parent or a vIOMMU. The fault
   * queue of FAULT_ID_VALID is resolved by the core once the domain exists (ENOENT for a bad id) and the flag
   * never reaches the driver, as in Linux's hw_pagetable.c.
   */
  hwptAlloc(args: HwptAllocArgs): Result<number> {
    const dataType = args.data?.type ?? IOMMU_HWPT_DATA_NONE;
    const dataLen = args.data?.bytes.length ?? 0;
    if ((dataType === IOMMU_HWPT_DATA_NONE) !== (dataLen === 0)) return err("EINVAL", "data_type and data_len disagree");
    const d = this.objects.get<BoundDevice>(args.devId, IommufdObjectType.DEVICE);
    if (!d.ok) return fail(d);
    const pt = this.objects.get(args.ptId);
    if (!pt.ok) return err("EINVAL", `pt_id ${args.ptId} does not exist`);
    const id = this.objects.reserve();
    if (!id.ok) return fail(id);
    const built = this.buildHwpt(args, d.value.device, pt.value, dataLen);
    if (!built.ok) {
      this.objects.abort(id.value);
      return fail(built);
    }
    const hwpt = built.value;
    if (args.flags & HwptAllocFlag.FAULT_ID_VALID) {
      const f = this.objects.get<FaultQueue>(args.faultId ?? 0, IommufdObjectType.FAULT);
      if (!f.ok) {
        hwpt.release();
        this.objects.abort(id.value);
        return fail(f);
      }
      hwpt.attachFault(f.value, (device) => this.objects.objects().find((o): o is BoundDevice => o instanceof BoundDevice && o.device === device)?.id);
    }
    return ok(this.objects.finalize(id.value, hwpt).id);
  }

  private buildHwpt(args: HwptAllocArgs, device: PhysicalDevice, pt: IommufdObject, dataLen: number): Result<Hwpt> {
    const flags = args.flags;
    const pasidCompat = (flags & HwptAllocFlag.PASID) !== 0;
    const driverFlags = flags & ~HwptAllocFlag.FAULT_ID_VALID;
    if (pt instanceof Ioas) {
      if (dataLen !== 0 || (flags & ~HWPT_ALLOC_FLAGS) !== 0) return err("EOPNOTSUPP", "paging HWPT takes no data and known flags only");
      if ((flags & HwptAllocFlag.FAULT_ID_VALID) && (flags & HwptAllocFlag.NEST_PARENT)) return err("EOPNOTSUPP", "a nest parent cannot take a fault queue");
      const domain = device.unit.domainAllocPaging(device, driverFlags, this.owner);
      if (!domain.ok) return fail(domain);
      const hwpt = new HwptPaging(pt, domain.value, false, undefined, pasidCompat);
      const added = this.addDomainToIoas(pt, hwpt);
      if (!added.ok) {
        hwpt.release();
        return fail(added);
      }
      return ok(hwpt);
    }
    let nested: Result<NestedDomain>;
    if (pt instanceof HwptPaging) {
      if ((flags & ~NESTED_ALLOC_FLAGS) !== 0 || dataLen === 0 || device.unit.domainAllocNested === undefined) {
        return err("EOPNOTSUPP", "nested HWPT on a paging parent not supported with these arguments");
      }
      if (pt.autoDomain || !pt.nestParent || pt.domain.unit.vendor !== device.unit.vendor) return err("EINVAL", "parent is not a nest parent of this driver");
      nested = device.unit.domainAllocNested(device, pt.domain, driverFlags, args.data!);
    } else if (pt instanceof Viommu) {
      if (pt.unit !== device.unit) return err("EINVAL", "device is behind another IOMMU than the vIOMMU");
      if ((flags & ~NESTED_ALLOC_FLAGS) !== 0 || dataLen === 0 || pt.ops.allocDomainNested === undefined) {
        return err("EOPNOTSUPP", "nested HWPT on this vIOMMU not supported with these arguments");
      }
      nested = pt.ops.allocDomainNested(device, driverFlags, args.data!);
    } else return err("EINVAL", `pt_id ${args.ptId} is a ${pt.type}`);
    return nested.ok ? ok(new HwptNested(pt, nested.value, undefined, pasidCompat)) : fail(nested);
  }

  /**
   * IOMMU_HWPT_INVALIDATE on a nested HWPT or a vIOMMU. `handled` is always reported: the entries fully
   * handled before a failure, 0 when validation failed before any.
   */
  hwptInvalidate(args: HwptInvalidateArgs): { handled: number; result: Result<void> } {
    const early = (r: Result<void>): { handled: number; result: Result<void> } => ({ handled: 0, result: r });
    if (args.entryNum !== 0 && (args.entries === undefined || args.entryLen === 0)) return early(err("EINVAL", "entries without a buffer or entry length"));
    if (args.entryNum > INVALIDATE_ENTRY_NUM_MAX || args.entryLen > INVALIDATE_ENTRY_LEN_MAX) return early(err("EINVAL", "entry_num or entry_len above the limit"));
    const target = this.objects.get(args.hwptId);
    if (!target.ok) return early(fail(target));
    const array = { type: args.dataType, entryLen: args.entryLen, entryNum: args.entryNum, bytes: args.entries ?? new Uint8Array(0) };
    if (target.value instanceof HwptNested) {
      const op = target.value.domain.cacheInvalidateUser;
      if (op === undefined) return early(err("EOPNOTSUPP", "nested domain has no user invalidation"));
      return op.call(target.value.domain, array);
    }
    if (target.value instanceof Viommu) {
      const op = target.value.ops.cacheInvalidate;
      if (op === undefined) return early(err("EOPNOTSUPP", "vIOMMU has no cache invalidation"));
      return op.call(target.value.ops, array);
    }
    return early(err("EINVAL", `${target.value.type} cannot be invalidated`));
  }

  /**
   * IOMMU_HWPT_SET_DIRTY_TRACKING: EOPNOTSUPP for unknown flags or a domain without dirty tracking, ENOENT for
   * anything but a paging HWPT (hw_pagetable.c).
   */
  hwptSetDirtyTracking(hwptId: number, flags: number): Result<void> {
    if ((flags & ~DIRTY_TRACKING_ENABLE) !== 0) return err("EOPNOTSUPP", `unknown dirty-tracking flags 0x${flags.toString(16)}`);
    const hwpt = this.objects.get<HwptPaging>(hwptId, IommufdObjectType.HWPT_PAGING);
    if (!hwpt.ok) return fail(hwpt);
    const ops = hwpt.value.domain.dirtyOps;
    if (ops === undefined) return err("EOPNOTSUPP", "the domain was not allocated for dirty tracking");
    return ops.setDirtyTracking((flags & DIRTY_TRACKING_ENABLE) !== 0);
  }

  /**
   * IOMMU_HWPT_GET_DIRTY_BITMAP: sets bit i of `bitmap` when the page [iova + i·pageSize, +pageSize) was written
   * (bits already set stay set: userspace zeroes the bitmap), clearing the dirty state unless NO_CLEAR. The range
   * is checked as iommufd_check_iova_range does (EOVERFLOW, then EINVAL for a range not aligned to the IOAS's
   * alignment or to the page size, or a zero page size) before the domain is asked (EOPNOTSUPP without dirty
   * tracking). Only mapped areas are read.
   */
  hwptGetDirtyBitmap(args: DirtyBitmapArgs): Result<void> {
    if ((args.flags & ~DIRTY_BITMAP_NO_CLEAR) !== 0) return err("EOPNOTSUPP", `unknown dirty-bitmap flags 0x${args.flags.toString(16)}`);
    const hwpt = this.objects.get<HwptPaging>(args.hwptId, IommufdObjectType.HWPT_PAGING);
    if (!hwpt.ok) return fail(hwpt);
    const iova = BigInt(args.iova);
    const length = BigInt(args.length);
    const pageSize = BigInt(args.pageSize);
    const last = iova + length - 1n;
    if (length === 0n || last > U64_MAX || iova >= BigInt(ADDRESS_LIMIT) || last >= BigInt(ADDRESS_LIMIT)) return err("EOVERFLOW", "iova + length overflows");
    const align = BigInt(hwpt.value.ioas.iovaAlignment);
    if (iova % align !== 0n || (last + 1n) % align !== 0n) return err("EINVAL", "range not aligned to the IOAS's page");
    if (pageSize === 0n) return err("EINVAL", "page_size is 0");
    if ((iova & (pageSize - 1n)) !== 0n || ((last + 1n) & (pageSize - 1n)) !== 0n) return err("EINVAL", "range not aligned to page_size");
    const ops = hwpt.value.domain.dirtyOps;
    if (ops === undefined) return err("EOPNOTSUPP", "the domain was not allocated for dirty tracking");
    const bits = (length + pageSize - 1n) / pageSize;
    const bytes = Number(((bits + 63n) / 64n) * 8n);
    const bitmap = args.bitmap(bytes);
    if (bitmap === undefined) return err("EFAULT", "the bitmap is not in user memory");
    const start = Number(iova);
    const end = Number(last) + 1;
    const page = Number(pageSize);
    const record = (at: number, len: number): void => {
      for (let p = Math.floor((at - start) / page); p * page + start < at + len && p < Number(bits); p++) bitmap[p >> 3]! |= 1 << (p & 7);
    };
    for (const area of hwpt.value.ioas.areas) {
      const from = Math.max(area.iova, start);
      const to = Math.min(area.iova + area.length, end);
      if (from >= to) continue;
      const r = ops.readAndClearDirty(from, to - from, (args.flags & DIRTY_BITMAP_NO_CLEAR) !== 0, record);
      if (!r.ok) return r;
    }
    return ok();
  }

  // ---- vIOMMU ----

  /** IOMMU_VIOMMU_ALLOC: size-check, then init, in the kernel's order. */
  viommuAlloc(args: ViommuAllocArgs): Result<number> {
    if (args.flags !== 0 || args.type === IOMMU_VIOMMU_TYPE_DEFAULT) return err("EOPNOTSUPP", "flags must be 0 and type not DEFAULT");
    const d = this.objects.get<BoundDevice>(args.devId, IommufdObjectType.DEVICE);
    if (!d.ok) return fail(d);
    const unit = d.value.device.unit;
    if (unit.getViommuSize === undefined || unit.viommuInit === undefined) return err("EOPNOTSUPP", `${unit.name} cannot host a vIOMMU`);
    const size = unit.getViommuSize(d.value.device, args.type);
    if (size === 0) return err("EOPNOTSUPP", `${unit.name} does not support vIOMMU type ${args.type}`);
    if (size < CORE_VIOMMU_SIZE) return err("EOPNOTSUPP", "driver vIOMMU size smaller than the core's");
    const parent = this.objects.get<HwptPaging>(args.hwptId, IommufdObjectType.HWPT_PAGING);
    if (!parent.ok) return fail(parent);
    if (!parent.value.nestParent) return err("EINVAL", "HWPT is not a nesting parent");
    const id = this.objects.reserve();
    if (!id.ok) return fail(id);
    const viommu = new Viommu(args.type, unit, parent.value, this.owner, this.mmaps);
    viommu.id = id.value;
    const data = args.data !== undefined && args.data.bytes.length > 0 ? { type: args.type, bytes: args.data.bytes } : undefined;
    const ops = unit.viommuInit(viommu, parent.value.domain, data);
    if (!ops.ok) {
      viommu.release();
      this.objects.abort(id.value);
      return fail(ops);
    }
    viommu.ops = ops.value;
    return ok(this.objects.finalize(id.value, viommu).id);
  }

  /** IOMMU_VDEVICE_ALLOC. */
  vdeviceAlloc(args: VdeviceAllocArgs): Result<number> {
    if (!Number.isSafeInteger(args.virtId) || args.virtId < 0) return err("EINVAL", "virt_id out of range");
    const v = this.objects.get<Viommu>(args.viommuId, IommufdObjectType.VIOMMU);
    if (!v.ok) return fail(v);
    const d = this.objects.get<BoundDevice>(args.devId, IommufdObjectType.DEVICE);
    if (!d.ok) return fail(d);
    const viommu = v.value;
    const idev = d.value;
    if (idev.device.unit !== viommu.unit) return err("EINVAL", "device is behind another IOMMU than the vIOMMU");
    if (idev.dying) return err("ENOENT", "device is being unbound");
    if (idev.vdevice !== undefined) return err("EEXIST", "device already has a vDEVICE");
    if (viommu.ops.vdeviceSize !== undefined && viommu.ops.vdeviceSize !== 0 && viommu.ops.vdeviceSize < CORE_VDEVICE_SIZE) {
      return err("EOPNOTSUPP", "driver vDEVICE size smaller than the core's");
    }
    if (viommu.vdevs.has(args.virtId)) return err("EEXIST", `virt_id ${args.virtId} already used on this vIOMMU`);
    const id = this.objects.reserve();
    if (!id.ok) return fail(id);
    const vdev = new Vdevice(viommu, idev, args.virtId);
    vdev.id = id.value;
    // Published (in the vIOMMU's virt_id map and on the device) only once the driver's init succeeded, as
    // Linux does since 2026: nothing can find a vDEVICE whose hardware state was never programmed.
    const init = viommu.ops.vdeviceInit?.(vdev) ?? ok();
    if (!init.ok) {
      vdev.release();
      this.objects.abort(id.value);
      return fail(init);
    }
    viommu.vdevs.set(args.virtId, vdev);
    idev.vdevice = vdev;
    return ok(this.objects.finalize(id.value, vdev).id);
  }

  /** IOMMU_HW_QUEUE_ALLOC: pins the queue memory in the parent's IOAS and checks it is physically contiguous. */
  hwQueueAlloc(args: HwQueueAllocArgs): Result<number> {
    if (args.flags !== 0 || args.type === IOMMU_HW_QUEUE_TYPE_DEFAULT) return err("EOPNOTSUPP", "flags must be 0 and type not DEFAULT");
    if (BigInt(args.length) === 0n) return err("EINVAL", "zero length");
    if (BigInt(args.nestingParentIova) + BigInt(args.length) - 1n > U64_MAX) return err("EOVERFLOW", "queue range overflows");
    const v = this.objects.get<Viommu>(args.viommuId, IommufdObjectType.VIOMMU);
    if (!v.ok) return fail(v);
    const viommu = v.value;
    const ops = viommu.ops;
    if (ops.getHwQueueSize === undefined || ops.hwQueueInitPhys === undefined) return err("EOPNOTSUPP", "vIOMMU has no HW queues");
    const size = ops.getHwQueueSize(args.type);
    if (size === 0) return err("EOPNOTSUPP", `HW queue type ${args.type} unsupported`);
    if (size < CORE_HW_QUEUE_SIZE) return err("EOPNOTSUPP", "driver HW queue size smaller than the core's");
    const iova = asSafe(args.nestingParentIova);
    const length = asSafe(args.length);
    if (iova === undefined || length === undefined) return err("ENOENT", "queue range not mapped");
    const ioas = viommu.parentHwpt.ioas;
    const areas = ioas.areasCovering(iova, length);
    if (areas === undefined) return err("ENOENT", "queue range not fully mapped in the IOAS");
    if (iova + length > ADDRESS_LIMIT) return err("ERANGE", "page offset arithmetic overflows");
    const basePa = this.contiguousBase(ioas, iova, length);
    if (basePa === undefined) return err("EFAULT", "queue memory is not physically contiguous");
    const id = this.objects.reserve();
    if (!id.ok) return fail(id);
    const queue = new HwQueue(viommu, args.type, args.index, iova, length, ioas, areas);
    queue.id = id.value;
    const init = ops.hwQueueInitPhys(queue, args.index, basePa);
    if (!init.ok) {
      queue.release();
      this.objects.abort(id.value);
      return fail(init);
    }
    let byType = viommu.hwQueues.get(args.type);
    if (byType === undefined) {
      byType = new Map();
      viommu.hwQueues.set(args.type, byType);
    }
    byType.set(args.index, queue);
    return ok(this.objects.finalize(id.value, queue).id);
  }

  /** The host address of the first byte when [iova, iova + length) is pinned contiguously, else undefined. */
  private contiguousBase(ioas: Ioas, iova: number, length: number): number | undefined {
    let base: number | undefined;
    for (let off = 0; off < length; off += off === 0 ? PAGE_SIZE - (iova % PAGE_SIZE) : PAGE_SIZE) {
      const where = ioas.gpaOf(iova + off);
      if (where === undefined) return undefined;
      const hpa = where.memory.pin(where.gpa);
      if (hpa === undefined) return undefined;
      if (base === undefined) base = hpa;
      else if (hpa !== base + off) return undefined;
    }
    return base;
  }

  /** IOMMU_VEVENTQ_ALLOC: returns the object id and its file. */
  veventqAlloc(args: VeventqAllocArgs): Result<{ id: number; file: VeventqFile }> {
    if (args.flags !== 0 || args.type === IOMMU_VEVENTQ_TYPE_DEFAULT) return err("EOPNOTSUPP", "flags must be 0 and type not DEFAULT");
    if (!Number.isSafeInteger(args.depth) || args.depth <= 0 || args.depth > VEVENTQ_DEPTH_MAX) return err("EINVAL", `depth ${args.depth} out of range`);
    const v = this.objects.get<Viommu>(args.viommuId, IommufdObjectType.VIOMMU);
    if (!v.ok) return fail(v);
    const viommu = v.value;
    if (viommu.veventqs.has(args.type)) return err("EEXIST", `vIOMMU already has a vEVENTQ of type ${args.type}`);
    const queue = new Veventq(viommu, args.type, args.depth, () => viommu.veventqs.delete(args.type));
    const added = this.objects.add(queue);
    if (!added.ok) {
      queue.release();
      return fail(added);
    }
    viommu.veventqs.set(args.type, queue);
    return ok({ id: queue.id, file: new VeventqFile(queue) });
  }

  /** IOMMU_FAULT_QUEUE_ALLOC. */
  faultQueueAlloc(flags: number): Result<{ id: number; file: FaultQueueFile }> {
    if (flags !== 0) return err("EOPNOTSUPP", "flags must be 0");
    const added = this.objects.add(new FaultQueue());
    if (!added.ok) return fail(added);
    return ok({ id: added.value.id, file: new FaultQueueFile(added.value) });
  }

  /** IOMMU_GET_HW_INFO. */
  getHwInfo(args: GetHwInfoArgs): Result<GetHwInfoReply> {
    if ((args.flags & ~IOMMU_HW_INFO_FLAG_INPUT_TYPE) !== 0) return err("EOPNOTSUPP", "unknown flags");
    const d = this.objects.get<BoundDevice>(args.devId, IommufdObjectType.DEVICE);
    if (!d.ok) return fail(d);
    const requested = args.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE ? args.inDataType : undefined;
    const info = d.value.device.unit.hwInfo(d.value.device, requested);
    if (!info.ok) return fail(info);
    // out_max_pasid_log2 is the device's PASID width as the IOMMU can serve it (dev->iommu->max_pasids): 0 for a
    // device without the PASID capability, whatever the unit supports.
    const device = d.value.device;
    return ok(hwInfoReply({ ...info.value, maxPasidLog2: Math.min(info.value.maxPasidLog2, device.pasidBits) }, args.dataLen));
  }

  /** IOMMU_DESTROY. Device ids answer EBUSY (the binding holds them). */
  destroy(id: number): Result<void> {
    return this.objects.destroy(id);
  }

  /** mmap() of a vIOMMU's MMIO region on the iommufd. */
  mmap(request: MmapRequest): Result<MmapHandle> {
    return this.mmaps.mmap(request);
  }

  /** Closing the iommufd: objects go leaf first; returns what could not be freed (a bug if anything). */
  close(): IommufdObject[] {
    if (this.closed) return [];
    this.closed = true;
    for (const o of this.objects.objects()) {
      if (o instanceof BoundDevice) this.unbindDevice(o.id);
    }
    return this.objects.sweep(() => false);
  }

  /** Objects by type, for tests and the CLI. */
  list(type?: IommufdObjectType): IommufdObject[] {
    return this.objects.objects().filter((o) => type === undefined || o.type === type);
  }

  viommu(id: number): Result<Viommu> {
    return this.objects.get<Viommu>(id, IommufdObjectType.VIOMMU);
  }
}

function hwInfoReply(info: HwInfo, userLen: number): GetHwInfoReply {
  const data = new Uint8Array(Math.max(0, userLen));
  data.set(info.data.subarray(0, Math.min(userLen, info.data.length)));
  return { outDataType: info.type, dataLen: info.data.length, data, maxPasidLog2: info.maxPasidLog2, capabilities: info.capabilities };
}
