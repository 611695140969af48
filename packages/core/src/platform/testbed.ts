import type { GuestIommuDriver, GuestInitOptions } from "../contract/guest-driver.js";
import type { PhysicalIommu } from "../contract/iommu-unit.js";
import type { VendorPlugin } from "../contract/plugin.js";
import { devicePropertyProblem } from "../contract/debug-tools.js";
import type { EmulatedIommu, ShadowBackendKind, TranslationMode } from "../contract/vmm-device.js";
import { err, fail, ok, type Result } from "../errors/errno.js";
import { IommufdContext } from "../iommufd/context.js";
import { HwptAllocFlag, IoasMapFlag } from "../iommufd/uapi.js";
import type { DmaDevice } from "./dma-device.js";
import { GuestPageAllocator } from "./guest-pages.js";
import { Platform } from "./platform.js";
import type { VirtualMachine } from "./vm.js";
import { exitCostProblem, type ExitCost } from "../sim/exit-cost.js";

export interface TestbedDevice {
  /** Physical requester id on the host unit. */
  readonly rid: number;
  /** The id the guest sees (virtual BDF / StreamID / DeviceID). */
  readonly guestRid: number;
  /** Which vIOMMU instance of the VM it sits behind (default 0). */
  readonly instance?: number;
  /** PASID width the device supports (0: no PASID capability; default 0). */
  readonly pasidBits?: number;
  /** The device has the PCIe PRI capability (page requests). */
  readonly pri?: boolean;
}

export interface TestbedVmOptions {
  readonly devices: readonly TestbedDevice[];
  readonly vcpus?: number;
  readonly memoryBytes?: number;
  /** Guest physical base of RAM (arm64 guests usually start at 0x40000000). Default 0. */
  readonly memoryBase?: number;
  readonly confidential?: boolean;
  /** vIOMMU instances in this VM, all sharing the VM's stage-2 parent (default 1). */
  readonly instances?: number;
  readonly backingPageShift?: number;
  /** What this VM's exits cost (default: the testbed's `exitCost`). */
  readonly exitCost?: ExitCost;
}

export interface TestbedOptions {
  readonly plugin: VendorPlugin;
  /** Plugins the platform registers besides `plugin` (a parent vendor, for an extension). */
  readonly plugins?: readonly VendorPlugin[];
  readonly seed?: number;
  readonly mode?: TranslationMode;
  readonly shadowBackend?: ShadowBackendKind;
  readonly dmaEntryLimit?: number;
  readonly eventInterrupts?: "vmm" | "direct";
  readonly deviceInterrupts?: "remapped" | "posted";
  /** The VMs' stage-2 parents are allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING (for live migration). */
  readonly dirtyTracking?: boolean;
  /** Emulated-device properties by QEMU's names (checked against the plugin's declared properties: EINVAL). */
  readonly properties?: Readonly<Record<string, string>>;
  /** The emulated units' stale-translation audit (capability audit). */
  readonly audit?: boolean;
  /**
   * What a VM exit costs the guest (`VirtualMachine.exitNanoseconds`), for figures comparing trapped and
   * guest-owned queues. Default `KVM_EXIT_COST` (cited in sim/exit-cost.ts); `NO_EXIT_COST` charges nothing.
   */
  readonly exitCost?: ExitCost;
  readonly vms: readonly TestbedVmOptions[];
  /** Guest driver options (translation defaults to mode ≠ ir-only). */
  readonly guest?: Partial<GuestInitOptions>;
  /** Skip guest driver init (tests that program the device by hand). */
  readonly noInit?: boolean;
}

/** A passthrough device as a test sees it: the physical device and where the guest sees it. */
export interface AssignedDevice {
  readonly device: DmaDevice;
  readonly devId: number;
  readonly guestRid: number;
  readonly instance: number;
}

/** One VM of a testbed, with its VMM iommufd, shared stage-2 parent, emulated IOMMUs and guest drivers. */
export interface TestVm {
  readonly vm: VirtualMachine;
  readonly iommufd: IommufdContext;
  readonly ioasId: number;
  readonly parentHwptId: number;
  readonly iommus: EmulatedIommu[];
  readonly drivers: GuestIommuDriver[];
  readonly devices: AssignedDevice[];
  /** The guest kernel's memory for driver structures (top 32 MiB of RAM). */
  readonly pages: GuestPageAllocator;
}

/** Objects a VM's iommufd still held after its devices were destroyed and the context closed. */
export interface TestbedLeftovers {
  readonly vm: number;
  /** "TYPE id" of each object left. */
  readonly objects: readonly string[];
}

/**
 * A whole system for one vendor: host with physical units, VMs with guest RAM mapped into an IOAS at
 * IOVA = GPA, a shared nesting parent per VM, the vendor's emulated IOMMU(s) and reference guest driver(s),
 * and passthrough devices, wired the way a VMM wires them. The conformance suite, the demo, vendors'
 * benchmarks and the tests build on it.
 */
export class Testbed {
  readonly vms: TestVm[] = [];
  readonly units: PhysicalIommu[] = [];

  private constructor(
    readonly platform: Platform,
    readonly plugin: VendorPlugin,
    readonly options: TestbedOptions,
  ) {}

  static create(options: TestbedOptions): Result<Testbed> {
    const problem = devicePropertyProblem(options.plugin.properties, options.properties);
    if (problem !== undefined) return err("EINVAL", `${options.plugin.id}: ${problem}`);
    for (const cost of [options.exitCost, ...options.vms.map((v) => v.exitCost)]) {
      const bad = cost === undefined ? undefined : exitCostProblem(cost);
      if (bad !== undefined) return err("EINVAL", bad);
    }
    const platform = new Platform({ plugins: [...(options.plugins ?? []), options.plugin], seed: options.seed });
    const bed = new Testbed(platform, options.plugin, options);
    const instances = Math.max(1, ...options.vms.map((v) => v.instances ?? 1));
    for (let i = 0; i < instances; i++) {
      const unit = platform.createUnit(options.plugin.id);
      if (!unit.ok) return fail(unit);
      bed.units.push(unit.value);
    }
    for (const vmOptions of options.vms) {
      const vm = bed.addVm(vmOptions);
      if (!vm.ok) {
        platform.dispose();
        return fail(vm);
      }
    }
    return ok(bed);
  }

  private addVm(options: TestbedVmOptions): Result<TestVm> {
    const mode = this.options.mode ?? "nested";
    const vm = this.platform.createVm({
      memoryBytes: options.memoryBytes ?? 2 ** 32,
      memoryBase: options.memoryBase,
      vcpus: options.vcpus,
      confidential: options.confidential,
      backingPageShift: options.backingPageShift,
      exitCost: options.exitCost ?? this.options.exitCost,
    });
    const iommufd = new IommufdContext(vm.id);
    if (options.devices.length === 0) return err("EINVAL", "a testbed VM needs at least one device");
    const devices: AssignedDevice[] = [];
    for (const d of options.devices) {
      const instance = d.instance ?? 0;
      const unit = this.units[instance];
      if (unit === undefined) return err("EINVAL", `no unit for instance ${instance}`);
      const device = this.platform.createDevice(unit, d.rid, `dev-${vm.id}-${d.rid.toString(16)}`, d.pasidBits ?? 0, d.pri ?? false);
      const devId = iommufd.bindDevice(device);
      if (!devId.ok) return fail(devId);
      devices.push({ device, devId: devId.value, guestRid: d.guestRid, instance });
    }
    const ioas = iommufd.ioasAlloc();
    if (!ioas.ok) return fail(ioas);
    const mem = vm.memory;
    const mapped = iommufd.ioasMap({ ioasId: ioas.value, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: mem, gpa: mem.base, length: mem.sizeBytes, iova: mem.base });
    if (!mapped.ok) return fail(mapped);
    const parentFlags = HwptAllocFlag.NEST_PARENT | (this.options.dirtyTracking ? HwptAllocFlag.DIRTY_TRACKING : 0);
    // With PASID-capable devices the parent is asked to be PASID-compatible too (a VMM attaching guest PASIDs
    // needs it); a unit that cannot make such a nesting parent answers EOPNOTSUPP and the plain one is used.
    const pasidDevices = options.devices.some((d) => (d.pasidBits ?? 0) > 0);
    let parent = iommufd.hwptAlloc({ flags: parentFlags | (pasidDevices ? HwptAllocFlag.PASID : 0), devId: devices[0]!.devId, ptId: ioas.value });
    if (!parent.ok && pasidDevices && parent.error.errno === "EOPNOTSUPP") parent = iommufd.hwptAlloc({ flags: parentFlags, devId: devices[0]!.devId, ptId: ioas.value });
    if (!parent.ok) return fail(parent);
    const pages = new GuestPageAllocator(mem, mem.end - 32 * 2 ** 20, mem.end);
    const iommus: EmulatedIommu[] = [];
    const drivers: GuestIommuDriver[] = [];
    for (let instance = 0; instance < (options.instances ?? 1); instance++) {
      const anchor = devices.find((d) => d.instance === instance);
      if (anchor === undefined) return err("EINVAL", `instance ${instance} has no device`);
      const iommu = this.plugin.createDevice({
        vm,
        iommufd,
        unit: this.units[instance]!,
        ioasId: ioas.value,
        parentHwptId: parent.value,
        anchorDevId: anchor.devId,
        mode,
        shadowBackend: this.options.shadowBackend,
        dmaEntryLimit: this.options.dmaEntryLimit,
        eventInterrupts: this.options.eventInterrupts,
        deviceInterrupts: this.options.deviceInterrupts,
        properties: this.options.properties,
        audit: this.options.audit,
        instance,
      });
      if (!iommu.ok) return fail(iommu);
      iommus.push(iommu.value);
      for (const d of devices.filter((x) => x.instance === instance)) {
        const r = iommu.value.assignDevice(d.device, d.devId, d.guestRid);
        if (!r.ok) return fail(r);
      }
      const driver = this.plugin.createDriver({ vm, memory: mem, pages, acpi: iommu.value.acpiTables?.() ?? [], mmioBase: iommu.value.mmioBase }, iommu.value);
      drivers.push(driver);
    }
    const testVm: TestVm = { vm, iommufd, ioasId: ioas.value, parentHwptId: parent.value, iommus, drivers, devices, pages };
    this.vms.push(testVm);
    if (!this.options.noInit) {
      for (const driver of drivers) {
        const r = driver.init({ translation: mode !== "ir-only", interruptRemapping: this.plugin.capabilities.interruptRemapping, ...this.options.guest });
        if (!r.ok) return fail(r);
      }
    }
    return ok(testVm);
  }

  /** Runs every VMM's event loop once (drains vEVENTQs into guest logs). */
  poll(): void {
    for (const v of this.vms) for (const iommu of v.iommus) iommu.poll();
  }

  /**
   * Destroys every emulated IOMMU, closes every VM's iommufd and disposes the platform. Returns what each
   * close could not free (empty when teardown is clean; anything else is a leak in a vendor's destroy).
   */
  dispose(): TestbedLeftovers[] {
    const leftovers: TestbedLeftovers[] = [];
    for (const v of this.vms) {
      for (const iommu of v.iommus) iommu.destroy();
      const objects = v.iommufd.close();
      if (objects.length > 0) leftovers.push({ vm: v.vm.id, objects: objects.map((o) => `${o.type} ${o.id}`) });
    }
    this.platform.dispose();
    return leftovers;
  }
}
