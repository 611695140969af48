import { describe, expect, it } from "vitest";
import {
  HwptAllocFlag,
  IoasMapFlag,
  IommufdContext,
  IommufdIoctl,
  IommufdIoctls,
  IommuOption,
  IommuOptionOp,
  Platform,
  TablePagingDomain,
  UserMemory,
  VfioIoasOp,
  errnoOf,
  unwrap,
  type DmaDevice,
  type PhysicalIommu,
  type Result,
  type WritableFormat,
} from "@viommu/core";
import { encodeMockS1, MOCK_HWPT_DATA_TYPE, MOCK_VIOMMU_TYPE } from "../src/format/uapi.js";
import { mockPlugin } from "../src/plugin.js";

/**
 * iommufd semantics as Linux has them (drivers/iommu/iommufd/device.c, hw_pagetable.c, ioas.c, main.c and
 * vfio_compat.c, read at their 2025–2026 versions): attach / replace / detach, PASID compatibility, fault-object
 * handling, hw_info's PASID width, and the IOAS ioctls VMMs use besides MAP and UNMAP.
 */

const RW = IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE;
const errno = (r: Result<unknown>) => errnoOf(r) ?? "ok";
const s1 = (root = 0x10_0000, asid = 1) => ({ type: MOCK_HWPT_DATA_TYPE, bytes: encodeMockS1({ s1Root: root, asid, flags: 0 }) });

function host() {
  const platform = new Platform({ plugins: [mockPlugin] });
  const unit = unwrap(platform.createUnit(mockPlugin.id));
  return { platform, unit };
}

/** A VM with RAM mapped at IOVA = GPA in an IOAS of its own iommufd, and one bound device. */
function vmWith(platform: Platform, unit: PhysicalIommu, rid: number, pasidBits = 0) {
  const vm = platform.createVm({ memoryBytes: 2 ** 26, backingPageShift: 12 });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, rid, `dev-${rid}`, pasidBits);
  const dev = unwrap(ctx.bindDevice(device));
  const ioas = unwrap(ctx.ioasAlloc());
  unwrap(ctx.ioasMap({ ioasId: ioas, flags: RW | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0, length: 2 ** 26, iova: 0 }));
  return { vm, ctx, device, dev, ioas };
}

function autoDomainOf(ctx: IommufdContext, hwptId: number): TablePagingDomain {
  const hwpt = unwrap(ctx.objects.get(hwptId)) as unknown as { domain: TablePagingDomain };
  return hwpt.domain;
}

describe("re-attaching to the address space a device is already attached to", () => {
  it("keeps the automatic HWPT, its domain and its VMID: another VM's domains never get that VMID and its DMA never reaches them", () => {
    const { platform, unit } = host();
    const a = vmWith(platform, unit, 0x10);
    const hwptId = unwrap(a.ctx.attach(a.dev, a.ioas));
    const domain = autoDomainOf(a.ctx, hwptId);
    a.vm.memory.writeBytes(0x5000, new Uint8Array([0xaa]));
    expect(a.device.read(0x5000, 1)).toMatchObject({ ok: true, data: new Uint8Array([0xaa]) });

    // VFIO_DEVICE_ATTACH_IOMMUFD_PT again, same IOAS: a replace with the HWPT already attached changes nothing.
    expect(unwrap(a.ctx.attach(a.dev, a.ioas))).toBe(hwptId);
    expect(unwrap(a.ctx.objects.get(hwptId))).toBeDefined();
    expect(domain.isDestroyed).toBe(false);
    expect(platform.host.vmids.isUsed(domain.vmid)).toBe(true);

    // Another VM's domain takes the next free VMID and caches its own translation of the same IOVA.
    const b = vmWith(platform, unit, 0x20);
    const bHwpt = unwrap(b.ctx.attach(b.dev, b.ioas));
    expect(autoDomainOf(b.ctx, bHwpt).vmid).not.toBe(domain.vmid);
    b.vm.memory.writeBytes(0x5000, new Uint8Array([0xbb]));
    expect(b.device.read(0x5000, 1)).toMatchObject({ ok: true, data: new Uint8Array([0xbb]) });

    // VM A's device still reads its own page, never VM B's.
    const again = a.device.read(0x5000, 1);
    expect(again).toMatchObject({ ok: true, data: new Uint8Array([0xaa]) });
    expect(platform.host.memory.violations ?? []).toEqual([]);
  });

  it("holds the domain's VMID for every attached device: a destroyed domain's VMID is not reused while a device still carries it", () => {
    const { platform, unit } = host();
    const a = vmWith(platform, unit, 0x10);
    const hwptId = unwrap(a.ctx.hwptAlloc({ flags: 0, devId: a.dev, ptId: a.ioas }));
    unwrap(a.ctx.attach(a.dev, hwptId));
    const domain = autoDomainOf(a.ctx, hwptId);
    expect(platform.host.vmids.holders(domain.vmid)).toBe(2);
    // Even a (buggy) destroy while attached leaves the VMID and table to the attachment.
    domain.destroy();
    expect(platform.host.vmids.isUsed(domain.vmid)).toBe(true);
    const other = TablePagingDomain.create(unit, platform.host, domain.table.format as WritableFormat, domain.table.geometry, { nestParent: false });
    expect(unwrap(other).vmid).not.toBe(domain.vmid);
    unwrap(a.ctx.detach(a.dev));
    expect(platform.host.vmids.isUsed(domain.vmid)).toBe(false);
  });

  it("destroys a new automatic HWPT whose attach failed, leaking no object, domain or VMID", () => {
    const { platform, unit } = host();
    const a = vmWith(platform, unit, 0x10);
    const v = unwrap(a.ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: a.dev, hwptId: unwrap(a.ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId: a.dev, ptId: a.ioas })) }));
    expect(v).toBeGreaterThan(0);
    const before = a.ctx.list().length;
    const vmidsBefore = platform.host.vmids.inUse;
    const failing = Object.assign(Object.create(Object.getPrototypeOf(unit)) as PhysicalIommu, unit, { attachDevice: () => ({ ok: false, error: { errno: "ENOMEM", code: 12, message: "no memory" } }) });
    (a.device as { unit: PhysicalIommu }).unit = failing;
    expect(errno(a.ctx.attach(a.dev, a.ioas))).toBe("ENOMEM");
    expect(a.ctx.list().length).toBe(before);
    expect(platform.host.vmids.inUse).toBe(vmidsBefore);
  });
});

describe("attach, replace and detach are two calls, as in Linux", () => {
  it("attach of an attached device is EBUSY, replace of an unattached one EINVAL, detach of an unattached one succeeds", () => {
    const { platform, unit } = host();
    const a = vmWith(platform, unit, 0x10);
    const h1 = unwrap(a.ctx.hwptAlloc({ flags: 0, devId: a.dev, ptId: a.ioas }));
    const h2 = unwrap(a.ctx.hwptAlloc({ flags: 0, devId: a.dev, ptId: a.ioas }));
    expect(errno(a.ctx.deviceReplace(a.dev, h1))).toBe("EINVAL");
    expect(errno(a.ctx.detach(a.dev))).toBe("ok");
    expect(errno(a.ctx.deviceAttach(a.dev, h1))).toBe("ok");
    expect(errno(a.ctx.deviceAttach(a.dev, h2))).toBe("EBUSY");
    expect(errno(a.ctx.deviceAttach(a.dev, h1))).toBe("EBUSY");
    expect(errno(a.ctx.deviceReplace(a.dev, h2))).toBe("ok");
    // The old HWPT is free to destroy, the new one is busy.
    expect(errno(a.ctx.destroy(h1))).toBe("ok");
    expect(errno(a.ctx.destroy(h2))).toBe("EBUSY");
    expect(errno(a.ctx.detach(a.dev))).toBe("ok");
    expect(errno(a.ctx.detach(a.dev))).toBe("ok");
    expect(errno(a.ctx.destroy(h2))).toBe("ok");
  });

  it("lets a PASID attach only for a PASID-capable device, within its width, to a PASID-compatible HWPT over a compatible RID attachment", () => {
    const { platform, unit } = host();
    const plain = vmWith(platform, unit, 0x10, 0);
    const pasidHwpt = unwrap(plain.ctx.hwptAlloc({ flags: HwptAllocFlag.PASID, devId: plain.dev, ptId: plain.ioas }));
    expect(errno(plain.ctx.attach(plain.dev, pasidHwpt, 1))).toBe("EINVAL");

    const p = vmWith(platform, unit, 0x20, 8);
    const compat = unwrap(p.ctx.hwptAlloc({ flags: HwptAllocFlag.PASID, devId: p.dev, ptId: p.ioas }));
    const incompat = unwrap(p.ctx.hwptAlloc({ flags: 0, devId: p.dev, ptId: p.ioas }));
    expect(errno(p.ctx.attach(p.dev, incompat, 1))).toBe("EINVAL");
    expect(errno(p.ctx.attach(p.dev, compat, 256))).toBe("EINVAL");
    // An IOAS gives an automatic HWPT allocated without ALLOC_PASID: not for PASIDs.
    expect(errno(p.ctx.attach(p.dev, p.ioas, 1))).toBe("EINVAL");
    expect(errno(p.ctx.attach(p.dev, compat, 255))).toBe("ok");
    // While a PASID is attached, the RID cannot take a HWPT that is not PASID-compatible…
    expect(errno(p.ctx.attach(p.dev, incompat))).toBe("EINVAL");
    expect(errno(p.ctx.attach(p.dev, compat))).toBe("ok");
    // …and with a non-compatible RID HWPT, no PASID can attach.
    unwrap(p.ctx.detach(p.dev, 255));
    unwrap(p.ctx.attach(p.dev, incompat));
    expect(errno(p.ctx.attach(p.dev, compat, 2))).toBe("EINVAL");
  });
});

describe("fault objects on nested HWPTs", () => {
  it("resolves FAULT_ID_VALID in the core (ENOENT for a bad id) and never hands the flag to the driver", () => {
    const { platform, unit } = host();
    const a = vmWith(platform, unit, 0x10);
    const parent = unwrap(a.ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId: a.dev, ptId: a.ioas }));
    const fault = unwrap(a.ctx.faultQueueAlloc(0));
    const before = a.ctx.list().length;
    expect(errno(a.ctx.hwptAlloc({ flags: HwptAllocFlag.FAULT_ID_VALID, devId: a.dev, ptId: parent, data: s1(), faultId: 999 }))).toBe("ENOENT");
    expect(a.ctx.list().length).toBe(before);
    const onParent = unwrap(a.ctx.hwptAlloc({ flags: HwptAllocFlag.FAULT_ID_VALID, devId: a.dev, ptId: parent, data: s1(), faultId: fault.id }));
    const v = unwrap(a.ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: a.dev, hwptId: parent }));
    const onViommu = unwrap(a.ctx.hwptAlloc({ flags: HwptAllocFlag.FAULT_ID_VALID, devId: a.dev, ptId: v, data: s1(), faultId: fault.id }));
    expect(errno(a.ctx.destroy(fault.id))).toBe("EBUSY");
    unwrap(a.ctx.destroy(onParent));
    unwrap(a.ctx.destroy(onViommu));
    fault.file.close();
    expect(errno(a.ctx.destroy(fault.id))).toBe("ok");
  });
});

describe("GET_HW_INFO out_max_pasid_log2", () => {
  it("is the device's PASID width as the unit can serve it, and 0 for a device without PASID", () => {
    const { platform, unit } = host();
    for (const [bits, expected] of [
      [0, 0],
      [8, 8],
      [20, 20],
    ] as const) {
      const v = vmWith(platform, unit, 0x40 + bits, bits);
      expect(unwrap(v.ctx.getHwInfo({ flags: 0, devId: v.dev, dataLen: 0 })).maxPasidLog2).toBe(expected);
    }
  });
});

/** Builds a uapi struct: little-endian fields at byte offsets, `size` in the first u32. */
function struct(size: number, fields: [offset: number, bytes: 2 | 4 | 8, value: number | bigint][]): Uint8Array {
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  v.setUint32(0, size, true);
  for (const [at, n, value] of fields) {
    if (n === 2) v.setUint16(at, Number(value), true);
    else if (n === 4) v.setUint32(at, Number(value), true);
    else v.setBigUint64(at, BigInt(value), true);
  }
  return b;
}
const u32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset).getUint32(at, true);
const u64 = (b: Uint8Array, at: number): bigint => new DataView(b.buffer, b.byteOffset).getBigUint64(at, true);
const U64_LAST = (1n << 64n) - 1n;

function ioctlSetup(pasidBits = 0) {
  const { platform, unit } = host();
  const a = vmWith(platform, unit, 0x10, pasidBits);
  const user = new UserMemory();
  return { ...a, platform, unit, user, io: new IommufdIoctls(a.ctx, user) };
}

describe("the ioctl layer's order and write-back", () => {
  it("IOAS_MAP checks flags, sizes, permissions and the IOAS before it touches user_va", () => {
    const { io, ioas } = ioctlSetup();
    const bad = 0x1234_0000;
    const map = (flags: number, id: number) => struct(40, [[4, 4, flags], [8, 4, id], [16, 8, bad], [24, 8, 4096]]);
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_MAP, map(1 << 5 | RW, ioas)))).toBe("EOPNOTSUPP");
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_MAP, map(0, ioas)))).toBe("EINVAL");
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_MAP, map(RW, 999)))).toBe("ENOENT");
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_MAP, map(RW, ioas)))).toBe("EFAULT");
  });

  it("HWPT_INVALIDATE writes entry_num = 0 back on the reserved-field EOPNOTSUPP", () => {
    const { io } = ioctlSetup();
    const inv = struct(32, [[4, 4, 1], [24, 4, 7], [28, 4, 1]]);
    expect(errnoOf(io.ioctl(IommufdIoctl.HWPT_INVALIDATE, inv))).toBe("EOPNOTSUPP");
    expect(u32(inv, 24)).toBe(0);
  });
});

describe("IOMMU_IOAS_IOVA_RANGES and IOMMU_IOAS_ALLOW_IOVAS", () => {
  it("reports the holes between reserved ranges, narrowing to a domain's aperture and a device's reserved regions; EMSGSIZE with the count when the array is short", () => {
    const { io, user, ctx, dev, vm, unit } = ioctlSetup();
    const fresh = unwrap(ctx.ioasAlloc());
    const out = new Uint8Array(64);
    const q = (id: number, n: number) => struct(32, [[4, 4, id], [8, 4, n], [16, 8, user.put(out)]]);
    const arg = q(fresh, 4);
    expect(io.ioctl(IommufdIoctl.IOAS_IOVA_RANGES, arg)).toMatchObject({ ok: true });
    expect(u32(arg, 8)).toBe(1);
    expect([u64(out, 0), u64(out, 8)]).toEqual([0n, U64_LAST]);
    expect(u64(arg, 24)).toBe(4096n);
    // A 48-bit domain reserves everything above its aperture; the device reserves an MSI window.
    Object.assign(unit, { reservedRegions: () => [{ start: 0xfee0_0000, length: 0x10_0000, kind: "msi" }] });
    const small = unwrap(ctx.ioasAlloc());
    unwrap(ctx.attach(dev, unwrap(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: small }))));
    const short = q(small, 1);
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_IOVA_RANGES, short))).toBe("EMSGSIZE");
    expect(u32(short, 8)).toBe(2);
    const full = q(small, 4);
    expect(io.ioctl(IommufdIoctl.IOAS_IOVA_RANGES, full)).toMatchObject({ ok: true });
    expect([u64(out, 0), u64(out, 8), u64(out, 16), u64(out, 24)]).toEqual([0n, 0xfedf_ffffn, 0xfef0_0000n, 2n ** 48n - 1n]);
    // Mapping into a reserved range is EINVAL (iopt_check_iova).
    expect(errno(ctx.ioasMap({ ioasId: small, flags: RW | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0, length: 4096, iova: 0xfee0_0000 }))).toBe("EINVAL");
    // Detach gives the device's reservation back.
    unwrap(ctx.detach(dev));
    const after = q(small, 4);
    expect(io.ioctl(IommufdIoctl.IOAS_IOVA_RANGES, after)).toMatchObject({ ok: true });
    expect(u32(after, 8)).toBe(1);
  });

  it("checks each allowed range (start < last, no overlap: EINVAL), refuses one meeting a reserved range (EADDRINUSE), and allocates inside the allowed ranges", () => {
    const { io, user, ctx, vm, dev, unit } = ioctlSetup();
    const id = unwrap(ctx.ioasAlloc());
    const ranges = (...r: [bigint, bigint][]) => {
      const b = new Uint8Array(16 * r.length);
      const v = new DataView(b.buffer);
      r.forEach(([s, l], i) => {
        v.setBigUint64(i * 16, s, true);
        v.setBigUint64(i * 16 + 8, l, true);
      });
      return struct(24, [[4, 4, id], [8, 4, r.length], [16, 8, user.put(b)]]);
    };
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_ALLOW_IOVAS, ranges([0x1000n, 0x1000n])))).toBe("EINVAL");
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_ALLOW_IOVAS, ranges([0x10_0000n, 0x1f_ffffn], [0x1f_0000n, 0x2f_ffffn])))).toBe("EINVAL");
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_ALLOW_IOVAS, struct(24, [[4, 4, id], [8, 4, 1], [12, 4, 1]])))).toBe("EOPNOTSUPP");
    expect(io.ioctl(IommufdIoctl.IOAS_ALLOW_IOVAS, ranges([0x4000_0000n, 0x4fff_ffffn]))).toMatchObject({ ok: true });
    expect(unwrap(ctx.ioasMap({ ioasId: id, flags: RW, memory: vm.memory, gpa: 0, length: 0x2000 }))).toBe(0x4000_0000);
    // A device whose reserved region lies in the allowed range cannot attach (the reservation would narrow it).
    Object.assign(unit, { reservedRegions: () => [{ start: 0x4800_0000, length: 0x10_0000, kind: "sw-msi" }] });
    expect(errno(ctx.attach(dev, unwrap(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: id }))))).toBe("EADDRINUSE");
  });
});

describe("IOMMU_IOAS_COPY", () => {
  it("maps already-pinned pages into another IOAS in ioas.c's order: EPERM for a writeable copy of read-only pages, ENOENT for a gap", () => {
    const { ctx, vm, dev } = ioctlSetup();
    const src = unwrap(ctx.ioasAlloc());
    unwrap(ctx.ioasMap({ ioasId: src, flags: RW | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0x10_0000, length: 0x4000, iova: 0x8000_0000 }));
    unwrap(ctx.ioasMap({ ioasId: src, flags: IoasMapFlag.READABLE | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0x20_0000, length: 0x1000, iova: 0x9000_0000 }));
    const dst = unwrap(ctx.ioasAlloc());
    const copy = { dstIoasId: dst, srcIoasId: src };
    expect(errno(ctx.ioasCopy({ ...copy, flags: 1 << 4 | RW, length: 0x1000, dstIova: 0, srcIova: 0x8000_0000 }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.ioasCopy({ ...copy, flags: 0, length: 0x1000, dstIova: 0, srcIova: 0x8000_0000 }))).toBe("EINVAL");
    expect(errno(ctx.ioasCopy({ ...copy, flags: RW, length: 0x2000, dstIova: 0, srcIova: 0x8000_3000 }))).toBe("ENOENT");
    expect(errno(ctx.ioasCopy({ ...copy, flags: RW, length: 0x1000, dstIova: 0, srcIova: 0x9000_0000 }))).toBe("EPERM");
    expect(errno(ctx.ioasCopy({ ...copy, srcIoasId: 999, flags: RW, length: 0x1000, dstIova: 0, srcIova: 0x8000_0000 }))).toBe("ENOENT");
    const at = unwrap(ctx.ioasCopy({ ...copy, flags: RW | IoasMapFlag.FIXED_IOVA, length: 0x2000, dstIova: 0x1_0000, srcIova: 0x8000_1000 }));
    expect(at).toBe(0x1_0000);
    // The copy translates to the same guest pages.
    unwrap(ctx.attach(dev, dst));
    vm.memory.writeBytes(0x10_1000, new Uint8Array([7, 8, 9]));
    const device = (unwrap(ctx.objects.get(dev)) as unknown as { device: DmaDevice }).device;
    expect(device.read(0x1_0000, 3)).toMatchObject({ ok: true, data: new Uint8Array([7, 8, 9]) });
  });
});

describe("IOMMU_OPTION", () => {
  it("RLIMIT_MODE is global (object_id 0), settable by a privileged VMM only while no object exists; HUGE_PAGES is per IOAS", () => {
    const { platform, unit } = host();
    const vm = platform.createVm({ memoryBytes: 2 ** 26 });
    const ctx = new IommufdContext(vm.id);
    const opt = (optionId: number, op: number, objectId: number, val64 = 0n) => ctx.option({ optionId, op, objectId, val64 });
    expect(unwrap(opt(IommuOption.RLIMIT_MODE, IommuOptionOp.GET, 0))).toBe(0n);
    expect(errno(opt(IommuOption.RLIMIT_MODE, IommuOptionOp.GET, 3))).toBe("EOPNOTSUPP");
    expect(errno(opt(IommuOption.RLIMIT_MODE, IommuOptionOp.SET, 0, 2n))).toBe("EINVAL");
    expect(unwrap(opt(IommuOption.RLIMIT_MODE, IommuOptionOp.SET, 0, 1n))).toBe(1n);
    expect(unwrap(opt(IommuOption.RLIMIT_MODE, IommuOptionOp.GET, 0))).toBe(1n);
    expect(errno(new IommufdContext(vm.id, false).option({ optionId: IommuOption.RLIMIT_MODE, op: IommuOptionOp.SET, objectId: 0, val64: 0n }))).toBe("EPERM");
    const ioas = unwrap(ctx.ioasAlloc());
    expect(errno(opt(IommuOption.RLIMIT_MODE, IommuOptionOp.SET, 0, 0n))).toBe("EBUSY");
    expect(errno(opt(7, IommuOptionOp.GET, 0))).toBe("EOPNOTSUPP");
    expect(errno(opt(IommuOption.HUGE_PAGES, IommuOptionOp.GET, 999))).toBe("ENOENT");
    expect(unwrap(opt(IommuOption.HUGE_PAGES, IommuOptionOp.GET, ioas))).toBe(1n);
    expect(errno(opt(IommuOption.HUGE_PAGES, 5, ioas))).toBe("EOPNOTSUPP");
    expect(unwrap(opt(IommuOption.HUGE_PAGES, IommuOptionOp.SET, ioas, 0n))).toBe(0n);
    // With huge pages off a 2 MiB area is mapped as 4 KiB leaves.
    const dev = unwrap(ctx.bindDevice(platform.createDevice(unit, 0x30)));
    unwrap(ctx.ioasMap({ ioasId: ioas, flags: RW | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0x20_0000, length: 0x20_0000, iova: 0x20_0000 }));
    unwrap(ctx.attach(dev, ioas));
    const device = (unwrap(ctx.objects.get(dev)) as unknown as { device: DmaDevice }).device;
    expect(device.translate(0x20_0000, false).pageShift).toBe(12);
    // Once a domain has pages mapped, huge pages cannot be turned off again (they may already be in use).
    unwrap(opt(IommuOption.HUGE_PAGES, IommuOptionOp.SET, ioas, 1n));
    expect(errno(opt(IommuOption.HUGE_PAGES, IommuOptionOp.SET, ioas, 0n))).toBe("EINVAL");
  });
});

describe("IOMMU_VFIO_IOAS, IOMMU_IOAS_MAP_FILE and IOMMU_IOAS_CHANGE_PROCESS", () => {
  it("VFIO_IOAS gets (ENODEV when unset or destroyed), sets (ENOENT for a non-IOAS) and clears the compatibility IOAS", () => {
    const { io, ctx, dev } = ioctlSetup();
    const call = (op: number, id = 0, reserved = 0) => struct(12, [[4, 4, id], [8, 2, op], [10, 2, reserved]]);
    expect(errnoOf(io.ioctl(IommufdIoctl.VFIO_IOAS, call(VfioIoasOp.GET)))).toBe("ENODEV");
    expect(errnoOf(io.ioctl(IommufdIoctl.VFIO_IOAS, call(VfioIoasOp.SET, dev)))).toBe("ENOENT");
    expect(errnoOf(io.ioctl(IommufdIoctl.VFIO_IOAS, call(VfioIoasOp.GET, 0, 1)))).toBe("EOPNOTSUPP");
    expect(errnoOf(io.ioctl(IommufdIoctl.VFIO_IOAS, call(9)))).toBe("EOPNOTSUPP");
    const spare = unwrap(ctx.ioasAlloc());
    expect(io.ioctl(IommufdIoctl.VFIO_IOAS, call(VfioIoasOp.SET, spare))).toMatchObject({ ok: true });
    const get = call(VfioIoasOp.GET);
    expect(io.ioctl(IommufdIoctl.VFIO_IOAS, get)).toMatchObject({ ok: true });
    expect(u32(get, 4)).toBe(spare);
    unwrap(ctx.destroy(spare));
    expect(errnoOf(io.ioctl(IommufdIoctl.VFIO_IOAS, call(VfioIoasOp.GET)))).toBe("ENODEV");
    expect(io.ioctl(IommufdIoctl.VFIO_IOAS, call(VfioIoasOp.CLEAR))).toMatchObject({ ok: true });
    expect(errnoOf(io.ioctl(IommufdIoctl.VFIO_IOAS, struct(8, [])))).toBe("EINVAL");
  });

  it("MAP_FILE maps a memfd's pages (EBADF for a closed fd, EFAULT beyond the file); CHANGE_PROCESS moves only file-backed mappings", () => {
    const { platform, unit } = host();
    const vm = platform.createVm({ memoryBytes: 2 ** 26 });
    const ctx = new IommufdContext(vm.id);
    const user = new UserMemory();
    const io = new IommufdIoctls(ctx, user);
    const ioas = unwrap(ctx.ioasAlloc());
    const fd = user.addFile(vm.memory, 0, 2 ** 26);
    const mapFile = (fdNo: number, start: number, length: number, iova: number) => struct(40, [[4, 4, RW | IoasMapFlag.FIXED_IOVA], [8, 4, ioas], [12, 4, fdNo], [16, 8, start], [24, 8, length], [32, 8, iova]]);
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_MAP_FILE, mapFile(55, 0, 4096, 0)))).toBe("EBADF");
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_MAP_FILE, mapFile(fd, 2 ** 26, 4096, 0)))).toBe("EFAULT");
    expect(io.ioctl(IommufdIoctl.IOAS_MAP_FILE, mapFile(fd, 0x3000, 0x2000, 0x10_0000))).toMatchObject({ ok: true });
    expect(io.ioctl(IommufdIoctl.IOAS_CHANGE_PROCESS, struct(8, []))).toMatchObject({ ok: true });
    expect(ctx.processChanges).toBe(1);
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_CHANGE_PROCESS, struct(8, [[4, 4, 1]])))).toBe("EOPNOTSUPP");
    unwrap(ctx.ioasMap({ ioasId: ioas, flags: RW, memory: vm.memory, gpa: 0, length: 4096 }));
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_CHANGE_PROCESS, struct(8, [])))).toBe("EINVAL");
    expect(ctx.processChanges).toBe(1);
    const dev = unwrap(ctx.bindDevice(platform.createDevice(unit, 0x30)));
    unwrap(ctx.attach(dev, ioas));
    vm.memory.writeBytes(0x3000, new Uint8Array([5]));
    const device = (unwrap(ctx.objects.get(dev)) as unknown as { device: DmaDevice }).device;
    expect(device.read(0x10_0000, 1)).toMatchObject({ ok: true, data: new Uint8Array([5]) });
  });

  it("checks the new commands' struct sizes like the others (EINVAL below the minimum)", () => {
    const { io } = ioctlSetup();
    for (const [nr, min] of [
      [IommufdIoctl.IOAS_ALLOW_IOVAS, 24],
      [IommufdIoctl.IOAS_COPY, 40],
      [IommufdIoctl.IOAS_IOVA_RANGES, 32],
      [IommufdIoctl.OPTION, 24],
      [IommufdIoctl.VFIO_IOAS, 12],
      [IommufdIoctl.IOAS_MAP_FILE, 40],
      [IommufdIoctl.IOAS_CHANGE_PROCESS, 8],
    ] as const) {
      expect(errnoOf(io.ioctl(nr, struct(min - 4, [])))).toBe("EINVAL");
    }
  });
});

describe("2026 hardening", () => {
  it("publishes a vDEVICE only after the driver's init succeeded", () => {
    const { platform, unit } = host();
    const a = vmWith(platform, unit, 0x10);
    const parent = unwrap(a.ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId: a.dev, ptId: a.ioas }));
    const viommu = unwrap(a.ctx.viommu(unwrap(a.ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: a.dev, hwptId: parent }))));
    const seen: boolean[] = [];
    const init = viommu.ops.vdeviceInit?.bind(viommu.ops);
    (viommu.ops as { vdeviceInit?: typeof init }).vdeviceInit = (vdev) => {
      seen.push(viommu.vdevs.has(vdev.virtId));
      return vdev.virtId === 0x666 ? { ok: false, error: { errno: "EINVAL", code: 22, message: "refused" } } : (init?.(vdev) ?? { ok: true, value: undefined });
    };
    expect(errno(a.ctx.vdeviceAlloc({ viommuId: viommu.id, devId: a.dev, virtId: 0x666 }))).toBe("EINVAL");
    expect(viommu.vdevs.size).toBe(0);
    expect(errno(a.ctx.vdeviceAlloc({ viommuId: viommu.id, devId: a.dev, virtId: 0x10 }))).toBe("ok");
    expect(seen).toEqual([false, false]);
    expect(viommu.vdevs.has(0x10)).toBe(true);
  });

  it("refuses a fault-queue read that cannot hold one record", () => {
    const { platform, unit } = host();
    const a = vmWith(platform, unit, 0x10);
    const fault = unwrap(a.ctx.faultQueueAlloc(0));
    expect(errno(fault.file.read(0))).toBe("EINVAL");
    expect(errno(fault.file.read(40))).toBe("ok");
  });
});

describe("dirty tracking (IOMMU_HWPT_SET_DIRTY_TRACKING, IOMMU_HWPT_GET_DIRTY_BITMAP)", () => {
  function dirtySetup() {
    const { platform, unit } = host();
    const vm = platform.createVm({ memoryBytes: 2 ** 26, backingPageShift: 21 });
    const ctx = new IommufdContext(vm.id);
    const device = platform.createDevice(unit, 0x10, "dev", 0);
    const dev = unwrap(ctx.bindDevice(device));
    const ioas = unwrap(ctx.ioasAlloc());
    unwrap(ctx.ioasMap({ ioasId: ioas, flags: RW | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0x20_0000, length: 0x20_0000, iova: 0x20_0000 }));
    unwrap(ctx.ioasMap({ ioasId: ioas, flags: RW | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0x40_0000, length: 0x4000, iova: 0x100_0000 }));
    const hwpt = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.DIRTY_TRACKING, devId: dev, ptId: ioas }));
    unwrap(ctx.attach(dev, hwpt));
    const bitmap = (iova: number, length: number, pageSize: number, flags = 0) => {
      const out = new Uint8Array(Math.max(8, Math.ceil(length / pageSize / 64) * 8));
      const r = ctx.hwptGetDirtyBitmap({ hwptId: hwpt, flags, iova, length, pageSize, bitmap: (n) => (n <= out.length ? out : undefined) });
      return { r, bits: Array.from({ length: length / pageSize }, (_, i) => (out[i >> 3]! >> (i & 7)) & 1) };
    };
    return { ctx, dev, ioas, hwpt, device, bitmap, vm };
  }

  it("reports the pages written since tracking began, at the leaf's size, and clears them unless NO_CLEAR", () => {
    const { ctx, hwpt, device, bitmap } = dirtySetup();
    expect(unwrap(ctx.getHwInfo({ flags: 0, devId: 1, dataLen: 0 })).capabilities & 1).toBe(1);
    // Writes before tracking starts do not count.
    expect(device.write(0x100_0000, Uint8Array.of(1)).ok).toBe(true);
    unwrap(ctx.hwptSetDirtyTracking(hwpt, 1));
    expect(bitmap(0x100_0000, 0x4000, 0x1000).bits).toEqual([0, 0, 0, 0]);
    // A read caches the page clean; the write after it still marks it (it walks again).
    expect(device.read(0x100_1000, 4).ok).toBe(true);
    expect(device.write(0x100_1000, Uint8Array.of(2)).ok).toBe(true);
    expect(device.read(0x100_2000, 4).ok).toBe(true);
    expect(bitmap(0x100_0000, 0x4000, 0x1000, 1).bits).toEqual([0, 1, 0, 0]);
    expect(bitmap(0x100_0000, 0x4000, 0x1000).bits).toEqual([0, 1, 0, 0]);
    expect(bitmap(0x100_0000, 0x4000, 0x1000).bits).toEqual([0, 0, 0, 0]);
    // After the clear, a write through the still-cached translation is marked again.
    expect(device.write(0x100_1000, Uint8Array.of(3)).ok).toBe(true);
    expect(bitmap(0x100_0000, 0x4000, 0x1000).bits).toEqual([0, 1, 0, 0]);
    // A 2 MiB leaf is dirty whole: 512 bits at 4 KiB granularity, one at 2 MiB.
    expect(device.write(0x20_0000 + 0x1234 * 8, Uint8Array.of(4)).ok).toBe(true);
    const big = bitmap(0x20_0000, 0x20_0000, 0x1000, 1);
    expect(big.bits.every((b) => b === 1)).toBe(true);
    expect(bitmap(0x20_0000, 0x20_0000, 0x20_0000).bits).toEqual([1]);
    // Turned off, writes are no longer recorded.
    unwrap(ctx.hwptSetDirtyTracking(hwpt, 0));
    expect(device.write(0x100_3000, Uint8Array.of(5)).ok).toBe(true);
    expect(bitmap(0x100_0000, 0x4000, 0x1000).bits).toEqual([0, 0, 0, 0]);
  });

  it("answers misuse with Linux's errno, range checks before the domain's", () => {
    const { ctx, hwpt, ioas, dev, bitmap } = dirtySetup();
    expect(errno(ctx.hwptSetDirtyTracking(hwpt, 2))).toBe("EOPNOTSUPP");
    expect(errno(ctx.hwptSetDirtyTracking(ioas, 1))).toBe("ENOENT");
    const plain = unwrap(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: ioas }));
    expect(errno(ctx.hwptSetDirtyTracking(plain, 1))).toBe("EOPNOTSUPP");
    expect(errno(bitmap(0x100_0000, 0x4000, 0x1000, 2).r)).toBe("EOPNOTSUPP");
    expect(errno(bitmap(0x100_0800, 0x4000, 0x1000).r)).toBe("EINVAL");
    expect(errno(bitmap(0x100_0000, 0x4000, 0x2000 * 3).r)).toBe("EINVAL");
    const zeroPage = ctx.hwptGetDirtyBitmap({ hwptId: hwpt, flags: 0, iova: 0x100_0000, length: 0x4000, pageSize: 0, bitmap: () => new Uint8Array(8) });
    expect(errno(zeroPage)).toBe("EINVAL");
    expect(errno(ctx.hwptGetDirtyBitmap({ hwptId: hwpt, flags: 0, iova: (1n << 64n) - 0x1000n, length: 0x2000, pageSize: 0x1000, bitmap: () => new Uint8Array(8) }))).toBe("EOVERFLOW");
    expect(errno(ctx.hwptGetDirtyBitmap({ hwptId: hwpt, flags: 0, iova: 0x100_0000, length: 0x4000, pageSize: 0x1000, bitmap: () => undefined }))).toBe("EFAULT");
    expect(errno(ctx.hwptGetDirtyBitmap({ hwptId: plain, flags: 0, iova: 0x100_0800, length: 0x4000, pageSize: 0x1000, bitmap: () => new Uint8Array(8) }))).toBe("EINVAL");
    expect(errno(ctx.hwptGetDirtyBitmap({ hwptId: plain, flags: 0, iova: 0x100_0000, length: 0x4000, pageSize: 0x1000, bitmap: () => new Uint8Array(8) }))).toBe("EOPNOTSUPP");
  });
});
