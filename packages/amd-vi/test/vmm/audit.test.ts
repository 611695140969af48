import { describe, expect, it } from "vitest";
import { Testbed, type TestbedOptions, type TestVm } from "@viommu/conformance";
import { Perm, unwrap, type Result, type StaleTranslationFinding } from "@viommu/core";
import type { AmdViGuestDriver } from "../../src/guest/amd-vi-driver.js";
import { createAmdViPlugin } from "../../src/plugin.js";
import type { AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import { DATA_GPA, IOVA } from "../support.js";

/** Both command-buffer configurations: the hardware vIOMMU runs the guest's buffer, or the VMM traps it. */
const configurations = ["hw-vqueue", "trapped"] as const;

function auditedBed(commandBuffer: (typeof configurations)[number], extra: Partial<TestbedOptions> = {}) {
  const bed = unwrap(Testbed.create({ plugin: createAmdViPlugin({ commandBuffer }), vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], audit: true, ...extra }));
  const v = bed.vms[0]!;
  const findings: StaleTranslationFinding[] = [];
  bed.platform.host.events.on("staleTranslation", (f) => findings.push(f));
  return { bed, v, findings, driver: v.drivers[0] as AmdViGuestDriver, device: v.iommus[0] as AmdViDevice, dev: v.devices[0]!.device };
}

const fault = /^fault \(/;

/** The host address backing a guest-physical one: what the host unit's translation outputs. */
function hpa(v: TestVm, gpa: number): string {
  return `0x${v.vm.memory.backingOf(gpa)!.toString(16)}`;
}

describe.each(configurations)("the stale-translation audit (%s command buffer)", (commandBuffer) => {
  it("is off by default: no audit object, the stale IOTLB entry is used without a finding", () => {
    const { bed, v, findings, device, dev, driver } = auditedBed(commandBuffer, { audit: undefined, guest: { skipInvalidation: "iotlb" } });
    expect(device.audit).toBeUndefined();
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, domain));
    unwrap(driver.map(domain, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    expect(dev.read(IOVA, 8).ok).toBe(true);
    unwrap(driver.unmap(domain, IOVA, 0x1000));
    // The IOTLB still holds the translation the guest forgot to invalidate: the hardware's behaviour.
    expect(dev.read(IOVA, 8).ok).toBe(true);
    bed.poll();
    expect(findings).toEqual([]);
    expect(v.vm.id).toBeGreaterThanOrEqual(0);
  });

  it("iotlb: an unmap without INVALIDATE_IOMMU_PAGES is caught at the next hit, naming device, IOVA, both results and the last invalidation", () => {
    const { findings, driver, dev, device, v } = auditedBed(commandBuffer, { guest: { skipInvalidation: "iotlb" } });
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, domain));
    unwrap(driver.map(domain, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    expect(dev.read(IOVA, 8).ok).toBe(true);
    expect(findings).toEqual([]);
    unwrap(driver.unmap(domain, IOVA, 0x1000));
    dev.read(IOVA + 0x10, 8);
    expect(findings).toHaveLength(1);
    const f = findings[0]!;
    expect(f).toMatchObject({ rid: 0x10, iova: IOVA + 0x10, cache: "IOTLB", cached: `${hpa(v, DATA_GPA + 0x10)} rw (4K)` });
    expect(f.unit).toBe("amdvi0");
    expect(f.tables).toMatch(fault);
    // The last invalidation covering the address: the map's flush (NpCache), by the device's GCR3 DomainID and PASID 0.
    expect(f.lastInvalidation?.what).toMatch(/^INVALIDATE_IOMMU_PAGES DomainID \d+ PASID 0$/);
    expect(device.audit?.findings).toHaveLength(1);
  });

  it("iotlb: the correct driver's unmap leaves nothing to find", () => {
    const { findings, driver, dev } = auditedBed(commandBuffer);
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, domain));
    unwrap(driver.map(domain, IOVA, DATA_GPA, 0x2000, Perm.ReadWrite));
    expect(dev.read(IOVA, 8).ok).toBe(true);
    unwrap(driver.unmap(domain, IOVA, 0x1000));
    expect(dev.read(IOVA, 8).ok).toBe(false);
    expect(dev.read(IOVA + 0x1000, 8).ok).toBe(true);
    expect(findings).toEqual([]);
  });

  it("context: a DTE changed without INVALIDATE_DEVTAB_ENTRY is caught at the next use through the stale entry", () => {
    const { findings, driver, dev, v } = auditedBed(commandBuffer, { guest: { skipInvalidation: "context" } });
    const domain = unwrap(driver.createDomain());
    unwrap(driver.map(domain, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    unwrap(driver.attach(0x10, domain));
    expect(dev.read(IOVA, 8).ok).toBe(true);
    expect(findings).toEqual([]);
    // Detach: PASID 0 cleared, then the GCR3 table dropped and the blocked DTE written, none of it invalidated.
    unwrap(driver.detach(0x10));
    dev.read(IOVA, 8);
    const f = findings.find((x) => x.cache === "context cache");
    expect(f, JSON.stringify(findings)).toBeDefined();
    expect(f).toMatchObject({ rid: 0x10, iova: IOVA, cached: `${hpa(v, DATA_GPA)} rw (4K)` });
    expect(f!.tables).toMatch(fault);
    // The attach that installed the GCR3 table was announced: that is the last device-table invalidation.
    expect(f!.lastInvalidation?.what).toMatch(/^INVALIDATE_IOMMU_PAGES DomainID \d+ PASID 0$|^INVALIDATE_DEVTAB_ENTRY 0x10$/);
  });

  it("context: a GCR3 entry repointed without its flush is caught at the IOTLB hit it left behind", () => {
    const { findings, driver, dev, v } = auditedBed(commandBuffer, { guest: { skipInvalidation: "context" } });
    const a = unwrap(driver.createDomain());
    const b = unwrap(driver.createDomain());
    unwrap(driver.map(a, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    unwrap(driver.map(b, IOVA, DATA_GPA + 0x1000, 0x1000, Perm.Read));
    unwrap(driver.attach(0x10, a));
    expect(dev.read(IOVA, 8).ok).toBe(true);
    unwrap(driver.attach(0x10, b));
    dev.read(IOVA, 8);
    expect(findings).toHaveLength(1);
    expect(findings[0]).toMatchObject({ rid: 0x10, iova: IOVA, cache: "IOTLB", cached: `${hpa(v, DATA_GPA)} rw (4K)`, tables: `${hpa(v, DATA_GPA + 0x1000)} r- (4K)` });
  });

  it("context: the correct driver's domain change leaves nothing to find", () => {
    const { findings, driver, dev } = auditedBed(commandBuffer);
    const a = unwrap(driver.createDomain());
    const b = unwrap(driver.createDomain());
    unwrap(driver.map(a, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    unwrap(driver.map(b, IOVA, DATA_GPA + 0x1000, 0x1000, Perm.Read));
    unwrap(driver.attach(0x10, a));
    expect(dev.read(IOVA, 8).ok).toBe(true);
    unwrap(driver.attach(0x10, b));
    expect(dev.read(IOVA, 8).ok).toBe(true);
    expect(dev.write(IOVA, Uint8Array.of(1)).ok).toBe(false);
    unwrap(driver.detach(0x10));
    expect(dev.read(IOVA, 8).ok).toBe(false);
    expect(findings).toEqual([]);
  });

  it("interrupt: an IRTE freed without INVALIDATE_INTERRUPT_TABLE is caught at the next interrupt through the cached entry", () => {
    const { bed, findings, driver, dev, v } = auditedBed(commandBuffer, { guest: { skipInvalidation: "interrupt" } });
    const msi = unwrap(driver.mapInterrupt(0x10, 0x44, 2));
    dev.signalMsi(msi);
    expect(v.vm.interrupts.take().filter((i) => i.source.startsWith("msi")).map((i) => i.vector)).toEqual([0x44]);
    unwrap(driver.unmapInterrupt(0x10, msi));
    dev.signalMsi(msi);
    bed.poll();
    // The IOMMU used the cached IRTE: the interrupt was delivered as before.
    expect(v.vm.interrupts.take().filter((i) => i.source.startsWith("msi")).map((i) => i.vector)).toEqual([0x44]);
    expect(findings).toHaveLength(1);
    const f = findings[0]!;
    expect(f).toMatchObject({ rid: 0x10, iova: msi.data & 0x7ff, cache: "interrupt entry cache", cached: `0x${(2 * 256 + 0x44).toString(16)} rw (4K)` });
    expect(f.tables).toMatch(fault);
    expect(f.lastInvalidation?.what).toBe("INVALIDATE_DEVTAB_ENTRY 0x10");
  });

  it("interrupt: the correct driver's INVALIDATE_INTERRUPT_TABLE drops the cached IRTE (the freed entry faults) and nothing is found", () => {
    const { bed, findings, driver, dev, v } = auditedBed(commandBuffer);
    const msi = unwrap(driver.mapInterrupt(0x10, 0x44, 2));
    dev.signalMsi(msi);
    unwrap(driver.unmapInterrupt(0x10, msi));
    v.vm.interrupts.take();
    dev.signalMsi(msi);
    bed.poll();
    expect(v.vm.interrupts.take().filter((i) => i.source.startsWith("msi"))).toEqual([]);
    expect(findings).toEqual([]);
  });

  it("interrupt: INVALIDATE_IOMMU_ALL drops cached IRTEs too", () => {
    const { bed, findings, driver, dev, v } = auditedBed(commandBuffer, { guest: { skipInvalidation: "interrupt" } });
    const msi = unwrap(driver.mapInterrupt(0x10, 0x44, 2));
    dev.signalMsi(msi);
    unwrap(driver.unmapInterrupt(0x10, msi));
    unwrap((driver as unknown as { flushAll(): Result<void> }).flushAll());
    v.vm.interrupts.take();
    dev.signalMsi(msi);
    bed.poll();
    expect(v.vm.interrupts.take().filter((i) => i.source.startsWith("msi"))).toEqual([]);
    expect(findings).toEqual([]);
  });
});
