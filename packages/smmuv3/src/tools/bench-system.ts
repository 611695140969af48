import { GuestPageAllocator, HwptAllocFlag, IoasMapFlag, IommufdContext, Platform, unwrap, type DmaDevice, type GuestDomainId } from "@viommu/core";
import { Smmuv3GuestDriver } from "../guest/smmuv3-driver.js";
import { createSmmuv3Unit } from "../hw/smmuv3-unit.js";
import { Smmuv3Device } from "../vmm/smmuv3-device.js";

/** One VM with one passthrough device behind a nested vSMMU, driven by the reference guest driver. */
export interface BenchSystem {
  readonly platform: Platform;
  readonly device: DmaDevice;
  readonly iommu: Smmuv3Device;
  readonly driver: Smmuv3GuestDriver;
  readonly domain: GuestDomainId;
  dispose(): void;
}

const GUEST_RID = 0x10;

/** Builds the system the benchmarks measure (any failure here is a bug, so it throws). */
export function buildBenchSystem(): BenchSystem {
  const platform = new Platform({ plugins: [] });
  const unit = createSmmuv3Unit(platform.host, 0);
  platform.host.units.push(unit);
  const vm = platform.createVm({ memoryBytes: 2 ** 32 });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, 0x100);
  const devId = unwrap(ctx.bindDevice(device));
  const ioasId = unwrap(ctx.ioasAlloc());
  const mem = vm.memory;
  unwrap(ctx.ioasMap({ ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: mem, gpa: mem.base, length: mem.sizeBytes, iova: mem.base }));
  const parentHwptId = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId, ptId: ioasId }));
  const iommu = unwrap(Smmuv3Device.create({ vm, iommufd: ctx, unit, ioasId, parentHwptId, anchorDevId: devId, mode: "nested" }));
  unwrap(iommu.assignDevice(device, devId, GUEST_RID));
  const pages = new GuestPageAllocator(mem, mem.end - 32 * 2 ** 20, mem.end);
  const driver = new Smmuv3GuestDriver({ vm, memory: mem, pages, acpi: iommu.acpiTables(), mmioBase: iommu.mmioBase });
  unwrap(driver.init({ translation: true, interruptRemapping: false }));
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(GUEST_RID, domain));
  return {
    platform,
    device,
    iommu,
    driver,
    domain,
    dispose(): void {
      iommu.destroy();
      ctx.close();
      platform.dispose();
    },
  };
}
