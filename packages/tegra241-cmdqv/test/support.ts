import { unwrap, Perm, type GuestDomainId } from "@viommu/core";
import { Testbed, type TestbedOptions, type TestVm } from "@viommu/conformance";
import { smmuv3Plugin, type Smmuv3Unit } from "@viommu/smmuv3";
import { Tegra241GuestDriver } from "../src/guest/tegra241-driver.js";
import type { GuestCmdqv } from "../src/guest/guest-cmdqv.js";
import { Tegra241CmdqvDriver } from "../src/hw/cmdqv-driver.js";
import type { Tegra241Cmdqv } from "../src/hw/cmdqv.js";
import { tegra241CmdqvPlugin } from "../src/plugin.js";
import type { CmdqvVmm } from "../src/vmm/cmdqv-vmm.js";
import { Tegra241Device } from "../src/vmm/tegra241-device.js";

export const IOVA = 0x10_0000;
export const DATA_GPA = 0x2000_0000;

/** A testbed of the Tegra plugin (SMMUv3 registered as its parent); one VM, one device at guest SID 0x10 by default. */
export function tegraBed(options: Partial<Omit<TestbedOptions, "plugin">> = {}): Testbed {
  return unwrap(Testbed.create({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], memoryBytes: 2 ** 32 }], ...options, plugin: tegra241CmdqvPlugin, plugins: [smmuv3Plugin] }));
}

export function device(v: TestVm, instance = 0): Tegra241Device {
  const d = v.iommus[instance];
  if (!(d instanceof Tegra241Device)) throw new Error("not a Tegra241 device");
  return d;
}

export function vmm(v: TestVm, instance = 0): CmdqvVmm {
  const c = device(v, instance).cmdqv;
  if (c === undefined) throw new Error("the VM got no CMDQV");
  return c;
}

export function driver(v: TestVm, instance = 0): Tegra241GuestDriver {
  const d = v.drivers[instance];
  if (!(d instanceof Tegra241GuestDriver)) throw new Error("not the Tegra241 guest driver");
  return d;
}

export function guestCmdqv(v: TestVm, instance = 0): GuestCmdqv {
  const c = driver(v, instance).cmdqv;
  if (c === undefined) throw new Error("the guest found no CMDQV");
  return c;
}

export function hardware(bed: Testbed, unit = 0): Tegra241Cmdqv {
  const ext = (bed.units[unit] as Smmuv3Unit).extension;
  if (!(ext instanceof Tegra241CmdqvDriver)) throw new Error("the unit has no CMDQV");
  return ext.cmdqv;
}

/** Creates a domain, attaches guest SID 0x10 and maps [IOVA, IOVA + length) to DATA_GPA. */
export function mapped(v: TestVm, length = 0x4000): GuestDomainId {
  const d = v.drivers[0]!;
  const domain = unwrap(d.createDomain());
  unwrap(d.attach(0x10, domain));
  unwrap(d.map(domain, IOVA, DATA_GPA, length, Perm.ReadWrite));
  return domain;
}
