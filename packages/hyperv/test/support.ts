import { unwrap, VendorPlugin, type GuestInitOptions, type VirtualMachine } from "@viommu/core";
import { Testbed, type TestbedOptions, type TestVm } from "@viommu/conformance";
import { decodeHypercallInput } from "../src/format/hypercall-input.js";
import { decodeHypercallResult } from "../src/format/hypercall-result.js";
import { encodeHypercall, HV_PARTITION_ID_SELF, hypercallByCode, type HypercallEncodeOptions, type HypercallSpec } from "../src/format/hypercalls.js";
import { HvDeviceDomainType } from "../src/format/device-domain.js";
import { HypervGuestDriver } from "../src/guest/hyperv-driver.js";
import { HypervUnit } from "../src/hw/hyperv-unit.js";
import { hypervPlugin } from "../src/plugin.js";
import { HypervDevice } from "../src/vmm/hyperv-device.js";

export const IOVA = 0x10_0000;
export const DATA_GPA = 0x2000_0000;

export interface HvBed {
  readonly bed: Testbed;
  readonly v: TestVm;
  readonly driver: HypervGuestDriver;
  readonly iommu: HypervDevice;
  readonly unit: HypervUnit;
}

/** A testbed of one VM (devices 0x100 → guest 0x10 and 0x208 → guest 0x18 unless given) on the hyperv plugin. */
export function hvBed(options: Partial<Omit<TestbedOptions, "plugin">> & { guest?: Partial<GuestInitOptions>; plugin?: VendorPlugin } = {}): HvBed {
  const bed = unwrap(
    Testbed.create({
      vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x208, guestRid: 0x18 }], memoryBytes: 2 ** 31 }],
      ...options,
      plugin: options.plugin ?? hypervPlugin,
    }),
  );
  const v = bed.vms[0]!;
  return { bed, v, driver: v.drivers[0] as HypervGuestDriver, iommu: v.iommus[0] as HypervDevice, unit: bed.units[0] as HypervUnit };
}

/** A plugin whose units walk 5-level stage-1 tables (HV_IOMMU_CAP_S1_5LVL, 57-bit IOVAs). */
export const fiveLevelPlugin: VendorPlugin = {
  ...hypervPlugin,
  register: (container) => void container.register(VendorPlugin, { useValue: fiveLevelPlugin }),
  createUnit: (host, index) => new HypervUnit(host, index, { fiveLevel: true }),
};

export interface CallRecord {
  readonly name: string;
  readonly status: number;
  readonly repsCompleted: number;
}

/** Records every hypercall the VM makes (name, status), without changing what it does. */
export function recordHypercalls(vm: VirtualMachine): CallRecord[] {
  const calls: CallRecord[] = [];
  const original = vm.hypercall.bind(vm);
  vm.hypercall = (input: bigint, inputGpa: number, outputGpa: number): bigint => {
    const value = original(input, inputGpa, outputGpa);
    const r = decodeHypercallResult(value);
    calls.push({ name: hypercallByCode(decodeHypercallInput(input).call_code)?.name ?? "UNKNOWN", status: r.status, repsCompleted: r.reps_completed });
    return value;
  };
  return calls;
}

/** A raw hypercall as a (possibly hostile) guest issues it: input bytes at `inputGpa`, the result decoded. */
export function rawCall<S extends HypercallSpec>(
  v: TestVm,
  spec: S,
  options: HypercallEncodeOptions<S>,
  where: { inputGpa?: number; outputGpa?: number; control?: (c: bigint) => bigint } = {},
): { status: number; repsCompleted: number; outputGpa: number } {
  const { control, bytes } = encodeHypercall(spec, options);
  const inputGpa = where.inputGpa ?? RAW_INPUT;
  const outputGpa = where.outputGpa ?? RAW_OUTPUT;
  v.vm.memory.writeBytes(inputGpa, bytes);
  const r = decodeHypercallResult(v.vm.hypercall(where.control ? where.control(control) : control, inputGpa, outputGpa));
  return { status: r.status, repsCompleted: r.reps_completed, outputGpa };
}

/** Pages the raw calls use (low guest RAM, away from the data pages and the driver's structures). */
export const RAW_INPUT = 0x8000;
export const RAW_OUTPUT = RAW_INPUT + 0x1000;

/** The device_domain member of an input. */
export function dd(id: number, type = HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1 as number): { partition_id: bigint; domain_id: { type: number; id: number } } {
  return { partition_id: HV_PARTITION_ID_SELF, domain_id: { type, id } };
}
