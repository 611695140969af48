import { describe, expect, it } from "vitest";
import {
  DIRTY_TRACKING_ENABLE,
  HwCapability,
  HwptAllocFlag,
  IoasMapFlag,
  IommufdContext,
  newWalkResult,
  NO_PASID,
  Perm,
  Platform,
  unwrap,
  type PagingDomain,
} from "@viommu/core";
import { decodeHwInfoAmd } from "../../src/format/iommufd-uapi.js";
import { efrLayout } from "../../src/format/extended-feature-register.js";
import { amdV1PageTableEncoder, V1_DIRTY } from "../../src/format/page-table-v1.js";
import { AmdViUnit } from "../../src/hw/amd-vi-unit.js";
import { amdViPlugin } from "../../src/plugin.js";
import { amdBed, DATA_GPA, IOVA, mapOne, pattern } from "../support.js";

const PAGE = 4096;

function hostWith(unitOptions: { hostDirty?: boolean }): { ctx: IommufdContext; unit: AmdViUnit; devId: number; ioas: number; platform: Platform } {
  const platform = new Platform({ plugins: [amdViPlugin] });
  const unit = new AmdViUnit(platform.host, 7, unitOptions);
  const vm = platform.createVm({ memoryBytes: 2 ** 28 });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, 0x100, "dev");
  const devId = unwrap(ctx.bindDevice(device));
  const ioas = unwrap(ctx.ioasAlloc());
  unwrap(ctx.ioasMap({ ioasId: ioas, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: vm.memory, gpa: 0, length: vm.memory.sizeBytes, iova: 0 }));
  return { ctx, unit, devId, ioas, platform };
}

/** The dirty pages of [iova, iova + length) as IOMMU_HWPT_GET_DIRTY_BITMAP reports them (4 KiB bits). */
function dirtyPages(ctx: IommufdContext, hwptId: number, iova: number, length: number): number[] {
  let bitmap = new Uint8Array(0);
  unwrap(ctx.hwptGetDirtyBitmap({ hwptId, flags: 0, iova, length, pageSize: PAGE, bitmap: (n) => (bitmap = new Uint8Array(n)) }));
  const out: number[] = [];
  for (let i = 0; i < bitmap.length * 8; i++) if (bitmap[i >> 3]! & (1 << (i & 7))) out.push(iova + i * PAGE);
  return out;
}

describe("host dirty tracking (EFR.HDSup, the v1 D bit)", () => {
  it("a unit with HDSup reports it in EFR and as IOMMU_HW_CAP_DIRTY_TRACKING; one without refuses IOMMU_HWPT_ALLOC_DIRTY_TRACKING with EOPNOTSUPP (amd_iommu_domain_alloc_paging_flags)", () => {
    const hdBit = 1n << BigInt(efrLayout.field("HDSup").bit);
    const withHd = hostWith({});
    const info = unwrap(withHd.ctx.getHwInfo({ flags: 0, devId: withHd.devId, dataLen: 16 }));
    expect(info.capabilities & HwCapability.DIRTY_TRACKING).toBe(HwCapability.DIRTY_TRACKING);
    expect(decodeHwInfoAmd(info.data).efr & hdBit).toBe(hdBit);
    expect(withHd.ctx.hwptAlloc({ flags: HwptAllocFlag.DIRTY_TRACKING | HwptAllocFlag.NEST_PARENT, devId: withHd.devId, ptId: withHd.ioas }).ok).toBe(true);

    const without = hostWith({ hostDirty: false });
    const plain = unwrap(without.ctx.getHwInfo({ flags: 0, devId: without.devId, dataLen: 16 }));
    expect(plain.capabilities & HwCapability.DIRTY_TRACKING).toBe(0);
    expect(decodeHwInfoAmd(plain.data).efr & hdBit).toBe(0n);
    for (const flags of [HwptAllocFlag.DIRTY_TRACKING, HwptAllocFlag.DIRTY_TRACKING | HwptAllocFlag.NEST_PARENT]) {
      expect(without.ctx.hwptAlloc({ flags, devId: without.devId, ptId: without.ioas })).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    }
    // A paging HWPT without dirty ops answers EOPNOTSUPP to SET_DIRTY_TRACKING (iommufd's hw_pagetable.c).
    const hwpt = unwrap(without.ctx.hwptAlloc({ flags: 0, devId: without.devId, ptId: without.ioas }));
    expect(without.ctx.hwptSetDirtyTracking(hwpt, DIRTY_TRACKING_ENABLE)).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
  });

  it("attaching a dirty-tracking domain to a device behind a unit without HDSup is EINVAL (amd_iommu_attach_device)", () => {
    const withHd = hostWith({});
    const tracked = unwrap(withHd.unit.domainAllocPaging(withHd.platform.createDevice(withHd.unit, 0x300, "any"), HwptAllocFlag.DIRTY_TRACKING, 1));
    const other = new AmdViUnit(withHd.platform.host, 8, { hostDirty: false });
    const device = withHd.platform.createDevice(other, 0x200, "plain");
    expect(other.attachDevice(device, tracked, NO_PASID)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });

  it("a DMA write sets D (bit 6) in the stage-2 leaf it translated through; a read does not, and a write after a read through the cached translation still does", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], backingPageShift: 12, memoryBytes: 2 ** 29 }], dirtyTracking: true });
    const v = bed.vms[0]!;
    const GPA = 0x1000_0000;
    mapOne(v, 0x10, IOVA, GPA, 4 * PAGE);
    unwrap(v.iommufd.hwptSetDirtyTracking(v.parentHwptId, DIRTY_TRACKING_ENABLE));
    const parent = (unwrap(v.iommufd.objects.get(v.parentHwptId)) as unknown as { domain: PagingDomain }).domain;
    const leafOf = (gpa: number): number => {
      const out = newWalkResult();
      parent.table.walk(gpa, Perm.Read, out);
      expect(out.pageShift).toBe(12);
      return bed.platform.host.memory.read32(out.entryAddress);
    };
    const dev = v.devices[0]!.device;
    expect(dev.read(IOVA + PAGE, 8).ok).toBe(true);
    expect(leafOf(GPA + PAGE) & V1_DIRTY).toBe(0);
    expect(dev.write(IOVA + PAGE, pattern(8, 1)).ok).toBe(true);
    expect(leafOf(GPA + PAGE) & V1_DIRTY).toBe(V1_DIRTY);
    expect(dirtyPages(v.iommufd, v.parentHwptId, GPA, 4 * PAGE)).toEqual([GPA + PAGE]);
    expect(leafOf(GPA + PAGE) & V1_DIRTY).toBe(0);
  });

  it("a size-encoded page (NextLevel 7, one identical entry per 4 KiB slot) is dirty as a whole, whichever slot the write went through, and the clearing read cleans every copy", () => {
    const platform = new Platform({ plugins: [amdViPlugin] });
    const unit = unwrap(platform.createUnit("amd-vi")) as AmdViUnit;
    const vm = platform.createVm({ memoryBytes: 2 ** 28 });
    const device = platform.createDevice(unit, 0x100, "dev");
    device.owner = vm.id;
    const domain = unwrap(unit.domainAllocPaging(device, HwptAllocFlag.DIRTY_TRACKING, vm.id));
    // 16 KiB of contiguous host memory (one 2 MiB backing page) mapped as four 4 KiB leaves, then rewritten as
    // the four copies of one 16 KiB leaf, as Linux amdv1pt_install_leaf_entry writes them.
    const hpa = vm.memory.pin(0x100_0000)!;
    unwrap(domain.map(IOVA, hpa, 4 * PAGE, Perm.ReadWrite));
    const walk = newWalkResult();
    domain.table.walk(IOVA, Perm.Read, walk);
    const first = walk.entryAddress;
    const entry = new Uint32Array(2);
    amdV1PageTableEncoder.encodeLeaf(hpa, 14, Perm.ReadWrite, 1, entry);
    const host = platform.host.memory;
    for (let i = 0; i < 4; i++) host.write64Halves(first + i * 8, entry[0]!, entry[1]!);
    unwrap(unit.attachDevice(device, domain, NO_PASID));
    unwrap(domain.dirtyOps!.setDirtyTracking(true));
    expect(device.write(IOVA + 2 * PAGE + 0x10, pattern(8, 2)).ok).toBe(true);
    const records: [number, number][] = [];
    unwrap(domain.dirtyOps!.readAndClearDirty(IOVA, 4 * PAGE, false, (iova, length) => records.push([iova, length])));
    expect(records).toEqual([[IOVA, 4 * PAGE]]);
    const copies = Array.from({ length: 4 }, (_, i) => host.read32(first + i * 8) & V1_DIRTY);
    expect(copies).toEqual([0, 0, 0, 0]);
    // A read marks nothing.
    expect(device.read(IOVA + 3 * PAGE, 8).ok).toBe(true);
    const none: number[] = [];
    unwrap(domain.dirtyOps!.readAndClearDirty(IOVA, 4 * PAGE, false, (iova) => none.push(iova)));
    expect(none).toEqual([]);
  });

  it("the hardware vIOMMU's own writes into the guest (a COMPLETION_WAIT store) are DMA writes too: they dirty the page for live migration", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], memoryBytes: 2 ** 30 }], dirtyTracking: true });
    const v = bed.vms[0]!;
    const driver = v.drivers[0]! as unknown as { structures: { semaphore: number }; flush(d: number): unknown; createDomain(): { ok: true; value: number } };
    const domain = unwrap(v.drivers[0]!.createDomain());
    unwrap(v.iommufd.hwptSetDirtyTracking(v.parentHwptId, DIRTY_TRACKING_ENABLE));
    const sem = driver.structures.semaphore;
    const granule = sem - (sem % 2 ** 21);
    expect(dirtyPages(v.iommufd, v.parentHwptId, granule, 2 ** 21)).toEqual([]);
    unwrap(v.drivers[0]!.flush(domain));
    // Guest RAM is backed by 2 MiB pages: the store dirties its whole 2 MiB leaf.
    const dirty = dirtyPages(v.iommufd, v.parentHwptId, granule, 2 ** 21);
    expect(dirty).toContain(sem);
    expect(dirty).toHaveLength(512);
  });
});
