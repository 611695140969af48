import { HwptAllocFlag, IoasMapFlag, IommufdContext, Platform, unwrap, type DmaDevice, type UserData, type VirtualMachine } from "@viommu/core";
import { createSmmuv3Unit, type Smmuv3Unit } from "@viommu/smmuv3";
import { Tegra241CmdqvDriver } from "../../src/hw/cmdqv-driver.js";
import { CmdqvVmm } from "../../src/vmm/cmdqv-vmm.js";

/** A host with one SMMUv3 + CMDQV unit and one VM whose RAM is mapped in an IOAS with a nesting parent. */
export interface HostSystem {
  readonly platform: Platform;
  readonly unit: Smmuv3Unit;
  readonly cmdqv: Tegra241CmdqvDriver;
  readonly vm: VirtualMachine;
  readonly ctx: IommufdContext;
  readonly devices: DmaDevice[];
  readonly devIds: number[];
  readonly ioasId: number;
  readonly parentId: number;
  /** IOMMU_VIOMMU_ALLOC of a TEGRA241_CMDQV vIOMMU with fresh data; returns the id and the data written back. */
  allocViommu(): { id: number; data: UserData };
  dispose(): void;
}

/** `backingPageShift` 30 backs guest RAM with 1 GiB pages, so large queues are physically contiguous. */
export function hostSystem(options: { devices?: number; backingPageShift?: number } = {}): HostSystem {
  const platform = new Platform({ plugins: [] });
  const cmdqv = new Tegra241CmdqvDriver(platform.host, 0);
  const unit = createSmmuv3Unit(platform.host, 0, { extension: cmdqv });
  platform.host.units.push(unit);
  const vm = platform.createVm({ memoryBytes: 2 ** 32, backingPageShift: options.backingPageShift });
  const ctx = new IommufdContext(vm.id);
  const devices = Array.from({ length: options.devices ?? 1 }, (_, i) => platform.createDevice(unit, 0x100 + i));
  const devIds = devices.map((d) => unwrap(ctx.bindDevice(d)));
  const ioasId = unwrap(ctx.ioasAlloc());
  const mem = vm.memory;
  unwrap(ctx.ioasMap({ ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: mem, gpa: mem.base, length: mem.sizeBytes, iova: mem.base }));
  const parentId = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId: devIds[0]!, ptId: ioasId }));
  return {
    platform,
    unit,
    cmdqv,
    vm,
    ctx,
    devices,
    devIds,
    ioasId,
    parentId,
    allocViommu() {
      const data = CmdqvVmm.viommuData();
      const id = unwrap(ctx.viommuAlloc({ flags: 0, type: data.type, devId: devIds[0]!, hwptId: parentId, data }));
      return { id, data };
    },
    dispose() {
      ctx.close();
      platform.dispose();
    },
  };
}
