import { decodeLayout, encodeLayout, HwptAllocFlag, IoasMapFlag, IommufdContext, Platform, unwrap, VendorPlugin, type DmaDevice, type VirtualMachine } from "@viommu/core";
import { idr0Layout, idr1Layout, idr3Layout, idr5Layout } from "../src/format/id-registers.js";
import { DEFAULT_SMMUV3_HW, type Smmuv3HwConfig } from "../src/hw/smmuv3-hw-config.js";
import { Testbed, type TestbedOptions } from "@viommu/conformance";
import { smmuv3Plugin } from "../src/plugin.js";
import { createSmmuv3Unit, type Smmuv3Unit, type Smmuv3UnitOptions } from "../src/hw/smmuv3-unit.js";
import type { Smmuv3Device } from "../src/vmm/smmuv3-device.js";
import type { Smmuv3GuestDriver } from "../src/guest/smmuv3-driver.js";

/** The modelled host SMMU with some ID fields changed. */
export function hostConfig(changes: { idr0?: Record<string, number>; idr1?: Record<string, number>; idr3?: Record<string, number>; idr5?: Record<string, number> }): Smmuv3HwConfig {
  const idr = [...DEFAULT_SMMUV3_HW.idr];
  const layouts = [idr0Layout, idr1Layout, undefined, idr3Layout, undefined, idr5Layout] as const;
  const edits = [changes.idr0, changes.idr1, undefined, changes.idr3, undefined, changes.idr5];
  layouts.forEach((layout, i) => {
    if (layout !== undefined && edits[i] !== undefined) idr[i] = encodeLayout(layout, { ...decodeLayout(layout, Uint32Array.of(idr[i]!)), ...edits[i] })[0]!;
  });
  return { ...DEFAULT_SMMUV3_HW, idr };
}

/** The SMMUv3 plugin with host units of `config` (registered as itself, so a platform's units are built from it). */
export function pluginWith(config: Smmuv3HwConfig): VendorPlugin {
  const plugin: VendorPlugin = {
    ...smmuv3Plugin,
    createUnit: (host, index) => createSmmuv3Unit(host, index, { config }),
    register: (container) => void container.register(VendorPlugin, { useValue: plugin }),
  };
  return plugin;
}

/** A host SMMU without PRI, for the rules of an emulated SMMU that offers none. */
export const NO_PRI_HOST = hostConfig({ idr0: { PRI: 0 }, idr1: { PRIQS: 0 } });

/** A testbed for SMMUv3 with typed handles on the first VM's pieces; `config`: the host SMMU's ID registers. */
export function smmuBed(options: Omit<TestbedOptions, "plugin"> = { vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] }, config?: Smmuv3HwConfig) {
  const bed = unwrap(Testbed.create({ ...options, plugin: config === undefined ? smmuv3Plugin : pluginWith(config) }));
  const v = bed.vms[0]!;
  return {
    bed,
    v,
    vm: v.vm,
    unit: bed.units[0] as Smmuv3Unit,
    iommu: v.iommus[0] as Smmuv3Device,
    driver: v.drivers[0] as Smmuv3GuestDriver,
    device: v.devices[0]!.device,
  };
}

/** The host side alone: one unit, one VM with RAM mapped at IOVA = GPA, a bound device and a nesting parent. */
export interface HostSetup {
  readonly platform: Platform;
  readonly unit: Smmuv3Unit;
  readonly vm: VirtualMachine;
  readonly ctx: IommufdContext;
  readonly device: DmaDevice;
  readonly devId: number;
  readonly ioasId: number;
  readonly parentId: number;
}

/** What `hostSetup` varies besides the unit: guest RAM's host backing, the device's PASID width and PRI, the parent's flags. */
export interface HostSetupOptions {
  /** Guest RAM (default 1 GiB at GPA 0). */
  readonly memoryBytes?: number;
  readonly backingPageShift?: number;
  readonly pasidBits?: number;
  readonly pri?: boolean;
  readonly parentFlags?: number;
}

export function hostSetup(unitOptions: Smmuv3UnitOptions = {}, options: HostSetupOptions = {}): HostSetup {
  const platform = new Platform({ plugins: [] });
  const unit = createSmmuv3Unit(platform.host, 0, unitOptions);
  platform.host.units.push(unit);
  const vm = platform.createVm({ memoryBytes: options.memoryBytes ?? 2 ** 30, backingPageShift: options.backingPageShift });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, 0x100, "dev-100", options.pasidBits ?? 0, options.pri ?? false);
  const devId = unwrap(ctx.bindDevice(device));
  const ioasId = unwrap(ctx.ioasAlloc());
  unwrap(ctx.ioasMap({ ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: vm.memory, gpa: 0, length: vm.memory.sizeBytes, iova: 0 }));
  const parentId = unwrap(ctx.hwptAlloc({ flags: options.parentFlags ?? HwptAllocFlag.NEST_PARENT, devId, ptId: ioasId }));
  return { platform, unit, vm, ctx, device, devId, ioasId, parentId };
}

/** 64-bit words (lowest first) of raw halves, as hex, for readable assertions. */
export function hex64(raw: Uint32Array): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) out.push(`0x${((BigInt(raw[i + 1]!) << 32n) | BigInt(raw[i]!)).toString(16).padStart(16, "0")}`);
  return out;
}
