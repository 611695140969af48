import { describe, expect, it } from "vitest";
import { Perm, unwrap } from "@viommu/core";
import { HvStatus } from "../../src/format/hv-status.js";
import { encodeHypercallResult } from "../../src/format/hypercall-result.js";
import { logicalDeviceId } from "../../src/format/device-id.js";
import { HV_PARTITION_ID_SELF, hvDeleteDeviceDomain, hvDetachDeviceDomain } from "../../src/format/hypercalls.js";
import { HV_MSI_WINDOW, HypervGuestDriver } from "../../src/guest/hyperv-driver.js";
import { hypervPlugin } from "../../src/plugin.js";
import { DATA_GPA, dd, hvBed, IOVA, rawCall, recordHypercalls } from "../support.js";

describe("the reference driver probes and sets up like Linux's pvIOMMU driver", () => {
  it("probes with GET_IOMMU_CAPABILITIES, then creates and configures its static identity and blocking domains", () => {
    const { bed, v, driver, iommu } = hvBed({ noInit: true });
    const calls = recordHypercalls(v.vm);
    unwrap(driver.init({ translation: true, interruptRemapping: true }));
    expect(calls.map((c) => c.name)).toEqual([
      "HVCALL_GET_IOMMU_CAPABILITIES",
      "HVCALL_CREATE_DEVICE_DOMAIN",
      "HVCALL_CONFIGURE_DEVICE_DOMAIN",
      "HVCALL_CREATE_DEVICE_DOMAIN",
      "HVCALL_CONFIGURE_DEVICE_DOMAIN",
    ]);
    const { identity, blocking } = driver.staticDomains();
    expect([identity, blocking]).toEqual([1, 2]);
    expect(iommu.partition.domains!.get(1)!.config).toEqual({ kind: "identity" });
    expect(iommu.partition.domains!.get(2)!.config).toEqual({ kind: "blocked" });
    expect(driver.maxIovaWidth).toBe(48);
    expect(driver.levels).toBe(4);
    bed.dispose();
  });

  it("fails with ENODEV when the hypervisor offers no pvIOMMU", () => {
    const { bed, driver } = hvBed({ mode: "ir-only", noInit: true });
    const r = driver.init({ translation: true, interruptRemapping: true });
    expect(r.ok ? undefined : r.error.errno).toBe("ENODEV");
    bed.dispose();
  });

  it("is one driver per VM: every instance's createDriver gives the same guest kernel driver", () => {
    const { bed, v } = hvBed();
    const again = hypervPlugin.createDriver({ vm: v.vm, memory: v.vm.memory, pages: v.pages, acpi: [], mmioBase: 0 }, v.iommus[0]!);
    expect(again).toBe(v.drivers[0]);
    expect(again).toBeInstanceOf(HypervGuestDriver);
    bed.dispose();
  });
});

describe("attach and detach", () => {
  it("probes a device once with GET_LOGICAL_DEVICE_PROPERTY; moving it detaches from the old domain and flushes that domain first", () => {
    const { bed, v, driver } = hvBed();
    const a = unwrap(driver.createDomain());
    const b = unwrap(driver.createDomain());
    const calls = recordHypercalls(v.vm);
    unwrap(driver.attach(0x10, a));
    unwrap(driver.attach(0x10, b));
    unwrap(driver.attach(0x10, b));
    expect(calls.map((c) => c.name)).toEqual([
      "HVCALL_GET_LOGICAL_DEVICE_PROPERTY",
      "HVCALL_ATTACH_DEVICE_DOMAIN",
      "HVCALL_DETACH_DEVICE_DOMAIN",
      "HVCALL_FLUSH_DEVICE_DOMAIN",
      "HVCALL_ATTACH_DEVICE_DOMAIN",
    ]);
    expect([driver.attachCount(a), driver.attachCount(b)]).toEqual([0, 1]);
    bed.dispose();
  });

  it("detach puts the device in the blocking domain; the identity domain passes GPAs through", () => {
    const { bed, v, driver } = hvBed();
    const a = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, a));
    unwrap(driver.map(a, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    const dev = v.devices[0]!.device;
    expect(dev.read(IOVA, 4).ok).toBe(true);
    unwrap(driver.detach(0x10));
    expect(driver.domainOf(0x10)).toBe(driver.staticDomains().blocking);
    expect(dev.read(IOVA, 4).ok).toBe(false);
    expect(dev.read(DATA_GPA, 4).ok).toBe(false);
    unwrap(driver.attachIdentity(0x10));
    expect(dev.read(DATA_GPA, 4).ok).toBe(true);
    expect(dev.read(v.vm.memory.end, 4).ok).toBe(false);
    bed.dispose();
  });

  it("a device the hypervisor does not put behind the pvIOMMU is refused with ENODEV", () => {
    const { bed, driver } = hvBed();
    const a = unwrap(driver.createDomain());
    const r = driver.attach(0x1_0000, a);
    expect(r.ok ? undefined : r.error.errno).toBe("ENODEV");
    bed.dispose();
  });
});

describe("the detach rule of the root/L1VH series: the attach count drops even when DETACH fails", () => {
  it("a failed DETACH is logged, the count still drops, the domain is deleted, and no domain leaks", () => {
    const { bed, v, driver, iommu } = hvBed();
    const domains = iommu.partition.domains!;
    const baseline = domains.count;
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    expect(driver.attachCount(d)).toBe(1);
    // The hypervisor already took the device out of the domain (a rescind, another agent's DETACH).
    expect(rawCall(v, hvDetachDeviceDomain, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(0x10) } }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
    const calls = recordHypercalls(v.vm);
    unwrap(driver.detach(0x10));
    expect(calls[0]).toMatchObject({ name: "HVCALL_DETACH_DEVICE_DOMAIN", status: HvStatus.HV_STATUS_INVALID_PARAMETER });
    expect(driver.log.some((l) => l.includes("detach of 0x10") && l.includes("failed"))).toBe(true);
    expect(driver.attachCount(d)).toBe(0);
    unwrap(driver.destroyDomain(d));
    expect(calls.at(-1)).toMatchObject({ name: "HVCALL_DELETE_DEVICE_DOMAIN", status: HvStatus.HV_STATUS_SUCCESS });
    expect(domains.count).toBe(baseline);
    expect(domains.get(d)).toBeUndefined();
    // The freed id is reused by the next domain, as the ida does.
    expect(unwrap(driver.createDomain())).toBe(d);
    bed.dispose();
  });

  it("a domain with a device attached is never freed: EBUSY, logged, no DELETE issued, DMA unaffected", () => {
    const { bed, v, driver, iommu } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    const calls = recordHypercalls(v.vm);
    const r = driver.destroyDomain(d);
    expect(r.ok ? undefined : r.error.errno).toBe("EBUSY");
    expect(calls).toEqual([]);
    expect(driver.log.at(-1)).toContain("can't free busy iommu domain");
    expect(iommu.partition.domains!.get(d)).toBeDefined();
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
    expect(driver.destroyDomain(driver.staticDomains().identity!).ok).toBe(false);
    bed.dispose();
  });

  it("a DELETE the hypervisor refuses is only logged: the id goes back to the allocator", () => {
    const { bed, v, driver } = hvBed();
    const d = unwrap(driver.createDomain());
    // Someone else deleted it behind the driver's back: the driver's DELETE fails, as Linux's would.
    expect(rawCall(v, hvDeleteDeviceDomain, { input: { device_domain: dd(d) } }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
    unwrap(driver.destroyDomain(d));
    expect(driver.log.at(-1)).toContain("HVCALL_DELETE_DEVICE_DOMAIN failed");
    bed.dispose();
  });
});

describe("mapping", () => {
  it("refuses IOVAs in the reserved MSI window and reports it as a reserved region", () => {
    const { bed, driver } = hvBed();
    const d = unwrap(driver.createDomain());
    expect(driver.reservedRegions()).toEqual([{ start: 0xfee00000, end: 0xfeefffff, kind: "msi" }]);
    for (const iova of [HV_MSI_WINDOW.start, HV_MSI_WINDOW.end - 0xfff, HV_MSI_WINDOW.start - 0x1000]) {
      const r = driver.map(d, iova, DATA_GPA, 0x2000, Perm.ReadWrite);
      expect(r.ok ? undefined : r.error.errno).toBe("EINVAL");
    }
    expect(driver.map(d, HV_MSI_WINDOW.end + 1, DATA_GPA, 0x1000, Perm.ReadWrite).ok).toBe(true);
    bed.dispose();
  });

  it("maps without a hypercall (the hypervisor walks the guest's table) and flushes on unmap", () => {
    const { bed, v, driver } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    const calls = recordHypercalls(v.vm);
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x20_0000, Perm.ReadWrite));
    expect(calls).toEqual([]);
    unwrap(driver.unmap(d, IOVA, 0x3000));
    expect(calls.map((c) => c.name)).toEqual(["HVCALL_FLUSH_DEVICE_DOMAIN_LIST"]);
    expect(v.devices[0]!.device.read(IOVA + 0x2000, 4).ok).toBe(false);
    expect(v.devices[0]!.device.read(IOVA + 0x3000, 4).ok).toBe(true);
    bed.dispose();
  });

  it("a range flush the hypervisor refuses falls back to a whole-domain flush", () => {
    const { bed, v, driver } = hvBed();
    const d = unwrap(driver.createDomain());
    expect(rawCall(v, hvDeleteDeviceDomain, { input: { device_domain: dd(d) } }).status).toBe(HvStatus.HV_STATUS_SUCCESS);
    const calls = recordHypercalls(v.vm);
    const r = driver.flush(d, IOVA, 0x1000);
    expect(calls.map((c) => c.name)).toEqual(["HVCALL_FLUSH_DEVICE_DOMAIN_LIST", "HVCALL_FLUSH_DEVICE_DOMAIN"]);
    expect(r.ok ? undefined : r.error.errno).toBe("EIO");
    expect(driver.log.some((l) => l.includes("flushing the whole domain"))).toBe(true);
    bed.dispose();
  });
});

describe("device-domain mode (root-managed stage 2)", () => {
  it("maps with MAP_DEVICE_GPA_PAGES and unmaps with UNMAP_DEVICE_GPA_PAGES; DMA follows", () => {
    const { bed, v, driver, iommu } = hvBed({ guest: { variant: "device-domain" } });
    const d = unwrap(driver.createDomain());
    expect(iommu.partition.domains!.get(d)!.type).toBe(0);
    unwrap(driver.attach(0x10, d));
    const calls = recordHypercalls(v.vm);
    unwrap(driver.map(d, IOVA, DATA_GPA, 600 * 4096, Perm.ReadWrite));
    // 507 frames fit one input page; the hypervisor's time slice splits each call further.
    expect(calls.filter((c) => c.name === "HVCALL_MAP_DEVICE_GPA_PAGES").map((c) => c.repsCompleted)).toEqual([128, 256, 384, 507, 93]);
    expect(v.devices[0]!.device.write(IOVA + 599 * 4096, Uint8Array.of(5)).ok).toBe(true);
    expect(v.vm.memory.read8(DATA_GPA + 599 * 4096)).toBe(5);
    unwrap(driver.unmap(d, IOVA + 100 * 4096, 4096));
    expect(v.devices[0]!.device.read(IOVA + 100 * 4096, 4).ok).toBe(false);
    expect(v.devices[0]!.device.read(IOVA + 101 * 4096, 4).ok).toBe(true);
    expect(v.devices[0]!.device.read(IOVA + 99 * 4096, 4).ok).toBe(true);
    expect(iommu.partition.domains!.get(d)!.s2!.size).toBe(599);
    bed.dispose();
  });

  it("a map that stops part way is rolled back: nothing it had mapped is left", () => {
    const { bed, v, driver, iommu } = hvBed({ guest: { variant: "device-domain" } });
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    const end = v.vm.memory.end;
    const calls = recordHypercalls(v.vm);
    // 16 pages of which the last 4 lie beyond guest RAM: the hypervisor stops at rep 12.
    const r = driver.map(d, IOVA, end - 12 * 4096, 16 * 4096, Perm.ReadWrite);
    expect(r.ok ? undefined : r.error.errno).toBe("EINVAL");
    expect(calls[0]).toMatchObject({ name: "HVCALL_MAP_DEVICE_GPA_PAGES", status: HvStatus.HV_STATUS_INVALID_PARAMETER, repsCompleted: 12 });
    expect(calls[1]).toMatchObject({ name: "HVCALL_UNMAP_DEVICE_GPA_PAGES", status: HvStatus.HV_STATUS_SUCCESS, repsCompleted: 12 });
    expect(iommu.partition.domains!.get(d)!.s2!.size).toBe(0);
    for (let p = 0; p < 16; p++) expect(v.devices[0]!.device.read(IOVA + p * 4096, 4).ok).toBe(false);
    // The range is free again: a correct map of it succeeds.
    unwrap(driver.map(d, IOVA, DATA_GPA, 16 * 4096, Perm.ReadWrite));
    bed.dispose();
  });
});

describe("direct-attach mode", () => {
  it("gives the device to the partition with ATTACH_DEVICE (DMA at GPAs) and takes it back with DETACH_DEVICE", () => {
    const { bed, v, driver } = hvBed({ guest: { variant: "direct-attach" } });
    const d = unwrap(driver.createDomain());
    const calls = recordHypercalls(v.vm);
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, DATA_GPA, DATA_GPA, 0x1000, Perm.ReadWrite));
    expect(calls.map((c) => c.name)).toEqual(["HVCALL_GET_LOGICAL_DEVICE_PROPERTY", "HVCALL_ATTACH_DEVICE"]);
    expect(v.devices[0]!.device.write(DATA_GPA, Uint8Array.of(3)).ok).toBe(true);
    unwrap(driver.detach(0x10));
    expect(calls.map((c) => c.name).slice(2)).toEqual(["HVCALL_DETACH_DEVICE", "HVCALL_ATTACH_DEVICE_DOMAIN"]);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(false);
    bed.dispose();
  });
});

describe("interrupts", () => {
  it("a 300-vCPU guest's device MSI reaches vCPU 299 through a VP set; retargeting moves it; unmapping drops it", () => {
    const { bed, v, driver } = hvBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: 300 }] });
    const dev = v.devices[0]!.device;
    const msi = unwrap(driver.mapInterrupt(0x10, 0x51, 299));
    // The message is an x86 MSI with an 8-bit destination: the hypervisor's, not vCPU 299's.
    expect(msi.address >>> 20).toBe(0xfee);
    v.vm.interrupts.take();
    dev.signalMsi(msi);
    expect(v.vm.interrupts.take().map((i) => [i.vector, i.destination])).toEqual([[0x51, 299]]);
    unwrap(driver.retargetInterrupt(0x10, msi, 0x52, 64));
    dev.signalMsi(msi);
    expect(v.vm.interrupts.take().map((i) => [i.vector, i.destination])).toEqual([[0x52, 64]]);
    expect(driver.mapInterrupt(0x10, 0x51, 300).ok).toBe(false);
    unwrap(driver.unmapInterrupt(0x10, msi));
    dev.signalMsi(msi);
    expect(v.vm.interrupts.take()).toEqual([]);
    expect(driver.retargetInterrupt(0x10, msi, 0x52, 1).ok).toBe(false);
    bed.dispose();
  });

  it("IO-APIC affinity is limited to vCPUs whose APIC id is below 256", () => {
    const { bed, driver } = hvBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: 300 }] });
    expect(driver.setIoapicAffinity(255).ok).toBe(true);
    const r = driver.setIoapicAffinity(256);
    expect(r.ok ? undefined : r.error.errno).toBe("EINVAL");
    expect(driver.setIoapicAffinity(300).ok).toBe(false);
    bed.dispose();
  });

  it("without DMA translation (IR-only) the driver issues only interrupt hypercalls", () => {
    const { bed, v, driver } = hvBed({ mode: "ir-only", guest: { translation: false }, noInit: true });
    const calls = recordHypercalls(v.vm);
    unwrap(driver.init({ translation: false, interruptRemapping: true }));
    unwrap(driver.mapInterrupt(0x10, 0x60, 2));
    expect(calls.map((c) => c.name)).toEqual(["HVCALL_MAP_DEVICE_INTERRUPT"]);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(true);
    bed.dispose();
  });
});

describe("a hypervisor that misbehaves", () => {
  it("cannot hang the driver: a rep call answered SUCCESS without progress ends as an error", () => {
    const { bed, v, driver } = hvBed({ guest: { variant: "device-domain" } });
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    const original = v.vm.hypercall.bind(v.vm);
    let calls = 0;
    v.vm.hypercall = (input: bigint, i: number, o: number): bigint => {
      calls++;
      return (input & 0xffffn) === 0xb3n ? encodeHypercallResult(HvStatus.HV_STATUS_SUCCESS, 0) : original(input, i, o);
    };
    const r = driver.map(d, IOVA, DATA_GPA, 4 * 4096, Perm.Read);
    expect(r.ok).toBe(false);
    expect(calls).toBeLessThan(5);
    bed.dispose();
  });
});
