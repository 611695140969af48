import { describe, expect, it, vi } from "vitest";
import { newWalkResult, NO_PASID, unwrap, type GuestIommuDriver } from "@viommu/core";
import type { TestVm } from "@viommu/conformance";
import { decodeIvrs, type IvhdBlock } from "../../src/format/ivrs.js";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { PCI_ABSENT, type PciConfigAccess } from "../../src/format/pci-config-header.js";
import { AmdViGuestDriver } from "../../src/guest/amd-vi-driver.js";
import { vmPciConfigAccess } from "../../src/guest/pci-config-access.js";
import type { AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import { amdBed, DATA_GPA, IOVA, mapOne, oneVm } from "../support.js";

function ivhds(device: AmdViDevice): IvhdBlock[] {
  const decoded = decodeIvrs(device.acpiTables()[0]!.bytes);
  if (!decoded.ok) throw new Error("IVRS does not decode");
  return decoded.table.blocks.filter((b): b is IvhdBlock => b.kind === "IVHD");
}

/** Walks the capability list from 0x34 as the PCI core does: [offset, id] pairs. */
function capabilities(access: PciConfigAccess, bdf: number): [number, number][] {
  const out: [number, number][] = [];
  for (let at = access.read32(bdf, 0x34) & 0xfc, ttl = 48; at !== 0 && ttl > 0; ttl--) {
    const h = access.read32(bdf, at);
    out.push([at, h & 0xff]);
    at = (h >>> 8) & 0xfc;
  }
  return out;
}

function driverFor(v: TestVm, device: AmdViDevice, access: PciConfigAccess | undefined): AmdViGuestDriver {
  return new AmdViGuestDriver({ vm: v.vm, memory: v.vm.memory, pages: v.pages, acpi: device.acpiTables(), mmioBase: device.mmioBase }, access);
}

describe("the IOMMU's PCI function (configuration space)", () => {
  it("is the function QEMU's amd-iommu is: vendor 0x1022, device 0x1419, class 0x080600, the IOMMU capability at 0x40 then a 64-bit MSI capability", () => {
    const { device } = oneVm({ mode: "shadow" }, {});
    const pci = vmPciConfigAccess(device.options.vm);
    const bdf = device.iommuDeviceId;
    expect(bdf).toBe(0x0002);
    expect(pci.read32(bdf, 0x00)).toBe(0x1419_1022);
    expect(pci.read32(bdf, 0x08) >>> 8).toBe(0x08_0600);
    expect((pci.read32(bdf, 0x04) >>> 16) & 0x10).toBe(0x10);
    expect(capabilities(pci, bdf)).toEqual([
      [0x40, 0x0f],
      [0x58, 0x05],
    ]);
    // CapType 3 (IOMMU), HtTunnel, IotlbSup, NpCache, EFRSup, CapExt (spec x86.md B1).
    const header = pci.read32(bdf, 0x40);
    expect([(header >>> 16) & 7, (header >>> 24) & 0x1f]).toEqual([3, 0b11111]);
    // The MSI capability: one vector, 64-bit, MsiEn clear until the driver sets it.
    expect(pci.read32(bdf, 0x58) >>> 16).toBe(0x80);
    // No other function answers, and sub-dword and unaligned accesses behave as PCI's do.
    expect(pci.read32(0x0003, 0x00)).toBe(PCI_ABSENT);
    expect(device.pci.read(0x02, 2)).toBe(0x1419);
    expect(device.pci.read(0x0b, 1)).toBe(0x08);
    expect(device.pci.read(0x01, 2)).toBe(0xffff);
    // Base Address Low holds [31:14]: a register block that is not 16 KiB aligned cannot be described.
    expect((device.constructor as typeof AmdViDevice).create({ ...device.options, mmioBase: 0xfec0_1000 })).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });

  it("agrees with the IVRS the device publishes and with its MMIO registers (DeviceID, capability offset, base, flags, sizes, EFR)", () => {
    for (const instance of [0, 1]) {
      const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x101, guestRid: 0x11, instance: 1 }], instances: 2 }] });
      const v = bed.vms[0]!;
      const device = v.iommus[instance] as AmdViDevice;
      const pci = vmPciConfigAccess(device.options.vm);
      const decoded = decodeIvrs(device.acpiTables()[0]!.bytes);
      if (!decoded.ok) throw new Error("IVRS");
      for (const h of ivhds(device)) {
        expect(h.deviceId).toBe(device.iommuDeviceId);
        const cap = pci.read32(h.deviceId, h.capabilityOffset);
        expect([cap & 0xff, (cap >>> 16) & 7]).toEqual([0x0f, 3]);
        const low = pci.read32(h.deviceId, h.capabilityOffset + 4);
        const high = pci.read32(h.deviceId, h.capabilityOffset + 8);
        expect(low & 1).toBe(1);
        expect(BigInt(high) * 2n ** 32n + BigInt((low & 0xffff_c000) >>> 0)).toBe(h.baseAddress);
        expect(Number(h.baseAddress)).toBe(device.mmioBase);
        // HtTunnel and IotlbSup repeat the IVHD flags' HtTunEn and IotlbSup.
        expect([(cap >>> 25) & 1, (cap >>> 24) & 1]).toEqual([h.flags & 1, (h.flags >>> 4) & 1]);
        // Range: bus 0, devices 0x00–0xFF, as the IVHD's START/END entries.
        const range = pci.read32(h.deviceId, h.capabilityOffset + 0x0c);
        expect([(range >>> 7) & 1, (range >>> 8) & 0xff, (range >>> 16) & 0xff, range >>> 24]).toEqual([1, 0, 0x00, 0xff]);
        expect(h.entries.some((e) => e.kind === "START_OF_RANGE" && e.deviceId === 0)).toBe(true);
        // Miscellaneous 0 repeats IVinfo's GVAsize, PAsize and VAsize.
        const misc = pci.read32(h.deviceId, h.capabilityOffset + 0x10);
        const iv = decoded.table.ivInfo;
        expect([(misc >>> 5) & 7, (misc >>> 8) & 0x7f, (misc >>> 15) & 0x7f]).toEqual([(iv >>> 5) & 7, (iv >>> 8) & 0x7f, (iv >>> 15) & 0x7f]);
        // EFRSup: the EFR Linux reads from MMIO is the IVHD 11h image.
        if (h.efr !== undefined) expect(v.vm.mmioRead(device.mmioBase + MmioOffset.ExtendedFeature, 8)).toBe(h.efr);
      }
      expect((v.drivers[instance] as AmdViGuestDriver).firmwareWarnings).toEqual([]);
    }
  });

  it("the capability block is read-only; Command takes only its writable bits; the MSI registers are those of the MMIO mirror", () => {
    const { device, v } = oneVm({ mode: "shadow", eventInterrupts: "vmm" }, {});
    const pci = vmPciConfigAccess(device.options.vm);
    const bdf = device.iommuDeviceId;
    const before = [0x00, 0x08, 0x34, 0x40, 0x44, 0x48, 0x4c, 0x50, 0x54].map((o) => pci.read32(bdf, o));
    for (const o of [0x00, 0x08, 0x34, 0x40, 0x44, 0x48, 0x4c, 0x50, 0x54]) pci.write32(bdf, o, 0xdead_beef);
    expect([0x00, 0x08, 0x34, 0x40, 0x44, 0x48, 0x4c, 0x50, 0x54].map((o) => pci.read32(bdf, o))).toEqual(before);
    pci.write32(bdf, 0x04, 0xffff_ffff);
    expect(pci.read32(bdf, 0x04) & 0xffff).toBe(0x0547);
    pci.write32(bdf, 0x5c, 0xfee0_2003);
    pci.write32(bdf, 0x64, 0x1_0042);
    expect(v.vm.mmioRead(device.mmioBase + MmioOffset.MsiAddressLow, 4)).toBe(0xfee0_2000n);
    expect(v.vm.mmioRead(device.mmioBase + MmioOffset.MsiData, 4)).toBe(0x42n);
    v.vm.mmioWrite(device.mmioBase + 0x158, 4, 1 << 16);
    expect(pci.read32(bdf, 0x58) & (1 << 16)).toBe(1 << 16);
    expect(Number(v.vm.mmioRead(device.mmioBase + 0x158, 4))).toBe(pci.read32(bdf, 0x58));
    device.pci.write(0x5a, 2, 0);
    expect(v.vm.mmioRead(device.mmioBase + 0x158, 4) & (1n << 16n)).toBe(0n);
  });

  it("the reference driver probes through it as Linux's iommu_init_pci does, and enables its MSI there; the event interrupt needs MsiEn", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true, mode: "shadow", eventInterrupts: "vmm" });
    const v = bed.vms[0]!;
    const device = v.iommus[0] as AmdViDevice;
    const access = vmPciConfigAccess(device.options.vm);
    const bdf = device.iommuDeviceId;
    const d = driverFor(v, device, access);
    unwrap(d.init({ translation: true, interruptRemapping: true, eventVector: 0x4c, eventDestination: 2 }));
    expect([access.read32(bdf, 0x5c), access.read32(bdf, 0x64), access.read32(bdf, 0x58) & (1 << 16)]).toEqual([0xfee0_2000, 0x4c, 1 << 16]);
    // pci_intx(dev, 0), as pci_enable_msi does.
    expect(access.read32(bdf, 0x04) & (1 << 10)).toBe(1 << 10);
    unwrap(d.attach(0x10, unwrap(d.createDomain())));
    v.vm.interrupts.take();
    device.translateEmulated(0x10, NO_PASID, 0x9000, false, newWalkResult());
    expect(v.vm.interrupts.take().map((i) => [i.vector, i.destination])).toEqual([[0x4c, 2]]);
    // MsiEn cleared through configuration space: the next event raises nothing.
    access.write32(bdf, 0x58, 0);
    device.translateEmulated(0x10, NO_PASID, 0xa000, false, newWalkResult());
    expect(v.vm.interrupts.take()).toEqual([]);
    expect(d.readEvents().map((e) => e.name)).toEqual(["IO_PAGE_FAULT", "IO_PAGE_FAULT"]);
  });

  it("the hardware vIOMMU posts the event interrupt to the MSI as last programmed, through configuration space or the MMIO mirror", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], eventInterrupts: "direct", guest: { eventVector: 0x61, eventDestination: 1 } });
    const v = bed.vms[0]!;
    const device = v.iommus[0] as AmdViDevice;
    expect(device.hardwareQueues).toBe(true);
    const fault = (iova: number): number[] => {
      v.vm.interrupts.take();
      v.devices[0]!.device.read(iova, 4);
      return v.vm.interrupts.take().map((i) => i.vector);
    };
    mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
    expect(fault(IOVA + 0x10_0000)).toEqual([0x61]);
    v.vm.mmioWrite(device.mmioBase + MmioOffset.MsiData, 4, 0x62);
    expect(fault(IOVA + 0x20_0000)).toEqual([0x62]);
    vmPciConfigAccess(device.options.vm).write32(device.iommuDeviceId, 0x58, 0);
    expect(fault(IOVA + 0x30_0000)).toEqual([]);
  });

  it("without the function (no device at the IVHD's DeviceID) the driver fails as Linux does: ENODEV", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true, mode: "shadow" });
    const v = bed.vms[0]!;
    const device = v.iommus[0] as AmdViDevice;
    const nothing: PciConfigAccess = { read32: () => PCI_ABSENT, write32: () => undefined };
    expect(driverFor(v, device, nothing).init({ translation: true, interruptRemapping: true })).toMatchObject({ ok: false, error: { errno: "ENODEV" } });
    expect(driverFor(v, device, undefined).init({ translation: true, interruptRemapping: true })).toMatchObject({ ok: false, error: { errno: "ENODEV" } });
  });

  it("the driver follows the capability header: no NpCache, no flush after a map; no EFRSup, the EFR register is not read", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true, mode: "shadow", eventInterrupts: "vmm" });
    const v = bed.vms[0]!;
    const device = v.iommus[0] as AmdViDevice;
    const real = vmPciConfigAccess(device.options.vm);
    const masked = (bits: number): PciConfigAccess => ({ read32: (bdf, o) => (o === 0x40 ? (real.read32(bdf, o) & ~bits) >>> 0 : real.read32(bdf, o)), write32: real.write32 });
    const reads = vi.spyOn(v.vm, "mmioRead");
    const d: GuestIommuDriver = driverFor(v, device, masked((1 << 26) | (1 << 27)));
    unwrap(d.init({ translation: true, interruptRemapping: true }));
    expect(reads.mock.calls.some(([address]) => address === device.mmioBase + MmioOffset.ExtendedFeature)).toBe(false);
    const domain = unwrap(d.createDomain());
    unwrap(d.attach(0x10, domain));
    const trapped = device.stats.trapped;
    unwrap(d.map(domain, IOVA, DATA_GPA, 0x1000, 3));
    expect(device.stats.trapped).toBe(trapped);
  });

  it("MsiEn and the Command register survive save and restore", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], mode: "shadow", eventInterrupts: "vmm", guest: { eventVector: 0x51 } });
    const v = bed.vms[0]!;
    const device = v.iommus[0] as AmdViDevice;
    const blob = device.save();
    device.destroy();
    const fresh = unwrap((device.constructor as typeof AmdViDevice).create(device.options));
    unwrap(fresh.restore(blob));
    const pci = vmPciConfigAccess(fresh.options.vm);
    expect([pci.read32(2, 0x58) & (1 << 16), pci.read32(2, 0x5c), pci.read32(2, 0x64), pci.read32(2, 0x04) & 0xffff]).toEqual([1 << 16, 0xfee0_0000, 0x51, 1 << 10]);
  });
});
