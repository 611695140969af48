import fc from "fast-check";
import { Testbed, type TestbedOptions } from "@viommu/conformance";
import { unwrap, type TestbedDevice, type TranslationMode } from "@viommu/core";
import type { VtdGuestDriver, VtdVariant } from "../src/guest/vtd-driver.js";
import { vtdPlugin } from "../src/plugin.js";
import type { VtdDevice } from "../src/vmm/vtd-device.js";

export const DATA_GPA = 0x2000_0000;
export const IOVA = 0x10_0000;

export interface VtdBed {
  readonly bed: Testbed;
  readonly device: VtdDevice;
  readonly driver: VtdGuestDriver;
}

/** A one-VM testbed on the VT-d plugin with one passthrough device (physical 0x100, guest 0x10). */
export function vtdBed(mode: TranslationMode = "nested", variant?: VtdVariant, extra: Partial<Omit<TestbedOptions, "plugin" | "vms" | "mode">> = {}, devices: readonly TestbedDevice[] = [{ rid: 0x100, guestRid: 0x10 }]): VtdBed {
  const bed = unwrap(
    Testbed.create({
      plugin: vtdPlugin,
      mode,
      vms: [{ devices, vcpus: 8 }],
      ...extra,
      guest: { ...(variant !== undefined ? { variant } : {}), ...extra.guest },
    }),
  );
  const v = bed.vms[0]!;
  return { bed, device: v.iommus[0] as VtdDevice, driver: v.drivers[0] as VtdGuestDriver };
}

/** Creates a domain, attaches `rid` and maps [iova, iova + length) to `gpa`. */
export function mapped(b: VtdBed, rid: number, iova: number, gpa: number, length: number, perms = 3): number {
  const d = unwrap(b.driver.createDomain());
  unwrap(b.driver.attach(rid, d));
  unwrap(b.driver.map(d, iova, gpa, length, perms));
  return d;
}

/**
 * Runs a fast-check property with the seed from VIOMMU_SEED (a fresh one when unset), and names the seed in
 * the failure so the run can be repeated.
 */
export function checkProperty<Ts>(property: fc.IRawProperty<Ts>, params: Omit<fc.Parameters<Ts>, "seed"> = {}): void {
  const fromEnv = process.env.VIOMMU_SEED;
  const seed = fromEnv !== undefined && fromEnv !== "" ? Number(fromEnv) : Math.floor(Math.random() * 2 ** 31);
  try {
    fc.assert(property, { ...params, seed } as fc.Parameters<Ts>);
  } catch (e) {
    throw new Error(`property failed with VIOMMU_SEED=${seed}: ${(e as Error).message}`, { cause: e });
  }
}
