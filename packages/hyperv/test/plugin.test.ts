import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { Perm, Platform, unwrap, type CapabilityName } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import hypervDefault, { hypervPlugin, registerHyperv } from "../src/plugin.js";

describe("the hyperv plugin descriptor", () => {
  it("declares every absent capability with its reason, and what Hyper-V has", () => {
    const caps = hypervPlugin.capabilities;
    expect(caps).toMatchObject({ nested: true, interruptRemapping: true, irOnly: true, migration: true, commandQueue: false, eventLog: false, acpi: false, shadow: false });
    const absent = (Object.keys(caps) as (keyof typeof caps)[]).filter((k) => caps[k] === false) as CapabilityName[];
    for (const cap of absent) expect(caps.reasons?.[cap], cap).toBeTruthy();
    expect(hypervPlugin.acpi).toBeUndefined();
    // A walk over a device domain's table; no QEMU model to name properties after, no Linux debugfs to import.
    expect(hypervPlugin.walk?.registers).toContain("PAGE_TABLE_ROOT");
    expect(hypervPlugin.properties).toBeUndefined();
    expect(hypervPlugin.debugfs).toBeUndefined();
    // No interim "not modelled yet" reason is left.
    for (const reason of Object.values(caps.reasons ?? {})) expect(reason).not.toMatch(/not modelled yet|issue \d+ is adding/);
  });

  it("is found through its package.json and registers itself only when asked", () => {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { viommu: { plugin: string }; exports: Record<string, unknown> };
    expect(pkg.viommu.plugin).toBe("./plugin");
    expect(pkg.exports["./plugin"]).toMatchObject({ types: "./dist/plugin.d.ts", "viommu-source": "./src/plugin.ts", default: "./dist/plugin.js" });
    expect(hypervDefault).toBe(hypervPlugin);
    const platform = new Platform({ plugins: [] });
    expect(platform.plugin("hyperv")).toBeUndefined();
    registerHyperv(platform.container);
    expect(platform.plugin("hyperv")).toBe(hypervPlugin);
    platform.dispose();
  });

  it("offers decode structures for the values, the PTE and every hypercall input, and its bench figures", () => {
    const ids = hypervPlugin.structures.map((s) => s.id);
    expect(ids).toEqual(expect.arrayContaining(["hypercall-input", "hypercall-result", "pte", "map-device-gpa-pages", "map-device-interrupt", "retarget-interrupt"]));
    expect(hypervPlugin.bench?.map((b) => b.name)).toEqual(["hyperv-iotlb-hit-translate-vs-map", "hyperv-audit-on-vs-off", "hyperv-invalidations-through-driver", "hyperv-dma-fill-and-invalidate", "hyperv-s2-map-reps"]);
  });

  it("runs the demo's steps with its 300-vCPU profile: DMA, a blocked out-of-bounds DMA, an invalidation, an MSI to vCPU 299", () => {
    const profile = hypervPlugin.demo!;
    expect(profile.vcpus).toBe(300);
    const bed = unwrap(Testbed.create({ plugin: hypervPlugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: profile.vcpus }], guest: profile.guest }));
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const nvme = v.devices[0]!.device;
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, 0x40_0000, 0x1000_0000, 0x10_0000, Perm.ReadWrite));
    expect(nvme.write(0x40_0000 + 0xf_f000, new Uint8Array(4096).fill(7)).ok).toBe(true);
    expect(v.vm.memory.read8(0x1000_0000 + 0xf_ffff)).toBe(7);
    expect(nvme.write(0x40_0000 + 0x20_0000, Uint8Array.of(1)).ok).toBe(false);
    unwrap(driver.unmap(d, 0x40_0000, 0x1000));
    expect(nvme.read(0x40_0000, 4).ok).toBe(false);
    const msi = unwrap(driver.mapInterrupt!(0x10, 0x61, profile.vcpus! - 1));
    v.vm.interrupts.take();
    nvme.signalMsi(msi);
    expect(v.vm.interrupts.take().map((i) => [i.vector, i.destination])).toEqual([[0x61, 299]]);
    expect(bed.platform.host.memory.violations).toEqual([]);
    bed.dispose();
  });
});

describe("two pvIOMMU instances in one VM", () => {
  it("share one hypercall interface, one guest driver and partition-wide domains, each realised on its own unit", () => {
    const bed = unwrap(
      Testbed.create({ plugin: hypervPlugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10, instance: 0 }, { rid: 0x300, guestRid: 0x20, instance: 1 }], instances: 2 }] }),
    );
    const v = bed.vms[0]!;
    expect(v.drivers[0]).toBe(v.drivers[1]);
    const driver = v.drivers[0]!;
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.attach(0x20, d));
    unwrap(driver.map(d, 0x10_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
    expect(v.devices[0]!.device.write(0x10_0000, Uint8Array.of(1)).ok).toBe(true);
    expect(v.devices[1]!.device.read(0x10_0000, 1).ok).toBe(true);
    unwrap(driver.unmap(d, 0x10_0000, 0x1000));
    // One flush reached both units.
    expect(v.devices[0]!.device.read(0x10_0000, 1).ok).toBe(false);
    expect(v.devices[1]!.device.read(0x10_0000, 1).ok).toBe(false);
    // The second instance leaving keeps the first working.
    v.iommus[1]!.destroy();
    v.iommus.length = 1;
    unwrap(driver.map(d, 0x20_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
    expect(v.devices[0]!.device.read(0x20_0000, 1).ok).toBe(true);
    bed.dispose();
  });
});
