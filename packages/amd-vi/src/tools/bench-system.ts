import { GuestPageAllocator, HwptAllocFlag, IoasMapFlag, IommufdContext, Platform, unwrap, type DmaDevice, type TranslationMode, type VendorPlugin, type VirtualMachine } from "@viommu/core";
import { AmdViGuestDriver } from "../guest/amd-vi-driver.js";
import type { AmdViUnit } from "../hw/amd-vi-unit.js";
import { AmdViDevice } from "../vmm/amd-vi-device.js";

/** One VM with one passthrough device behind an emulated AMD IOMMU and the reference driver brought up. */
export interface BenchSystem {
  readonly platform: Platform;
  readonly vm: VirtualMachine;
  readonly ctx: IommufdContext;
  readonly unit: AmdViUnit;
  readonly device: DmaDevice;
  readonly iommu: AmdViDevice;
  readonly driver: AmdViGuestDriver;
  readonly pages: GuestPageAllocator;
}

/** Builds the system the bench figures measure (the same wiring as the conformance testbed, without it). */
export function benchSystem(plugin: VendorPlugin, options: { mode: TranslationMode; commandBuffer?: "trapped" | "hw-vqueue"; confidential?: boolean }): BenchSystem {
  const platform = new Platform({ plugins: [plugin] });
  const unit = unwrap(platform.createUnit(plugin.id)) as AmdViUnit;
  const vm = platform.createVm({ memoryBytes: 2 ** 32, confidential: options.confidential, vcpus: 8 });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, 0x100, "bench-nvme");
  const devId = unwrap(ctx.bindDevice(device));
  const ioasId = unwrap(ctx.ioasAlloc());
  unwrap(ctx.ioasMap({ ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: vm.memory, gpa: 0, length: vm.memory.sizeBytes, iova: 0 }));
  const parentHwptId = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId, ptId: ioasId }));
  const iommu = unwrap(AmdViDevice.create({ vm, iommufd: ctx, unit, ioasId, parentHwptId, anchorDevId: devId, mode: options.mode, commandBuffer: options.commandBuffer }));
  unwrap(iommu.assignDevice(device, devId, 0x10));
  const pages = new GuestPageAllocator(vm.memory, vm.memory.end - 32 * 2 ** 20, vm.memory.end);
  const driver = new AmdViGuestDriver({ vm, memory: vm.memory, pages, acpi: iommu.acpiTables(), mmioBase: iommu.mmioBase });
  unwrap(driver.init({ translation: options.mode !== "ir-only", interruptRemapping: true }));
  return { platform, vm, ctx, unit, device, iommu, driver, pages };
}
