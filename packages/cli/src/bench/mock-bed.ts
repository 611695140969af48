import { mockPlugin, MockNestedDomain, type MockUnit } from "@viommu/example-mock";
import { IommuOption, IommuOptionOp, IoasMapFlag, Perm, Testbed, type DmaDevice, type GuestIommuDriver, type Result, type TestVm } from "@viommu/core";

/** The core figures' system: the mock vendor's unit under one VM, a nested domain the guest driver built. */
export interface MockBed {
  readonly bed: Testbed;
  readonly vm: TestVm;
  readonly unit: MockUnit;
  readonly device: DmaDevice;
  readonly driver: GuestIommuDriver;
  readonly domain: number;
  /** The domain the host unit attached the device to (stage-1 root, nesting parent). */
  nested(): MockNestedDomain;
  dispose(): void;
}

export interface MockBedOptions {
  readonly memoryBytes?: number;
  /** Stage 2 with 4 KiB leaves only (IOMMU_OPTION_HUGE_PAGES = 0), so every stage-2 walk reads four levels. */
  readonly smallStage2?: boolean;
  readonly backingPageShift?: number;
}

function unwrap<T>(r: Result<T>, what: string): T {
  if (!r.ok) throw new Error(`bench setup: ${what}: ${r.error.errno} ${r.error.message}`);
  return r.value;
}

export const BENCH_RID = 0x100;
const GUEST_RID = 0x10;

export function mockBed(options: MockBedOptions = {}): MockBed {
  const bed = unwrap(Testbed.create({ plugin: mockPlugin, vms: [{ devices: [{ rid: BENCH_RID, guestRid: GUEST_RID }], memoryBytes: options.memoryBytes ?? 2 ** 28, backingPageShift: options.backingPageShift }], noInit: options.smallStage2 === true }), "testbed");
  const vm = bed.vms[0]!;
  if (options.smallStage2 === true) {
    const mem = vm.vm.memory;
    unwrap(vm.iommufd.ioasUnmap({ ioasId: vm.ioasId, iova: 0, length: 2n ** 64n - 1n }), "unmap guest RAM");
    unwrap(vm.iommufd.option({ optionId: IommuOption.HUGE_PAGES, op: IommuOptionOp.SET, objectId: vm.ioasId, val64: 0n }), "HUGE_PAGES 0");
    unwrap(
      vm.iommufd.ioasMap({ ioasId: vm.ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: mem, gpa: mem.base, length: mem.sizeBytes, iova: mem.base }),
      "map guest RAM in 4 KiB pages",
    );
  }
  const driver = vm.drivers[0]!;
  // Remapped before the driver starts: its guest-owned queue pins the memory it lives in.
  if (options.smallStage2 === true) unwrap(driver.init({ translation: true, interruptRemapping: mockPlugin.capabilities.interruptRemapping }), "driver init");
  const domain = unwrap(driver.createDomain(), "create domain");
  unwrap(driver.attach(GUEST_RID, domain), "attach");
  const unit = bed.units[0] as MockUnit;
  const device = vm.devices[0]!.device;
  return {
    bed,
    vm,
    unit,
    device,
    driver,
    domain,
    nested() {
      const d = unit.domainOf(BENCH_RID, -1);
      if (!(d instanceof MockNestedDomain)) throw new Error("bench setup: the device is not attached to a nested domain");
      return d;
    },
    dispose: () => void bed.dispose(),
  };
}

/** Maps `count` scattered 4 KiB pages (IOVA stride `stride`) read-write to consecutive guest pages from `gpa`. */
export function mapScattered(b: MockBed, iova: number, stride: number, gpa: number, count: number): void {
  for (let i = 0; i < count; i++) unwrap(b.driver.map(b.domain, iova + i * stride, gpa + i * 4096, 4096, Perm.ReadWrite), `map page ${i}`);
}
