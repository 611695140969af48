import { describe, expect, it } from "vitest";
import { IommufdObjectType, newIotlbHit, NO_PASID, Perm, unwrap, type IommufdContext } from "@viommu/core";
import { readStruct, writeStruct } from "../../src/format/byte-layout.js";
import { getIommuCapabilitiesOutputLayout, HV_IOMMU_PGSIZES_X86 } from "../../src/format/iommu-discovery.js";
import { hwptHypervS1Layout, IOMMU_HWPT_DATA_HYPERV_S1, IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV, viommuInvalidateHypervLayout } from "../../src/format/iommufd-uapi.js";
import { HypervNestedDomain } from "../../src/hw/hyperv-nested-domain.js";
import { HypervUnit } from "../../src/hw/hyperv-unit.js";
import { DATA_GPA, fiveLevelPlugin, hvBed, IOVA } from "../support.js";

function viommuOf(ctx: IommufdContext): number {
  return ctx.list(IommufdObjectType.VIOMMU)[0]!.id;
}

describe("HypervUnit: device domains nested over the host stage 2", () => {
  it("reports its capabilities as the GET_IOMMU_CAPABILITIES output: PRESENT, S1, S2, 4K/2M/1G, 48-bit IOVAs", () => {
    const { bed, unit, v } = hvBed();
    const info = unwrap(unit.hwInfo(v.devices[0]!.device, undefined));
    const caps = readStruct(getIommuCapabilitiesOutputLayout, info.data);
    expect(caps).toMatchObject({ size: 24, max_iova_width: 48, max_pasid_width: 0, pgsize_bitmap: HV_IOMMU_PGSIZES_X86 });
    expect(caps.iommu_cap).toMatchObject({ PRESENT: 1, S1: 1, S2: 1, S1_5LVL: 0, PASID: 0, ATS: 0, PRI: 0 });
    expect(unit.hwInfo(v.devices[0]!.device, 99).ok).toBe(false);
    bed.dispose();
  });

  it("a 5-level unit offers S1_5LVL and 57-bit IOVAs, and the guest then builds 5-level tables that translate", () => {
    const { bed, unit, v, driver } = hvBed({ plugin: fiveLevelPlugin });
    const caps = readStruct(getIommuCapabilitiesOutputLayout, unwrap(unit.hwInfo(v.devices[0]!.device, undefined)).data);
    expect(caps.max_iova_width).toBe(57);
    expect(caps.iommu_cap.S1_5LVL).toBe(1);
    expect(driver.levels).toBe(5);
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    const high = 2 ** 50;
    unwrap(driver.map(d, high, DATA_GPA, 0x1000, Perm.ReadWrite));
    expect(v.devices[0]!.device.write(high + 4, Uint8Array.of(7)).ok).toBe(true);
    expect(v.vm.memory.read8(DATA_GPA + 4)).toBe(7);
    expect((unit.domainOf(0x100) as HypervNestedDomain).levels).toBe(5);
    bed.dispose();
  });

  it("tags IOTLB entries with the device-domain id: a domain flush drops exactly that domain's entries", () => {
    const { bed, unit, v, driver } = hvBed();
    const a = unwrap(driver.createDomain());
    const b = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, a));
    unwrap(driver.attach(0x18, b));
    unwrap(driver.map(a, IOVA, DATA_GPA, 0x2000, Perm.ReadWrite));
    unwrap(driver.map(b, IOVA, DATA_GPA + 0x10_0000, 0x2000, Perm.ReadWrite));
    for (const d of v.devices) for (const off of [0, 0x1000]) expect(d.device.read(IOVA + off, 4).ok).toBe(true);
    const vmid = (unit.domainOf(0x100) as HypervNestedDomain).parent.vmid;
    const hit = newIotlbHit();
    expect(unit.iotlb.lookup(vmid, a, IOVA, hit) && unit.iotlb.lookup(vmid, b, IOVA, hit)).toBe(true);
    unwrap(driver.flush(a));
    expect(unit.iotlb.lookup(vmid, a, IOVA, hit) || unit.iotlb.lookup(vmid, a, IOVA + 0x1000, hit)).toBe(false);
    expect(unit.iotlb.lookup(vmid, b, IOVA, hit) && unit.iotlb.lookup(vmid, b, IOVA + 0x1000, hit)).toBe(true);
    bed.dispose();
  });

  it("a ranged flush (FLUSH_DEVICE_DOMAIN_LIST) drops only the pages it names", () => {
    const { bed, unit, v, driver } = hvBed();
    const a = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, a));
    unwrap(driver.map(a, IOVA, DATA_GPA, 0x4000, Perm.ReadWrite));
    for (let p = 0; p < 4; p++) expect(v.devices[0]!.device.read(IOVA + p * 0x1000, 4).ok).toBe(true);
    const vmid = (unit.domainOf(0x100) as HypervNestedDomain).parent.vmid;
    unwrap(driver.flush(a, IOVA + 0x1000, 0x1000));
    const hit = newIotlbHit();
    expect([0, 1, 2, 3].map((p) => unit.iotlb.lookup(vmid, a, IOVA + p * 0x1000, hit))).toEqual([true, false, true, true]);
    bed.dispose();
  });

  it("a stage-2 unmap reaches every nested translation cached through that stage 2", () => {
    const { bed, v, driver } = hvBed();
    const a = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, a));
    unwrap(driver.map(a, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    const dev = v.devices[0]!.device;
    expect(dev.read(IOVA, 4).ok).toBe(true);
    // The VMM takes the guest page away (balloon): the cached IOVA → HPA must not outlive it.
    const area = v.iommufd.ioasUnmap({ ioasId: v.ioasId, iova: 0, length: 2 ** 31 });
    expect(area.ok).toBe(true);
    const r = dev.read(IOVA, 4);
    expect(r.ok).toBe(false);
    expect(bed.platform.host.memory.violations).toEqual([]);
    bed.dispose();
  });

  it("keeps DMA faults in the hypervisor's log and tells the guest nothing", () => {
    const { bed, unit, v, driver } = hvBed();
    const a = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, a));
    unwrap(driver.map(a, IOVA, DATA_GPA, 0x1000, Perm.Read));
    expect(v.devices[0]!.device.write(IOVA, Uint8Array.of(1)).ok).toBe(false);
    expect(v.devices[0]!.device.read(IOVA + 0x5000, 4).ok).toBe(false);
    expect(v.devices[0]!.device.read(IOVA, 4, 3).ok).toBe(false); // a PASID: the pvIOMMU attaches whole devices
    expect(unit.faults.list().map((f) => [f.requesterId, f.iova, f.reason, f.domainId])).toEqual([
      [0x100, IOVA, "permission", a],
      [0x100, IOVA + 0x5000, "translation", a],
      [0x100, IOVA, "translation", a],
    ]);
    bed.poll();
    expect(driver.readEvents()).toEqual([]);
    bed.dispose();
  });

  it("a stage-1 table the guest points outside its RAM faults at stage 2, touching nothing", () => {
    const { bed, v, driver } = hvBed();
    const a = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, a));
    unwrap(driver.map(a, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    // Corrupt the level-4 entry of the guest's own table: point the level-3 table beyond RAM.
    const leaf = v.devices[0]!.device.translate(IOVA, false, NO_PASID);
    expect(leaf.ok).toBe(true);
    const root = (bed.units[0] as HypervUnit).domainOf(0x100) as HypervNestedDomain;
    v.vm.memory.write64Halves(root.s1Root, 0x4000_0000 | 0x7, 0x1); // 0x1_4000_0000 > 2 GiB of RAM
    unwrap(driver.flush(a));
    const r = v.devices[0]!.device.read(IOVA, 4);
    expect(r.ok).toBe(false);
    expect(r.ok ? 0 : r.stage).toBe(2);
    expect(bed.platform.host.memory.violations).toEqual([]);
    bed.dispose();
  });
});

describe("HypervViommu: the iommufd payloads of the hypervisor's work", () => {
  it("refuses nested data it cannot honour with the kernel's errno", () => {
    const { bed, v } = hvBed();
    const ctx = v.iommufd;
    const alloc = (bytes: Uint8Array, type = IOMMU_HWPT_DATA_HYPERV_S1): string | undefined => {
      const r = ctx.hwptAlloc({ flags: 0, devId: v.devices[0]!.devId, ptId: viommuOf(ctx), data: { type, bytes } });
      if (r.ok) ctx.destroy(r.value);
      return r.ok ? undefined : r.error.errno;
    };
    const good = { domain_id: 7, s1_root: BigInt(DATA_GPA) };
    expect(alloc(writeStruct(hwptHypervS1Layout, good))).toBeUndefined();
    expect(alloc(writeStruct(hwptHypervS1Layout, good), 0x1234)).toBe("EOPNOTSUPP");
    expect(alloc(writeStruct(hwptHypervS1Layout, { ...good, s1_root: BigInt(DATA_GPA + 8) }))).toBe("EINVAL");
    expect(alloc(writeStruct(hwptHypervS1Layout, { ...good, domain_id: 0 }))).toBe("EINVAL");
    expect(alloc(writeStruct(hwptHypervS1Layout, { ...good, flags: { FIVE_LEVEL: 1 } }))).toBe("EOPNOTSUPP");
    const reserved = writeStruct(hwptHypervS1Layout, good);
    reserved[5] = 1;
    expect(alloc(reserved)).toBe("EOPNOTSUPP");
    expect(alloc(writeStruct(hwptHypervS1Layout, good).subarray(0, 8))).toBe("EINVAL");
    bed.dispose();
  });

  it("a vIOMMU invalidation stops at the first malformed entry and reports how many it handled", () => {
    const { bed, v } = hvBed();
    const entry = (values: Parameters<typeof writeStruct<typeof viommuInvalidateHypervLayout>>[1]): Uint8Array => writeStruct(viommuInvalidateHypervLayout, values);
    const entries = new Uint8Array(24 * 3);
    entries.set(entry({ domain_id: 3, flags: { ALL: 1 } }), 0);
    entries.set(entry({ domain_id: 3, page_number: 16n, page_mask_shift: 4 }), 24);
    entries.set(entry({ domain_id: 3, page_number: 17n, page_mask_shift: 4 }), 48); // not aligned to 16 pages
    const r = v.iommufd.hwptInvalidate({ hwptId: viommuOf(v.iommufd), dataType: IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV, entryLen: 24, entryNum: 3, entries });
    expect(r.handled).toBe(2);
    expect(r.result.ok ? undefined : r.result.error.errno).toBe("EINVAL");
    entries[24 + 20] = 1; // reserved byte of the second entry
    const r2 = v.iommufd.hwptInvalidate({ hwptId: viommuOf(v.iommufd), dataType: IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV, entryLen: 24, entryNum: 3, entries });
    expect(r2.handled).toBe(1);
    bed.dispose();
  });

  it("attaching a PASID of a device is not supported", () => {
    const { bed, v, unit } = hvBed();
    // iommufd refuses first (the parent was not allocated PASID-capable: EINVAL, iommufd_hwpt_pasid_compat);
    // the unit itself refuses any PASID attachment.
    expect(v.iommufd.attach(v.devices[0]!.devId, v.parentHwptId, 5).ok).toBe(false);
    const device = v.devices[0]!.device;
    const r = unit.attachDevice(device, unit.domainOf(device.requesterId)!, 5);
    expect(r.ok ? undefined : r.error.errno).toBe("EOPNOTSUPP");
    bed.dispose();
  });

  it("is a PhysicalIommu of vendor hyperv with a name per unit", () => {
    const { bed } = hvBed();
    expect(bed.units[0]).toBeInstanceOf(HypervUnit);
    expect(bed.units[0]!.vendor).toBe("hyperv");
    expect(bed.units[0]!.name).toBe("hv-iommu0");
    bed.dispose();
  });
});
