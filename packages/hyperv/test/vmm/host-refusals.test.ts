import { describe, expect, it } from "vitest";
import { IommufdObjectType, Perm, unwrap, type HostLogKind } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import { HvDeviceDomainType } from "../../src/format/device-domain.js";
import { logicalDeviceId } from "../../src/format/device-id.js";
import { HvStatus } from "../../src/format/hv-status.js";
import {
  HV_PARTITION_ID_SELF,
  hvAttachDeviceDomain,
  hvConfigureDeviceDomain,
  hvCreateDeviceDomain,
  hvDeleteDeviceDomain,
  hvDetachDevice,
  hvFlushDeviceDomain,
  hvFlushDeviceDomainList,
  hvMapDeviceGpaPages,
  hvUnmapDeviceGpaPages,
} from "../../src/format/hypercalls.js";
import type { HypervGuestDriver } from "../../src/guest/hyperv-driver.js";
import { hypervPlugin } from "../../src/plugin.js";
import type { HypervDevice } from "../../src/vmm/hyperv-device.js";
import { statusOfErrno } from "../../src/vmm/status-of-errno.js";
import { refuse } from "../refusing-iommufd.js";
import { DATA_GPA, dd, hvBed, IOVA, rawCall } from "../support.js";

const S = HvStatus;
const S2 = HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2;

function logOf(bed: Testbed, kind: HostLogKind): string[] {
  return bed.platform.host.log.entries({ kind }).map((e) => `${e.errno ?? "-"} ${e.message}`);
}

describe("flushes the host refuses", () => {
  it("FLUSH_DEVICE_DOMAIN and the list flush answer the errno's status, are logged, and count nothing", () => {
    const { bed, v, driver, iommu } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    const before = iommu.stats.forwarded;
    const r = refuse(v.iommufd, "hwptInvalidate", "ENOMEM");
    expect(rawCall(v, hvFlushDeviceDomain, { input: { device_domain: dd(d) } }).status).toBe(S.HV_STATUS_NO_RESOURCES);
    const reps = [{ iova: { page_number: 0, page_mask_shift: 0 } }, { iova: { page_number: 16, page_mask_shift: 4 } }];
    expect(rawCall(v, hvFlushDeviceDomainList, { input: { device_domain: dd(d), flags: { iommu_format: 1 } }, reps })).toMatchObject({ status: S.HV_STATUS_NO_RESOURCES, repsCompleted: 0 });
    expect(iommu.stats.forwarded).toBe(before);
    const log = logOf(bed, "invalidation-refused");
    expect(log).toHaveLength(2);
    expect(log[0]).toMatch(new RegExp(`^ENOMEM flush of device domain ${d} on hv-iommu0: 0 of 1 entries handled`));
    r.lift();
    expect(rawCall(v, hvFlushDeviceDomainList, { input: { device_domain: dd(d), flags: { iommu_format: 1 } }, reps })).toMatchObject({ status: S.HV_STATUS_SUCCESS, repsCompleted: 2 });
    expect(iommu.stats.forwarded).toBe(before + 2);
    expect(bed.dispose()).toEqual([]);
  });

  it("one unit's refusal does not keep the flush from the others: their stale translations go", () => {
    const bed = unwrap(
      Testbed.create({
        plugin: hypervPlugin,
        vms: [{ devices: [{ rid: 0x100, guestRid: 0x10, instance: 0 }, { rid: 0x200, guestRid: 0x20, instance: 1 }], instances: 2, memoryBytes: 2 ** 31 }],
      }),
    );
    const v = bed.vms[0]!;
    const driver = v.drivers[0] as HypervGuestDriver;
    const iommu = v.iommus[0] as HypervDevice;
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.attach(0x20, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    for (const dev of v.devices) expect(dev.device.read(IOVA, 4).ok).toBe(true);
    const first = iommu.partition.instances()[0]!.viommuId;
    refuse(v.iommufd, "hwptInvalidate", "EIO", (a) => a.hwptId === first);
    // The driver clears the PTE, then flushes: unit 0 refuses, unit 1 must still drop the page.
    expect(driver.unmap(d, IOVA, 0x1000).ok).toBe(false);
    expect(v.devices[1]!.device.read(IOVA, 4).ok).toBe(false);
    expect(logOf(bed, "invalidation-refused").length).toBeGreaterThan(0);
    bed.dispose();
  });
});

describe("configuration the host refuses", () => {
  it("ATTACH to a paging domain whose HWPT the host refuses: the errno's status, logged, the device stays where it was", () => {
    const { bed, v, driver, iommu } = hvBed();
    const d = unwrap(driver.createDomain());
    const r = refuse(v.iommufd, "hwptAlloc", "ENOMEM");
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_NO_RESOURCES);
    expect(iommu.partition.devices.get(0x10)!.domain).toBe(0);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(true);
    expect(logOf(bed, "configuration-refused")).toEqual([expect.stringMatching(new RegExp(`^ENOMEM nested HWPT of device domain ${d} `))]);
    r.lift();
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(bed.dispose()).toEqual([]);
  });

  it("CONFIGURE is all or nothing: when the host refuses one device's move, every device keeps the old table", () => {
    const { bed, v, driver } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.attach(0x18, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    const nested = v.iommufd.list(IommufdObjectType.HWPT_NESTED).length;
    const empty = v.pages.allocate(1)!;
    const configure = (): number => rawCall(v, hvConfigureDeviceDomain, { input: { device_domain: dd(d), settings: { flags: { translation_enabled: 1 }, page_table_root: BigInt(empty) } } }).status;
    const second = v.devices[1]!.devId;
    const r = refuse(v.iommufd, "attach", "EBUSY", (devId) => devId === second);
    expect(configure()).toBe(statusOfErrno("EBUSY"));
    for (const dev of v.devices) expect(dev.device.read(IOVA, 4).ok).toBe(true);
    expect(v.iommufd.list(IommufdObjectType.HWPT_NESTED)).toHaveLength(nested);
    expect(logOf(bed, "configuration-refused")).toHaveLength(1);
    r.lift();
    expect(configure()).toBe(S.HV_STATUS_SUCCESS);
    for (const dev of v.devices) expect(dev.device.read(IOVA, 4).ok).toBe(false);
    expect(bed.dispose()).toEqual([]);
  });

  it("DELETE whose HWPT the host will not destroy is refused and keeps the domain; it goes once the host lets go", () => {
    const { bed, v, driver, iommu } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.attach(0x10, unwrap(driver.createDomain())));
    const hwpt = iommu.partition.domains!.get(d)!.hwpts.values().next().value!;
    const r = refuse(v.iommufd, "destroy", "EBUSY", (id) => id === hwpt);
    expect(rawCall(v, hvDeleteDeviceDomain, { input: { device_domain: dd(d) } }).status).toBe(S.HV_STATUS_OPERATION_DENIED);
    expect(iommu.partition.domains!.get(d)).toBeDefined();
    expect(logOf(bed, "other")).toEqual([expect.stringMatching(new RegExp(`^EBUSY HWPT ${hwpt} of device domain ${d} not destroyed`))]);
    r.lift();
    expect(rawCall(v, hvDeleteDeviceDomain, { input: { device_domain: dd(d) } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(iommu.partition.domains!.get(d)).toBeUndefined();
    expect(bed.dispose()).toEqual([]);
  });

  it("DETACH_DEVICE the host refuses leaves the device given to the partition, and says so", () => {
    const { bed, v, driver, iommu } = hvBed({ guest: { variant: "direct-attach" } });
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    expect(iommu.partition.devices.get(0x10)!.direct).toBeDefined();
    const r = refuse(v.iommufd, "detach", "EBUSY");
    const detach = (): number => rawCall(v, hvDetachDevice, { input: { partition_id: HV_PARTITION_ID_SELF, logical_devid: logicalDeviceId(0x10) } }).status;
    expect(detach()).toBe(S.HV_STATUS_OPERATION_DENIED);
    expect(iommu.partition.devices.get(0x10)!.direct).toBeDefined();
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(true);
    expect(logOf(bed, "configuration-refused")).toHaveLength(1);
    r.lift();
    expect(detach()).toBe(S.HV_STATUS_SUCCESS);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(false);
    bed.dispose();
  });

  it("a device assigned at an id the guest put in a domain the host cannot realise is refused, not left in identity", () => {
    const { bed, v, driver, iommu } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    const dev = v.devices[0]!;
    unwrap(iommu.unassignDevice(0x10));
    // The guest names logical id 0x10 again (no device there now) and puts it in its paging domain.
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_SUCCESS);
    const r = refuse(v.iommufd, "hwptAlloc", "ENOMEM");
    const assigned = iommu.assignDevice(dev.device, dev.devId, 0x10);
    expect(assigned.ok ? undefined : assigned.error.errno).toBe("ENOMEM");
    expect(dev.device.read(DATA_GPA, 4).ok).toBe(false);
    expect(iommu.partition.devices.get(0x10)!.passthrough).toBeUndefined();
    r.lift();
    unwrap(iommu.assignDevice(dev.device, dev.devId, 0x10));
    expect(dev.device.read(IOVA, 4).ok).toBe(true);
    expect(dev.device.read(DATA_GPA, 4).ok).toBe(false);
    bed.dispose();
  });
});

describe("stage-2 pages the host refuses", () => {
  function s2(v: Parameters<typeof rawCall>[0], id: number): void {
    expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: dd(id, S2) } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(id, S2), device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_SUCCESS);
  }
  const map = (v: Parameters<typeof rawCall>[0], id: number, iova: number, gpaPages: number[]): ReturnType<typeof rawCall> =>
    rawCall(v, hvMapDeviceGpaPages, {
      input: { device_domain: dd(id, S2), map_flags: { READABLE: 1, WRITABLE: 1 }, target_device_va_base: BigInt(iova) },
      reps: gpaPages.map((p) => ({ gpa_page_number: BigInt(p) })),
    });
  const unmap = (v: Parameters<typeof rawCall>[0], id: number, iova: number, pages: number): ReturnType<typeof rawCall> =>
    rawCall(v, hvUnmapDeviceGpaPages, { input: { device_domain: dd(id, S2), target_device_va_base: BigInt(iova) }, repCount: pages });
  const page = DATA_GPA / 4096;

  it("a refused map completes no rep, is logged, and neither counts pages nor forwards", () => {
    const { bed, v, iommu } = hvBed();
    s2(v, 40);
    const before = iommu.stats.forwarded;
    const r = refuse(v.iommufd, "ioasMap", "ENOSPC");
    expect(map(v, 40, IOVA, [page, page + 1])).toMatchObject({ status: S.HV_STATUS_NO_RESOURCES, repsCompleted: 0 });
    expect(iommu.partition.domains!.s2PageCount).toBe(0);
    expect(iommu.stats.forwarded).toBe(before);
    expect(logOf(bed, "other")).toEqual([expect.stringMatching(/^ENOSPC map of IOVA pages 0x100\+2 in stage-2 device domain 40/)]);
    r.lift();
    expect(map(v, 40, IOVA, [page, page + 1]).status).toBe(S.HV_STATUS_SUCCESS);
    expect(iommu.stats.forwarded).toBe(before + 1);
    expect(bed.dispose()).toEqual([]);
  });

  it("an unmap refused part way keeps the page count equal to what the host still maps", () => {
    const { bed, v, iommu } = hvBed();
    s2(v, 41);
    // Two runs (the GPA pages are not consecutive): two host mappings.
    expect(map(v, 41, IOVA, [page, page + 1, page + 9, page + 10]).status).toBe(S.HV_STATUS_SUCCESS);
    const r = refuse(v.iommufd, "ioasUnmap", "EBUSY", (a) => a.iova === IOVA + 0x2000);
    expect(unmap(v, 41, IOVA, 4)).toMatchObject({ status: S.HV_STATUS_OPERATION_DENIED, repsCompleted: 0 });
    const domains = iommu.partition.domains!;
    expect(domains.s2PageCount).toBe(domains.get(41)!.s2!.size);
    expect([0, 1, 2, 3].map((p) => v.devices[0]!.device.read(IOVA + p * 4096, 4).ok)).toEqual([false, false, true, true]);
    expect(logOf(bed, "other")).toHaveLength(1);
    r.lift();
    expect(unmap(v, 41, IOVA, 4).status).toBe(S.HV_STATUS_SUCCESS);
    expect(domains.s2PageCount).toBe(0);
    expect(bed.dispose()).toEqual([]);
  });

  it("an unmap whose kept part the host will not map again reports it, and the pages it lost are no longer counted", () => {
    const { bed, v, iommu } = hvBed();
    s2(v, 42);
    expect(map(v, 42, IOVA, [page, page + 1, page + 2, page + 3]).status).toBe(S.HV_STATUS_SUCCESS);
    refuse(v.iommufd, "ioasMap", "ENOMEM");
    expect(unmap(v, 42, IOVA + 0x1000, 1).status).toBe(S.HV_STATUS_NO_RESOURCES);
    const domains = iommu.partition.domains!;
    expect(domains.s2PageCount).toBe(domains.get(42)!.s2!.size);
    for (let p = 0; p < 4; p++) expect(v.devices[0]!.device.read(IOVA + p * 4096, 4).ok).toBe(domains.get(42)!.s2!.has(IOVA / 4096 + p));
    bed.dispose();
  });
});

describe("devices and interrupts", () => {
  it("unassignDevice whose detach the host refuses answers its errno and leaves the device as it was", () => {
    const { bed, v, iommu } = hvBed();
    const r = refuse(v.iommufd, "detach", "EBUSY");
    const u = iommu.unassignDevice(0x10);
    expect(u.ok ? undefined : u.error.errno).toBe("EBUSY");
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(true);
    expect(iommu.partition.devices.get(0x10)!.passthrough).toBeDefined();
    r.lift();
    unwrap(iommu.unassignDevice(0x10));
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(false);
    bed.dispose();
  });

  it("an MSI the remapping table drops is recorded in the host's log", () => {
    const { bed, v } = hvBed();
    v.devices[0]!.device.signalMsi({ address: 0xfee00000, data: 0x31 });
    expect(v.vm.interrupts.take()).toEqual([]);
    expect(logOf(bed, "other")).toEqual([expect.stringMatching(/^- MSI of device 0x10 .* blocked: NO_ENTRY/)]);
    bed.dispose();
  });

  it("a vIOMMU the host will not destroy at teardown is logged", () => {
    const { bed, v, iommu } = hvBed();
    const viommu = iommu.partition.instances()[0]!.viommuId;
    refuse(v.iommufd, "destroy", "EBUSY", (id) => id === viommu);
    iommu.destroy();
    expect(logOf(bed, "other")).toEqual([expect.stringMatching(new RegExp(`^EBUSY vIOMMU ${viommu} on hv-iommu0 not destroyed`))]);
    bed.dispose();
  });
});
