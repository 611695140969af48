import { describe, expect, it } from "vitest";
import { Perm, unwrap } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import { logicalDeviceId } from "../../src/format/device-id.js";
import { HvStatus } from "../../src/format/hv-status.js";
import { HV_PARTITION_ID_SELF, hvAttachDeviceDomain, hvDetachDeviceDomain } from "../../src/format/hypercalls.js";
import type { HypervNestedDomain } from "../../src/hw/hyperv-nested-domain.js";
import { hypervPlugin } from "../../src/plugin.js";
import type { HypervDevice } from "../../src/vmm/hyperv-device.js";
import { refuse } from "../refusing-iommufd.js";
import { DATA_GPA, dd, hvBed, IOVA, rawCall } from "../support.js";

const S = HvStatus;
const errno = (r: { ok: boolean; error?: { errno: string } }): string | undefined => (r.ok ? undefined : r.error!.errno);

describe("the emulated-device contract: options and guest queues", () => {
  it("keeps the options it was created with", () => {
    const { bed, v, iommu } = hvBed();
    expect(iommu.options.vm).toBe(v.vm);
    expect(iommu.options.iommufd).toBe(v.iommufd);
    expect(iommu.options.unit).toBe(bed.units[0]);
    const { mode, parentHwptId, ioasId, anchorDevId } = iommu.options;
    expect({ mode, parentHwptId, ioasId, anchorDevId }).toEqual({ mode: "nested", parentHwptId: v.parentHwptId, ioasId: v.ioasId, anchorDevId: v.devices[0]!.devId });
    bed.dispose();
  });

  it("has no guest-visible queue: everything is a hypercall", () => {
    const { bed, iommu } = hvBed();
    expect(iommu.guestQueues()).toEqual([]);
    bed.dispose();
  });
});

describe("unassignDevice (hot-unplug)", () => {
  it("blocks the device's DMA, drops its domain membership and interrupt entries, and frees its logical id", () => {
    const { bed, v, driver, iommu, unit } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    const msi = unwrap(driver.mapInterrupt(0x10, 0x41, 1));
    const [a, b] = [v.devices[0]!, v.devices[1]!];
    // The IOTLB holds the device's translation now.
    expect(a.device.read(IOVA, 4).ok).toBe(true);
    unwrap(iommu.unassignDevice(0x10));
    expect(a.device.read(IOVA, 4).ok).toBe(false);
    expect(a.device.read(DATA_GPA, 4).ok).toBe(false);
    expect(unit.domainOf(a.device.requesterId)).toBeUndefined();
    v.vm.interrupts.take();
    a.device.signalMsi(msi);
    expect(v.vm.interrupts.take()).toEqual([]);
    expect(iommu.partition.domains!.get(d)!.attached.has(0x10)).toBe(false);
    expect(iommu.partition.interrupts.size).toBe(0);
    // The old logical id names no device now.
    expect(rawCall(v, hvDetachDeviceDomain, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_NOT_FOUND);
    expect(errno(iommu.unassignDevice(0x10))).toBe("ENOENT");
    // Another device takes the id: default domain, no interrupt entry inherited.
    unwrap(iommu.unassignDevice(0x18));
    unwrap(iommu.assignDevice(b.device, b.devId, 0x10));
    expect(iommu.partition.devices.get(0x10)!.domain).toBe(0);
    expect(b.device.read(DATA_GPA, 4).ok).toBe(true);
    b.device.signalMsi(msi);
    expect(v.vm.interrupts.take()).toEqual([]);
    expect(bed.dispose()).toEqual([]);
  });

  it("answers ENOENT where nothing is assigned: an empty id, an id the guest only named, a device of another instance", () => {
    const bed = unwrap(
      Testbed.create({
        plugin: hypervPlugin,
        vms: [{ devices: [{ rid: 0x100, guestRid: 0x10, instance: 0 }, { rid: 0x200, guestRid: 0x20, instance: 1 }], instances: 2, memoryBytes: 2 ** 31 }],
      }),
    );
    const v = bed.vms[0]!;
    const [first, second] = v.iommus as HypervDevice[];
    expect(errno(first!.unassignDevice(0x55))).toBe("ENOENT");
    const d = unwrap(v.drivers[0]!.createDomain());
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: logicalDeviceId(0x33) } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(errno(first!.unassignDevice(0x33))).toBe("ENOENT");
    expect(errno(first!.unassignDevice(0x20))).toBe("ENOENT");
    unwrap(second!.unassignDevice(0x20));
    expect(v.devices[1]!.device.read(DATA_GPA, 4).ok).toBe(false);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(true);
    expect(bed.dispose()).toEqual([]);
  });
});

describe("hot-unplug and renumbering in IR-only mode (no device domains)", () => {
  it("unplug blocks DMA and drops interrupt entries; renumbering keeps the stage-2 attachment and drops the old id's entries", () => {
    const { bed, v, driver, iommu } = hvBed({ mode: "ir-only" });
    const [a, b] = [v.devices[0]!, v.devices[1]!];
    expect(a.device.read(DATA_GPA, 4).ok).toBe(true);
    const msiA = unwrap(driver.mapInterrupt(0x10, 0x45, 1));
    const msiB = unwrap(driver.mapInterrupt(0x18, 0x46, 2));
    unwrap(iommu.unassignDevice(0x10));
    expect(a.device.read(DATA_GPA, 4).ok).toBe(false);
    v.vm.interrupts.take();
    a.device.signalMsi(msiA);
    unwrap(iommu.renumberDevice(0x18, 0x30));
    expect(b.device.read(DATA_GPA, 4).ok).toBe(true);
    b.device.signalMsi(msiB);
    expect(v.vm.interrupts.take()).toEqual([]);
    expect(iommu.partition.interrupts.size).toBe(0);
    expect(bed.dispose()).toEqual([]);
  });
});

describe("renumberDevice", () => {
  it("moves the device to the new logical id: what the hypervisor held for the old one goes, the guest's next calls decide", () => {
    const { bed, v, driver, iommu, unit } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    const msi = unwrap(driver.mapInterrupt(0x10, 0x42, 0));
    const a = v.devices[0]!;
    expect(a.device.read(IOVA, 4).ok).toBe(true);
    unwrap(iommu.renumberDevice(0x10, 0x30));
    // A logical id the hypervisor holds nothing for: the default (identity) domain.
    expect(unit.domainOf(a.device.requesterId)?.kind).toBe("paging");
    expect(a.device.read(DATA_GPA, 4).ok).toBe(true);
    v.vm.interrupts.take();
    a.device.signalMsi(msi);
    expect(v.vm.interrupts.take()).toEqual([]);
    expect(rawCall(v, hvDetachDeviceDomain, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_NOT_FOUND);
    // The guest attaches the device under its new id.
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: logicalDeviceId(0x30) } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect((unit.domainOf(a.device.requesterId) as HypervNestedDomain).domainId).toBe(d);
    expect(a.device.read(IOVA, 4).ok).toBe(true);
    expect(a.device.read(DATA_GPA, 4).ok).toBe(false);
    // Its interrupts are remapped under the new id.
    const again = unwrap(driver.mapInterrupt(0x30, 0x43, 2));
    a.device.signalMsi(again);
    expect(v.vm.interrupts.take().map((i) => [i.vector, i.destination])).toEqual([[0x43, 2]]);
    expect(bed.dispose()).toEqual([]);
  });

  it("takes over the domain the guest had put the new id in, as a device assigned there would", () => {
    const { bed, v, driver, iommu } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: logicalDeviceId(0x40) } }).status).toBe(S.HV_STATUS_SUCCESS);
    unwrap(iommu.renumberDevice(0x10, 0x40));
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(false);
    expect(iommu.partition.devices.get(0x40)!.passthrough?.device).toBe(v.devices[0]!.device);
    expect(bed.dispose()).toEqual([]);
  });

  it("answers ENOENT for an empty id, EEXIST for a taken one, and changes nothing when the host refuses the new placement", () => {
    const { bed, v, driver, iommu } = hvBed();
    expect(errno(iommu.renumberDevice(0x55, 0x56))).toBe("ENOENT");
    expect(errno(iommu.renumberDevice(0x10, 0x18))).toBe("EEXIST");
    expect(errno(iommu.renumberDevice(0x10, 0x10))).toBe("EEXIST");
    expect(errno(iommu.renumberDevice(0x10, 0x1_0000))).toBe("EINVAL");
    const d = unwrap(driver.createDomain());
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: logicalDeviceId(0x40) } }).status).toBe(S.HV_STATUS_SUCCESS);
    const r = refuse(v.iommufd, "hwptAlloc", "ENOMEM");
    expect(errno(iommu.renumberDevice(0x10, 0x40))).toBe("ENOMEM");
    r.lift();
    expect(iommu.partition.devices.get(0x10)!.passthrough?.device).toBe(v.devices[0]!.device);
    expect(iommu.partition.devices.get(0x40)!.passthrough).toBeUndefined();
    expect(iommu.partition.domains!.get(d)!.attached.has(0x40)).toBe(true);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(true);
    expect(bed.dispose()).toEqual([]);
  });
});
