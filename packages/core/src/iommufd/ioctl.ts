import { err, fail, ok, type Result } from "../errors/errno.js";
import type { IommufdContext, MapSource } from "./context.js";
import type { UserMemory } from "./user-memory.js";
import type { FaultQueueFile } from "./fault-queue.js";
import type { VeventqFile } from "./veventq.js";

/** iommufd ioctl numbers: `_IO(';', 0x80 + n)`; here the `nr` byte alone. */
export const IommufdIoctl = {
  DESTROY: 0x80,
  IOAS_ALLOC: 0x81,
  IOAS_ALLOW_IOVAS: 0x82,
  IOAS_COPY: 0x83,
  IOAS_IOVA_RANGES: 0x84,
  IOAS_MAP: 0x85,
  IOAS_UNMAP: 0x86,
  OPTION: 0x87,
  VFIO_IOAS: 0x88,
  HWPT_ALLOC: 0x89,
  GET_HW_INFO: 0x8a,
  HWPT_SET_DIRTY_TRACKING: 0x8b,
  HWPT_GET_DIRTY_BITMAP: 0x8c,
  HWPT_INVALIDATE: 0x8d,
  FAULT_QUEUE_ALLOC: 0x8e,
  IOAS_MAP_FILE: 0x8f,
  VIOMMU_ALLOC: 0x90,
  VDEVICE_ALLOC: 0x91,
  IOAS_CHANGE_PROCESS: 0x92,
  VEVENTQ_ALLOC: 0x93,
  HW_QUEUE_ALLOC: 0x94,
} as const;

/** Per command: the kernel's struct size and its minimum (offsetofend of the last field old userspace knows). */
const STRUCT_SIZES: Readonly<Record<number, readonly [min: number, size: number]>> = {
  [IommufdIoctl.DESTROY]: [8, 8],
  [IommufdIoctl.IOAS_ALLOC]: [12, 12],
  [IommufdIoctl.IOAS_ALLOW_IOVAS]: [24, 24],
  [IommufdIoctl.IOAS_COPY]: [40, 40],
  [IommufdIoctl.IOAS_IOVA_RANGES]: [32, 32],
  [IommufdIoctl.IOAS_MAP]: [40, 40],
  [IommufdIoctl.IOAS_UNMAP]: [24, 24],
  [IommufdIoctl.OPTION]: [24, 24],
  [IommufdIoctl.VFIO_IOAS]: [12, 12],
  [IommufdIoctl.HWPT_ALLOC]: [24, 48],
  [IommufdIoctl.GET_HW_INFO]: [32, 40],
  [IommufdIoctl.HWPT_SET_DIRTY_TRACKING]: [16, 16],
  [IommufdIoctl.HWPT_GET_DIRTY_BITMAP]: [48, 48],
  [IommufdIoctl.HWPT_INVALIDATE]: [32, 32],
  [IommufdIoctl.FAULT_QUEUE_ALLOC]: [16, 16],
  [IommufdIoctl.IOAS_MAP_FILE]: [40, 40],
  [IommufdIoctl.IOAS_CHANGE_PROCESS]: [8, 8],
  [IommufdIoctl.VIOMMU_ALLOC]: [24, 40],
  [IommufdIoctl.VDEVICE_ALLOC]: [24, 24],
  [IommufdIoctl.VEVENTQ_ALLOC]: [32, 32],
  [IommufdIoctl.HW_QUEUE_ALLOC]: [40, 40],
};

/** IOMMU_IOAS_MAP_FIXED_IOVA | WRITEABLE | READABLE. */
const MAP_FLAGS = 0b111;

/** An open file an ioctl created (vEVENTQ, fault queue), by the fd number it returned. */
export type IoctlFile = VeventqFile | FaultQueueFile;

/**
 * The raw ioctl face of an iommufd: each call takes the user's struct bytes exactly as `include/uapi/linux/
 * iommufd.h` lays them out (little-endian), validates the header the way the kernel's dispatcher does
 * (EINVAL below the minimum size, E2BIG for a longer struct with a nonzero tail, a shorter one zero-extended),
 * runs the command on the typed context, and writes the outputs back into the user's bytes (truncated to
 * the user's size). Pointers inside structs resolve through `UserMemory`.
 */
export class IommufdIoctls {
  readonly files = new Map<number, IoctlFile>();
  private nextFd = 3;

  constructor(
    readonly ctx: IommufdContext,
    readonly user: UserMemory,
  ) {}

  ioctl(nr: number, arg: Uint8Array): Result<void> {
    const sizes = STRUCT_SIZES[nr];
    if (sizes === undefined) return err("ENOTTY", `ioctl nr 0x${nr.toString(16)} is not an iommufd command`);
    if (arg.length < 4) return err("EFAULT", "cannot read the size field");
    const view = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
    const userSize = view.getUint32(0, true);
    if (userSize > arg.length) return err("EFAULT", "size field beyond the user buffer");
    const [min, size] = sizes;
    if (userSize < min) return err("EINVAL", `size ${userSize} below the minimum ${min}`);
    if (userSize > size && arg.subarray(size, userSize).some((b) => b !== 0)) return err("E2BIG", `struct larger than ${size} bytes with a nonzero tail`);
    // The kernel's copy: the user's bytes, zero-extended to its own struct size.
    const k = new Uint8Array(size);
    k.set(arg.subarray(0, Math.min(userSize, size)));
    const kv = new DataView(k.buffer);
    const r = this.dispatch(nr, kv);
    // Outputs go back truncated to the user's size, on success and (for invalidation's entry_num) on failure.
    arg.set(k.subarray(0, Math.min(userSize, size)));
    return r;
  }

  private u64(v: DataView, at: number): number | bigint {
    const x = v.getBigUint64(at, true);
    return x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
  }

  private dispatch(nr: number, v: DataView): Result<void> {
    const u32 = (at: number): number => v.getUint32(at, true);
    const put32 = (at: number, value: number): void => v.setUint32(at, value >>> 0, true);
    switch (nr) {
      case IommufdIoctl.DESTROY:
        return this.ctx.destroy(u32(4));
      case IommufdIoctl.IOAS_ALLOC: {
        if (u32(4) !== 0) return err("EOPNOTSUPP", "flags must be 0");
        const id = this.ctx.ioasAlloc();
        if (!id.ok) return fail(id);
        put32(8, id.value);
        return ok();
      }
      case IommufdIoctl.IOAS_MAP: {
        // ioas.c: unknown flags and __reserved first, then sizes; the user pointer only where pages are pinned.
        const flags = u32(4);
        if ((flags & ~MAP_FLAGS) !== 0 || u32(12) !== 0) return err("EOPNOTSUPP", "unknown flags or __reserved set");
        const userVa = this.u64(v, 16);
        const length = this.u64(v, 24);
        const iova = this.u64(v, 32);
        if (typeof length === "bigint" || typeof iova === "bigint") return err("EOVERFLOW", "value beyond the address range");
        const resolve = (): MapSource | undefined => (typeof userVa === "bigint" ? undefined : this.user.guestAt(userVa, Math.max(length, 1)));
        const r = this.ctx.ioasMap({ ioasId: u32(8), flags, resolve, length, iova });
        if (!r.ok) return fail(r);
        v.setBigUint64(32, BigInt(r.value), true);
        return ok();
      }
      case IommufdIoctl.IOAS_MAP_FILE: {
        const flags = u32(4);
        if ((flags & ~MAP_FLAGS) !== 0) return err("EOPNOTSUPP", "unknown flags");
        const fd = v.getInt32(12, true);
        const start = this.u64(v, 16);
        const length = this.u64(v, 24);
        const iova = this.u64(v, 32);
        if (typeof length === "bigint" || typeof iova === "bigint") return err("EOVERFLOW", "value beyond the address range");
        if ((flags & (MAP_FLAGS & ~1)) === 0) return err("EINVAL", "mapping neither readable nor writeable");
        const ioas = this.ctx.objects.get(u32(8), "IOAS");
        if (!ioas.ok) return fail(ioas);
        if (!this.user.hasFile(fd)) return err("EBADF", `fd ${fd} is not open`);
        const resolve = (): MapSource | undefined => (typeof start === "bigint" ? undefined : this.user.fileAt(fd, start, length));
        const r = this.ctx.ioasMap({ ioasId: u32(8), flags, resolve, length, iova, fromFile: true });
        if (!r.ok) return fail(r);
        v.setBigUint64(32, BigInt(r.value), true);
        return ok();
      }
      case IommufdIoctl.IOAS_IOVA_RANGES: {
        if (u32(12) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        const r = this.ctx.ioasIovaRanges(u32(4));
        if (!r.ok) return fail(r);
        const max = u32(8);
        const uptr = Number(v.getBigUint64(16, true));
        for (let i = 0; i < Math.min(max, r.value.ranges.length); i++) {
          const out = this.user.view(uptr + i * 16, 16);
          if (out === undefined) return err("EFAULT", "allowed_iovas");
          const ov = new DataView(out.buffer, out.byteOffset, 16);
          ov.setBigUint64(0, r.value.ranges[i]!.start, true);
          ov.setBigUint64(8, r.value.ranges[i]!.last, true);
        }
        put32(8, r.value.ranges.length);
        v.setBigUint64(24, BigInt(r.value.alignment), true);
        // num_iovas and the alignment reach the user even when the array was too small.
        return r.value.ranges.length > max ? err("EMSGSIZE", `${r.value.ranges.length} ranges, room for ${max}`) : ok();
      }
      case IommufdIoctl.IOAS_ALLOW_IOVAS: {
        if (u32(12) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        const ioas = this.ctx.objects.get(u32(4), "IOAS");
        if (!ioas.ok) return fail(ioas);
        const num = u32(8);
        const uptr = Number(v.getBigUint64(16, true));
        const ranges: { start: bigint; last: bigint }[] = [];
        for (let i = 0; i < num; i++) {
          const bytes = this.user.view(uptr + i * 16, 16);
          if (bytes === undefined) return err("EFAULT", "allowed_iovas");
          const rv = new DataView(bytes.buffer, bytes.byteOffset, 16);
          const range = { start: rv.getBigUint64(0, true), last: rv.getBigUint64(8, true) };
          // iommufd_ioas_load_iovas checks each range as it reads it.
          if (range.start >= range.last || ranges.some((x) => x.start <= range.last && range.start <= x.last)) return err("EINVAL", `allowed_iovas[${i}] is empty, reversed or overlapping`);
          ranges.push(range);
        }
        return this.ctx.ioasAllowIovas(u32(4), ranges);
      }
      case IommufdIoctl.IOAS_COPY: {
        const r = this.ctx.ioasCopy({ flags: u32(4), dstIoasId: u32(8), srcIoasId: u32(12), length: v.getBigUint64(16, true), dstIova: v.getBigUint64(24, true), srcIova: v.getBigUint64(32, true) });
        if (!r.ok) return fail(r);
        v.setBigUint64(24, BigInt(r.value), true);
        return ok();
      }
      case IommufdIoctl.OPTION: {
        if (v.getUint16(10, true) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        const r = this.ctx.option({ optionId: u32(4), op: v.getUint16(8, true), objectId: u32(12), val64: v.getBigUint64(16, true) });
        if (!r.ok) return fail(r);
        v.setBigUint64(16, r.value, true);
        return ok();
      }
      case IommufdIoctl.VFIO_IOAS: {
        if (v.getUint16(10, true) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        const op = v.getUint16(8, true);
        const r = this.ctx.vfioIoas(op, u32(4));
        if (!r.ok) return fail(r);
        if (op === 0) put32(4, r.value);
        return ok();
      }
      case IommufdIoctl.IOAS_CHANGE_PROCESS: {
        if (u32(4) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        return this.ctx.ioasChangeProcess();
      }
      case IommufdIoctl.IOAS_UNMAP: {
        const r = this.ctx.ioasUnmap({ ioasId: u32(4), iova: v.getBigUint64(8, true), length: v.getBigUint64(16, true) });
        if (!r.ok) return fail(r);
        v.setBigUint64(16, BigInt(r.value), true);
        return ok();
      }
      case IommufdIoctl.HWPT_ALLOC: {
        if (u32(20) !== 0 || u32(44) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        const dataType = u32(24);
        const dataLen = u32(28);
        let data: { type: number; bytes: Uint8Array } | undefined;
        if (dataLen !== 0) {
          const bytes = this.user.view(Number(v.getBigUint64(32, true)), dataLen);
          if (bytes === undefined) return err("EFAULT", "data_uptr");
          data = { type: dataType, bytes: bytes.slice() };
        } else if (dataType !== 0) data = { type: dataType, bytes: new Uint8Array(0) };
        const r = this.ctx.hwptAlloc({ flags: u32(4), devId: u32(8), ptId: u32(12), data, faultId: u32(40) });
        if (!r.ok) return fail(r);
        put32(16, r.value);
        return ok();
      }
      case IommufdIoctl.GET_HW_INFO: {
        if (v.getUint8(29) !== 0 || v.getUint8(30) !== 0 || v.getUint8(31) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        const dataLen = u32(12);
        const target = dataLen === 0 ? new Uint8Array(0) : this.user.view(Number(v.getBigUint64(16, true)), dataLen);
        if (target === undefined) return err("EFAULT", "data_uptr");
        const r = this.ctx.getHwInfo({ flags: u32(4), devId: u32(8), dataLen, inDataType: u32(24) });
        if (!r.ok) return fail(r);
        target.set(r.value.data.subarray(0, target.length));
        put32(12, r.value.dataLen);
        put32(24, r.value.outDataType);
        v.setUint8(28, r.value.maxPasidLog2);
        v.setBigUint64(32, BigInt(r.value.capabilities), true);
        return ok();
      }
      case IommufdIoctl.HWPT_SET_DIRTY_TRACKING: {
        if (u32(12) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        return this.ctx.hwptSetDirtyTracking(u32(8), u32(4));
      }
      case IommufdIoctl.HWPT_GET_DIRTY_BITMAP: {
        if (u32(12) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        const data = v.getBigUint64(40, true);
        return this.ctx.hwptGetDirtyBitmap({
          hwptId: u32(4),
          flags: u32(8),
          iova: v.getBigUint64(16, true),
          length: v.getBigUint64(24, true),
          pageSize: v.getBigUint64(32, true),
          bitmap: (bytes) => (data > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : this.user.view(Number(data), bytes)),
        });
      }
      case IommufdIoctl.HWPT_INVALIDATE: {
        // entry_num always goes back to the user: 0 on every path that handled nothing (hw_pagetable.c).
        if (u32(28) !== 0) {
          put32(24, 0);
          return err("EOPNOTSUPP", "__reserved must be 0");
        }
        const entryLen = u32(20);
        const entryNum = u32(24);
        const uptr = Number(v.getBigUint64(8, true));
        let entries: Uint8Array | undefined;
        if (uptr !== 0 && entryNum !== 0) {
          entries = this.user.view(uptr, entryLen * entryNum);
          if (entries === undefined) {
            put32(24, 0);
            return err("EFAULT", "data_uptr");
          }
        }
        const r = this.ctx.hwptInvalidate({ hwptId: u32(4), dataType: u32(16), entryLen, entryNum, entries });
        put32(24, r.handled);
        return r.result;
      }
      case IommufdIoctl.FAULT_QUEUE_ALLOC: {
        const r = this.ctx.faultQueueAlloc(u32(4));
        if (!r.ok) return fail(r);
        put32(8, r.value.id);
        put32(12, this.install(r.value.file));
        return ok();
      }
      case IommufdIoctl.VIOMMU_ALLOC: {
        if (u32(28) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        const dataLen = u32(24);
        let data: { type: number; bytes: Uint8Array } | undefined;
        if (dataLen !== 0) {
          const bytes = this.user.view(Number(v.getBigUint64(32, true)), dataLen);
          if (bytes === undefined) return err("EFAULT", "data_uptr");
          // Live view: drivers write outputs (mmap offsets) back into the user's data.
          data = { type: u32(8), bytes };
        }
        const r = this.ctx.viommuAlloc({ flags: u32(4), type: u32(8), devId: u32(12), hwptId: u32(16), data });
        if (!r.ok) return fail(r);
        put32(20, r.value);
        return ok();
      }
      case IommufdIoctl.VDEVICE_ALLOC: {
        const virt = this.u64(v, 16);
        if (typeof virt === "bigint") return err("EINVAL", "virt_id out of range");
        const r = this.ctx.vdeviceAlloc({ viommuId: u32(4), devId: u32(8), virtId: virt });
        if (!r.ok) return fail(r);
        put32(12, r.value);
        return ok();
      }
      case IommufdIoctl.VEVENTQ_ALLOC: {
        if (u32(28) !== 0) return err("EOPNOTSUPP", "__reserved must be 0");
        const r = this.ctx.veventqAlloc({ flags: u32(4), viommuId: u32(8), type: u32(12), depth: u32(16) });
        if (!r.ok) return fail(r);
        put32(20, r.value.id);
        put32(24, this.install(r.value.file));
        return ok();
      }
      case IommufdIoctl.HW_QUEUE_ALLOC: {
        const r = this.ctx.hwQueueAlloc({ flags: u32(4), viommuId: u32(8), type: u32(12), index: u32(16), nestingParentIova: v.getBigUint64(24, true), length: v.getBigUint64(32, true) });
        if (!r.ok) return fail(r);
        put32(20, r.value);
        return ok();
      }
      default:
        return err("ENOTTY", "unknown command");
    }
  }

  private install(file: IoctlFile): number {
    const fd = this.nextFd++;
    this.files.set(fd, file);
    return fd;
  }

  /** close(fd) on a file an ioctl returned. */
  close(fd: number): Result<void> {
    const f = this.files.get(fd);
    if (f === undefined) return err("EINVAL", `fd ${fd} is not open`);
    f.close();
    this.files.delete(fd);
    return ok();
  }
}
