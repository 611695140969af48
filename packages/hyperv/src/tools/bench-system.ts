import { GuestPageAllocator, HwptAllocFlag, IoasMapFlag, IommufdContext, Platform, unwrap, type DmaDevice, type GuestDomainId } from "@viommu/core";
import { HypervGuestDriver } from "../guest/hyperv-driver.js";
import { HypervUnit } from "../hw/hyperv-unit.js";
import { HypervDevice } from "../vmm/hyperv-device.js";

/** One VM with one passthrough device behind the pvIOMMU, driven by the reference guest driver. */
export interface BenchSystem {
  readonly device: DmaDevice;
  readonly iommu: HypervDevice;
  readonly driver: HypervGuestDriver;
  readonly domain: GuestDomainId;
  dispose(): void;
}

const GUEST_RID = 0x10;

/** Builds the system the benchmarks measure, in the driver `variant` (any failure here is a bug, so it throws). */
export function buildBenchSystem(variant: "stage1" | "device-domain"): BenchSystem {
  const platform = new Platform({ plugins: [] });
  const unit = new HypervUnit(platform.host, 0);
  platform.host.units.push(unit);
  const vm = platform.createVm({ memoryBytes: 2 ** 32 });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, 0x100);
  const devId = unwrap(ctx.bindDevice(device));
  const ioasId = unwrap(ctx.ioasAlloc());
  const mem = vm.memory;
  unwrap(ctx.ioasMap({ ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: mem, gpa: mem.base, length: mem.sizeBytes, iova: mem.base }));
  const parentHwptId = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId, ptId: ioasId }));
  const iommu = unwrap(HypervDevice.create({ vm, iommufd: ctx, unit, ioasId, parentHwptId, anchorDevId: devId, mode: "nested" }));
  unwrap(iommu.assignDevice(device, devId, GUEST_RID));
  const pages = new GuestPageAllocator(mem, mem.end - 32 * 2 ** 20, mem.end);
  const driver = HypervGuestDriver.forVm({ vm, memory: mem, pages, acpi: [], mmioBase: 0 });
  unwrap(driver.init({ translation: true, interruptRemapping: true, variant }));
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(GUEST_RID, domain));
  return {
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
