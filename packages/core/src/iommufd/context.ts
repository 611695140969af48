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
import { HwptNested, HwptPaging, type Hwpt } from "./hwpt.js";
import { Ioas, mapAreaInto, permsFromMapFlags } from "./ioas.js";
import { MmapTable, type MmapRequest, type MmapHandle } from "./mmap.js";
import { drop, hold, ObjectTable, type IommufdObject } from "./object-table.js";
import {
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

export interface IoasMapArgs {
  readonly ioasId: number;
  readonly flags: number;
  /** The source: guest RAM from `gpa` (the VMM's mapping of guest memory). */
  readonly memory: GuestMemory;
  readonly gpa: number;
  readonly length: number;
  /** Used with FIXED_IOVA. */
  readonly iova?: number;
}

export interface IoasUnmapArgs {
  readonly ioasId: number;
  readonly iova: number | bigint;
  readonly length: number | bigint;
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

  /** @param owner the VM whose memory this context maps and whose devices it binds */
  constructor(readonly owner: OwnerId) {}

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
   * VFIO_DEVICE_ATTACH_IOMMUFD_PT: attaches a device (or a PASID of it) to a HWPT, or to an IOAS through an
   * automatically created paging HWPT. Replaces an existing attachment.
   */
  attach(devId: number, ptId: number, pasid = NO_PASID): Result<number> {
    const d = this.objects.get<BoundDevice>(devId, IommufdObjectType.DEVICE);
    if (!d.ok) return fail(d);
    const idev = d.value;
    const pt = this.objects.get(ptId, IommufdObjectType.IOAS, IommufdObjectType.HWPT_PAGING, IommufdObjectType.HWPT_NESTED);
    if (!pt.ok) return fail(pt);
    let hwpt: Hwpt;
    if (pt.value instanceof Ioas) {
      const auto = this.autoHwpt(idev, pt.value);
      if (!auto.ok) return fail(auto);
      hwpt = auto.value;
    } else hwpt = pt.value as Hwpt;
    // Whether a domain of another unit of the same driver can take the device is the driver's call.
    if (hwpt.domain.unit.vendor !== idev.device.unit.vendor) return err("EINVAL", "HWPT belongs to another IOMMU driver");
    const r = idev.device.unit.attachDevice(idev.device, hwpt.domain as IommuDomain, pasid);
    if (!r.ok) return fail(r);
    const previous = idev.attachments.get(pasid);
    if (previous) this.releaseAttachment(idev, previous);
    hold(hwpt);
    idev.attachments.set(pasid, hwpt);
    return ok(hwpt.id);
  }

  private autoHwpt(idev: BoundDevice, ioas: Ioas): Result<HwptPaging> {
    for (const o of this.objects.objects()) {
      if (o instanceof HwptPaging && o.autoDomain && o.ioas === ioas && o.domain.unit === idev.device.unit) return ok(o);
    }
    const id = this.objects.reserve();
    if (!id.ok) return fail(id);
    const domain = idev.device.unit.domainAllocPaging(idev.device, 0, this.owner);
    if (!domain.ok) {
      this.objects.abort(id.value);
      return fail(domain);
    }
    const filled = this.fillDomain(ioas, domain.value);
    if (!filled.ok) {
      domain.value.destroy();
      this.objects.abort(id.value);
      return fail(filled);
    }
    return ok(this.objects.finalize(id.value, new HwptPaging(ioas, domain.value, true, undefined)));
  }

  private releaseAttachment(idev: BoundDevice, hwpt: Hwpt): void {
    if (hwpt.fault) hwpt.fault.autoRespond(idev.id);
    drop(hwpt);
    // An automatically created HWPT lives only while devices use it.
    if (hwpt instanceof HwptPaging && hwpt.autoDomain && hwpt.users === 1) this.objects.remove(hwpt);
  }

  /** VFIO_DEVICE_DETACH_IOMMUFD_PT. */
  detach(devId: number, pasid = NO_PASID): Result<void> {
    const d = this.objects.get<BoundDevice>(devId, IommufdObjectType.DEVICE);
    if (!d.ok) return fail(d);
    const hwpt = d.value.attachments.get(pasid);
    if (hwpt === undefined) return err("ENOENT", "not attached");
    d.value.device.unit.detachDevice(d.value.device, pasid);
    d.value.attachments.delete(pasid);
    this.releaseAttachment(d.value, hwpt);
    return ok();
  }

  // ---- IOAS ----

  ioasAlloc(): Result<number> {
    const r = this.objects.add(new Ioas());
    return r.ok ? ok(r.value.id) : fail(r);
  }

  /** IOMMU_IOAS_MAP. Returns the IOVA (chosen by the allocator unless FIXED_IOVA). */
  ioasMap(args: IoasMapArgs): Result<number> {
    const known = IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE;
    if ((args.flags & ~known) !== 0) return err("EOPNOTSUPP", `unknown map flags 0x${args.flags.toString(16)}`);
    if (asSafe(args.length) === undefined || (args.iova !== undefined && asSafe(args.iova) === undefined)) return err("EOVERFLOW", "iova or length too large");
    if ((args.flags & (IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE)) === 0) return err("EINVAL", "mapping neither readable nor writeable");
    const ioas = this.objects.get<Ioas>(args.ioasId, IommufdObjectType.IOAS);
    if (!ioas.ok) return fail(ioas);
    if (args.length === 0 || args.length % PAGE_SIZE !== 0 || args.gpa % PAGE_SIZE !== 0) return err("EINVAL", "length and source must be whole pages");
    let iova: number;
    if (args.flags & IoasMapFlag.FIXED_IOVA) {
      iova = args.iova ?? 0;
      if (iova % PAGE_SIZE !== 0) return err("EINVAL", "IOVA not page aligned");
      if (iova + args.length > ADDRESS_LIMIT) return err("EOVERFLOW", "IOVA range overflows");
    } else {
      const hole = ioas.value.findHole(args.length, ADDRESS_LIMIT);
      if (hole === undefined) return err("ENOSPC", "no free IOVA range");
      iova = hole;
    }
    if (args.memory.owner !== this.owner) return err("EFAULT", "source memory belongs to another VM");
    if (!args.memory.contains(args.gpa, args.length)) return err("EFAULT", "source range outside guest RAM");
    const perms = permsFromMapFlags((args.flags & IoasMapFlag.READABLE) !== 0, (args.flags & IoasMapFlag.WRITEABLE) !== 0);
    const r = ioas.value.addArea({ iova, length: args.length, memory: args.memory, gpa: args.gpa, perms, locks: 0 });
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

  /** Writes every existing area of the IOAS into a new paging domain (rolling back on failure). */
  private fillDomain(ioas: Ioas, domain: PagingDomain): Result<void> {
    const mapped: typeof ioas.areas = [];
    for (const area of ioas.areas) {
      const r = mapAreaInto(domain, area);
      if (!r.ok) {
        for (const a of mapped) domain.unmap(a.iova, a.length);
        return r;
      }
      mapped.push(area);
    }
    return ok();
  }

  // ---- HWPT ----

  /** IOMMU_HWPT_ALLOC: a paging HWPT on an IOAS, or a nested HWPT on a paging parent or a vIOMMU. */
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
    const built = this.buildDomain(args, d.value.device, pt.value, dataLen);
    if (!built.ok) {
      this.objects.abort(id.value);
      return fail(built);
    }
    // The fault queue is looked up only once the domain exists; a bad id aborts the new HWPT, leaking nothing.
    let fault: FaultQueue | undefined;
    if (args.flags & HwptAllocFlag.FAULT_ID_VALID) {
      const f = this.objects.get<FaultQueue>(args.faultId ?? 0, IommufdObjectType.FAULT);
      if (!f.ok) {
        built.value.domain.destroy();
        this.objects.abort(id.value);
        return fail(f);
      }
      fault = f.value;
    }
    const { domain, on } = built.value;
    const hwpt = domain.kind === "paging" ? new HwptPaging(on as Ioas, domain, false, fault) : new HwptNested(on as HwptPaging | Viommu, domain, fault);
    return ok(this.objects.finalize(id.value, hwpt).id);
  }

  private buildDomain(args: HwptAllocArgs, device: PhysicalDevice, pt: IommufdObject, dataLen: number): Result<{ domain: IommuDomain; on: Ioas | HwptPaging | Viommu }> {
    const flags = args.flags;
    if (pt instanceof Ioas) {
      if ((flags & HwptAllocFlag.FAULT_ID_VALID) && (flags & HwptAllocFlag.NEST_PARENT)) return err("EOPNOTSUPP", "a nest parent cannot take a fault queue");
      if (dataLen !== 0 || (flags & ~HWPT_ALLOC_FLAGS) !== 0) return err("EOPNOTSUPP", "paging HWPT takes no data and known flags only");
      const domain = device.unit.domainAllocPaging(device, flags & ~HwptAllocFlag.FAULT_ID_VALID, this.owner);
      if (!domain.ok) return fail(domain);
      const filled = this.fillDomain(pt, domain.value);
      if (!filled.ok) {
        domain.value.destroy();
        return fail(filled);
      }
      return ok({ domain: domain.value, on: pt });
    }
    let nested: Result<NestedDomain>;
    if (pt instanceof HwptPaging) {
      if ((flags & ~NESTED_ALLOC_FLAGS) !== 0 || dataLen === 0 || device.unit.domainAllocNested === undefined) {
        return err("EOPNOTSUPP", "nested HWPT on a paging parent not supported with these arguments");
      }
      if (pt.autoDomain || !pt.nestParent || pt.domain.unit.vendor !== device.unit.vendor) return err("EINVAL", "parent is not a nest parent of this driver");
      nested = device.unit.domainAllocNested(device, pt.domain, flags, args.data!);
    } else if (pt instanceof Viommu) {
      if (pt.unit !== device.unit) return err("EINVAL", "device is behind another IOMMU than the vIOMMU");
      if ((flags & ~NESTED_ALLOC_FLAGS) !== 0 || dataLen === 0 || pt.ops.allocDomainNested === undefined) {
        return err("EOPNOTSUPP", "nested HWPT on this vIOMMU not supported with these arguments");
      }
      nested = pt.ops.allocDomainNested(device, flags, args.data!);
    } else return err("EINVAL", `pt_id ${args.ptId} is a ${pt.type}`);
    return nested.ok ? ok({ domain: nested.value, on: pt }) : fail(nested);
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
    viommu.vdevs.set(args.virtId, vdev);
    idev.vdevice = vdev;
    const init = viommu.ops.vdeviceInit?.(vdev) ?? ok();
    if (!init.ok) {
      vdev.release();
      this.objects.abort(id.value);
      return fail(init);
    }
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
    return ok(hwInfoReply(info.value, args.dataLen));
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
