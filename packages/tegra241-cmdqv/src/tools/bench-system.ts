import { GuestPageAllocator, HwptAllocFlag, IoasMapFlag, IommufdContext, Platform, unwrap, type DmaDevice, type GuestDomainId, type VirtualMachine } from "@viommu/core";
import { createSmmuv3Unit, Smmuv3GuestDriver } from "@viommu/smmuv3";
import { Tegra241GuestDriver } from "../guest/tegra241-driver.js";
import { Tegra241CmdqvDriver } from "../hw/cmdqv-driver.js";
import { Tegra241Device } from "../vmm/tegra241-device.js";

/** One VM with one passthrough device behind a nested vSMMU with a CMDQV, driven by the reference guest driver. */
export interface BenchSystem {
  readonly vm: VirtualMachine;
  readonly device: DmaDevice;
  readonly iommu: Tegra241Device;
  readonly driver: Tegra241GuestDriver;
  readonly domain: GuestDomainId;
  dispose(): void;
}

const GUEST_RID = 0x10;

/**
 * Builds the system the benchmarks measure (any failure here is a bug, so it throws). `bypassVcmdq` is Linux's
 * module parameter of that name: same hardware, same VMM, but the guest sends its invalidations through the
 * trapped SMMU queue.
 */
export function buildBenchSystem(bypassVcmdq: boolean): BenchSystem {
  const platform = new Platform({ plugins: [] });
  const unit = createSmmuv3Unit(platform.host, 0, { extension: new Tegra241CmdqvDriver(platform.host, 0) });
  platform.host.units.push(unit);
  const vm = platform.createVm({ memoryBytes: 2 ** 32 });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, 0x100);
  const devId = unwrap(ctx.bindDevice(device));
  const ioasId = unwrap(ctx.ioasAlloc());
  const mem = vm.memory;
  unwrap(ctx.ioasMap({ ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: mem, gpa: mem.base, length: mem.sizeBytes, iova: mem.base }));
  const parentHwptId = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId, ptId: ioasId }));
  const iommu = unwrap(Tegra241Device.create({ vm, iommufd: ctx, unit, ioasId, parentHwptId, anchorDevId: devId, mode: "nested" }));
  unwrap(iommu.assignDevice(device, devId, GUEST_RID));
  const pages = new GuestPageAllocator(mem, mem.end - 32 * 2 ** 20, mem.end);
  const context = { vm, memory: mem, pages, acpi: iommu.acpiTables(), mmioBase: iommu.mmioBase };
  const driver = new Tegra241GuestDriver(context, new Smmuv3GuestDriver(context), { bypassVcmdq });
  unwrap(driver.init({ translation: true, interruptRemapping: false }));
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(GUEST_RID, domain));
  return {
    vm,
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
