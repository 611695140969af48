import { describe, expect, it } from "vitest";
import {
  DIRTY_TRACKING_ENABLE,
  GuestPageAllocator,
  GuestTableStore,
  HwCapability,
  HwptAllocFlag,
  IoasMapFlag,
  IommufdContext,
  IommufdObjectType,
  newWalkResult,
  PageTableBuilder,
  Perm,
  Platform,
  unwrap,
  type HwptPaging,
} from "@viommu/core";
import { encodeEcap, decodeEcap } from "../../src/format/ecap.js";
import { FlPteFormat } from "../../src/format/fl-pte.js";
import { encodeSlPte, slDirtyBits, SL_PTE_D } from "../../src/format/sl-pte.js";
import { vtdTableGeometry } from "../../src/format/table-geometry.js";
import { encodeVtdS1, IOMMU_HWPT_DATA_VTD_S1 } from "../../src/format/uapi.js";
import { HOST_ECAP } from "../../src/hw/host-capabilities.js";
import { VtdUnit } from "../../src/hw/vtd-unit.js";
import { vtdPlugin } from "../../src/plugin.js";

const PAGE = 4096;

/** HOST_ECAP with SLADS (bit 45) cleared: a scalable-mode unit without second-level A/D. */
function ecapWithoutSlads(): Uint32Array {
  return encodeEcap({ ...decodeEcap(HOST_ECAP), SLADS: 0 });
}

/**
 * A host with a VT-d unit (the default one, or one built from `ecap`), a VM whose RAM is backed by host pages
 * of `backingPageShift` and mapped at IOVA = GPA in an IOAS, and a bound device.
 */
function host(options: { ecap?: Uint32Array; backingPageShift?: number } = {}) {
  // 4 KiB-backed RAM is mapped page by page into the IOAS: keep it small.
  const bytes = options.backingPageShift === 12 ? 2 ** 27 : 2 ** 30;
  const platform = new Platform({ plugins: [vtdPlugin] });
  const unit = options.ecap === undefined ? (unwrap(platform.createUnit("vtd")) as VtdUnit) : new VtdUnit(platform.host, 7, { ecap: options.ecap });
  const vm = platform.createVm({ memoryBytes: bytes, backingPageShift: options.backingPageShift });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, 0x100, "nvme");
  const devId = unwrap(ctx.bindDevice(device));
  const ioas = unwrap(ctx.ioasAlloc());
  unwrap(ctx.ioasMap({ ioasId: ioas, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: vm.memory, gpa: 0, length: bytes, iova: 0 }));
  const pages = new GuestPageAllocator(vm.memory, bytes - 32 * 2 ** 20, bytes);
  const s1 = (): PageTableBuilder => PageTableBuilder.create(new FlPteFormat({ haw: 48, fl1gp: true }), vtdTableGeometry(4, 47), new GuestTableStore(vm.memory, pages))!;
  const hwpt = (id: number): HwptPaging => ctx.list(IommufdObjectType.HWPT_PAGING).find((o) => o.id === id) as HwptPaging;
  return { platform, unit, vm, ctx, device, devId, ioas, s1, hwpt };
}

/** The low half of the stage-2 leaf that translates `gpa` in a paging HWPT's table. */
function leafLo(h: ReturnType<typeof host>, hwptId: number, gpa: number): { lo: number; level: number } {
  const out = newWalkResult();
  h.hwpt(hwptId).domain.table.walk(gpa, Perm.Read, out);
  expect(out.ok).toBe(true);
  const halves = new Uint32Array(2);
  h.platform.host.memory.read64Halves(out.entryAddress, halves);
  return { lo: halves[0]!, level: out.level };
}

describe("VT-d second-level dirty bit format", () => {
  it("keeps D in bit 9 of a leaf (Linux DMA_SL_PTE_DIRTY_BIT) and clears only that bit", () => {
    expect(SL_PTE_D).toBe(0x200);
    const leaf = encodeSlPte({ R: 1, W: 1, PS: 1, A: 1, ADDR: 0x4020_0000 });
    const out = new Uint32Array(2);
    slDirtyBits.withDirty(leaf[0]!, leaf[1]!, 2, true, out);
    expect(out[0]! ^ leaf[0]!).toBe(1 << 9);
    expect(slDirtyBits.isDirty(out[0]!, out[1]!, 2)).toBe(true);
    const cleared = new Uint32Array(2);
    slDirtyBits.withDirty(out[0]!, out[1]!, 2, false, cleared);
    expect([...cleared]).toEqual([...leaf]);
  });
});

describe("VT-d physical unit: dirty tracking (second-level A/D, ECAP.SLADS)", () => {
  it("advertises IOMMU_HW_CAP_DIRTY_TRACKING in GET_HW_INFO when the unit has SLADS, and not without it", () => {
    expect(unwrap(host().ctx.getHwInfo({ flags: 0, devId: host().devId, dataLen: 0 })).capabilities & HwCapability.DIRTY_TRACKING).toBe(HwCapability.DIRTY_TRACKING);
    const bare = host({ ecap: ecapWithoutSlads() });
    expect(unwrap(bare.ctx.getHwInfo({ flags: 0, devId: bare.devId, dataLen: 0 })).capabilities & HwCapability.DIRTY_TRACKING).toBe(0);
  });

  it("refuses IOMMU_HWPT_ALLOC_DIRTY_TRACKING with EOPNOTSUPP on a unit without SLADS (intel_iommu_domain_alloc_paging_flags)", () => {
    const bare = host({ ecap: ecapWithoutSlads() });
    expect(bare.ctx.hwptAlloc({ flags: HwptAllocFlag.DIRTY_TRACKING, devId: bare.devId, ptId: bare.ioas })).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    expect(bare.ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING, devId: bare.devId, ptId: bare.ioas })).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    expect(bare.ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId: bare.devId, ptId: bare.ioas }).ok).toBe(true);
    const h = host();
    expect(h.ctx.hwptAlloc({ flags: HwptAllocFlag.DIRTY_TRACKING | 1 << 7, devId: h.devId, ptId: h.ioas })).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    expect(h.ctx.hwptAlloc({ flags: HwptAllocFlag.DIRTY_TRACKING, devId: h.devId, ptId: h.ioas }).ok).toBe(true);
  });

  it("refuses to attach a device behind a unit without SLADS to a dirty-tracking domain (EINVAL, paging_domain_compatible)", () => {
    const h = host();
    const parent = unwrap(h.ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING, devId: h.devId, ptId: h.ioas }));
    const bareUnit = new VtdUnit(h.platform.host, 9, { ecap: ecapWithoutSlads() });
    const other = unwrap(h.ctx.bindDevice(h.platform.createDevice(bareUnit, 0x200, "other")));
    expect(h.ctx.attach(other, parent)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(h.ctx.attach(h.devId, parent).ok).toBe(true);
  });

  it("sets D in the second-level leaf of a nested write only, 4 KiB leaves", () => {
    const h = host({ backingPageShift: 12 });
    const parent = unwrap(h.ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING, devId: h.devId, ptId: h.ioas }));
    const t = h.s1();
    unwrap(t.map(0x40_0000, 0x200_0000, 4 * PAGE, Perm.ReadWrite | Perm.User));
    const nested = unwrap(h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: parent, data: { type: IOMMU_HWPT_DATA_VTD_S1, bytes: encodeVtdS1({ flags: 0, pgtblAddr: t.root, addrWidth: 48 }) } }));
    unwrap(h.ctx.attach(h.devId, nested));
    unwrap(h.ctx.hwptSetDirtyTracking(parent, DIRTY_TRACKING_ENABLE));
    expect(h.device.read(0x40_0000, 8).ok).toBe(true);
    expect(h.device.write(0x40_1000 + 16, Uint8Array.of(1, 2)).ok).toBe(true);
    const read = leafLo(h, parent, 0x200_0000);
    const written = leafLo(h, parent, 0x200_1000);
    expect(read.level).toBe(1);
    expect(read.lo & SL_PTE_D).toBe(0);
    expect(written.lo & SL_PTE_D).toBe(SL_PTE_D);
    // Bits other than D stay as the host wrote them (R, W), and the guest's first-level tables were only read.
    expect(written.lo & 3).toBe(3);
  });

  it("sets D in a 2 MiB second-level leaf as a whole, and not while tracking is off", () => {
    const h = host({ backingPageShift: 21 });
    const parent = unwrap(h.ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING, devId: h.devId, ptId: h.ioas }));
    unwrap(h.ctx.attach(h.devId, parent));
    expect(h.device.write(0x1000_3000, Uint8Array.of(9)).ok).toBe(true);
    expect(leafLo(h, parent, 0x1000_0000).lo & SL_PTE_D).toBe(0);
    unwrap(h.ctx.hwptSetDirtyTracking(parent, DIRTY_TRACKING_ENABLE));
    expect(h.device.write(0x1000_3000, Uint8Array.of(9)).ok).toBe(true);
    const leaf = leafLo(h, parent, 0x1000_0000);
    expect(leaf.level).toBe(2);
    expect(leaf.lo & (SL_PTE_D | 0x80)).toBe(SL_PTE_D | 0x80);
  });

  it("marks a write through a translation the IOTLB cached from a read (the clean leaf walks again)", () => {
    const h = host({ backingPageShift: 12 });
    const parent = unwrap(h.ctx.hwptAlloc({ flags: HwptAllocFlag.DIRTY_TRACKING, devId: h.devId, ptId: h.ioas }));
    unwrap(h.ctx.attach(h.devId, parent));
    unwrap(h.ctx.hwptSetDirtyTracking(parent, DIRTY_TRACKING_ENABLE));
    expect(h.device.read(0x300_0000, 8).ok).toBe(true);
    expect(h.device.read(0x300_0000, 8).ok).toBe(true);
    expect(leafLo(h, parent, 0x300_0000).lo & SL_PTE_D).toBe(0);
    expect(h.device.write(0x300_0000, Uint8Array.of(1)).ok).toBe(true);
    expect(leafLo(h, parent, 0x300_0000).lo & SL_PTE_D).toBe(SL_PTE_D);
  });
});
