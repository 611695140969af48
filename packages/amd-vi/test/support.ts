import { caseSupport, Testbed, type TestbedOptions, type TestVm } from "@viommu/conformance";
import { Perm, unwrap, type PermBits } from "@viommu/core";
import { AmdViGuestDriver } from "../src/guest/amd-vi-driver.js";
import { AmdViUnit } from "../src/hw/amd-vi-unit.js";
import { amdViPlugin } from "../src/plugin.js";
import { AmdViDevice } from "../src/vmm/amd-vi-device.js";

export const DATA_GPA = 0x2000_0000;
export const IOVA = 0x10_0000;

/** A testbed on the AMD-Vi plugin (real host, VMM, guest driver and memory). */
export function amdBed(options: Partial<TestbedOptions> & Pick<TestbedOptions, "vms">): Testbed {
  return unwrap(Testbed.create({ plugin: amdViPlugin, ...options }));
}

export function oneVm(extra: Partial<TestbedOptions> = {}, vm: Partial<TestbedOptions["vms"][number]> = {}): { bed: Testbed; v: TestVm; device: AmdViDevice; driver: AmdViGuestDriver; unit: AmdViUnit } {
  const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], ...vm }], ...extra });
  const v = bed.vms[0]!;
  return { bed, v, device: v.iommus[0] as AmdViDevice, driver: v.drivers[0] as AmdViGuestDriver, unit: bed.units[0] as AmdViUnit };
}

export function mapOne(v: TestVm, guestRid: number, iova: number, gpa: number, length: number, perms: PermBits = Perm.ReadWrite): number {
  const driver = v.drivers[0]!;
  const domain = unwrap(driver.createDomain());
  unwrap(driver.attach(guestRid, domain));
  unwrap(driver.map(domain, iova, gpa, length, perms));
  return domain;
}

/** Deterministic test bytes: the conformance suite's generator. */
export const pattern: (length: number, seed: number) => Uint8Array = caseSupport.pattern;

/** The 64-bit words at `gpa` in guest memory, as hex text. */
export function qwords(v: TestVm, gpa: number, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `0x${v.vm.memory.read64(gpa + i * 8).toString(16)}`);
}

/**
 * The seed of the property tests: VIOMMU_SEED from the environment (to replay a failure), else a fresh one.
 * fast-check prints it in every failure it reports.
 */
export const FUZZ_SEED: number = process.env.VIOMMU_SEED !== undefined ? Number(process.env.VIOMMU_SEED) : Math.floor(Math.random() * 2 ** 31);

/** fast-check parameters with the run's seed, so a failure names the seed that reproduces it. */
export function fuzzParams(numRuns: number): { seed: number; numRuns: number } {
  return { seed: FUZZ_SEED, numRuns };
}
