/**
 * The stale-translation audit on the mock, the reference for the contract (core StaleTranslationAudit): with
 * VmmDeviceOptions.audit, every IOTLB hit of an assigned device, and every use of an attachment whose device
 * entry the guest has since changed, is checked against a fresh walk of the guest's tables. A reference driver
 * skipping one invalidation class is caught with the finding's fields; the correct driver gives none.
 */
import { describe, expect, it } from "vitest";
import { conformanceCases, runCase, Testbed } from "@viommu/conformance";
import { Perm, unwrap, type SkippedInvalidation, type StaleTranslationFinding } from "@viommu/core";
import { mockPlugin } from "../src/plugin.js";

const IOVA = 0x40_0000;
const GPA = 0x100_0000;

function bed(skip: SkippedInvalidation | undefined, audit = true) {
  const b = unwrap(Testbed.create({ plugin: mockPlugin, audit, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], guest: skip === undefined ? {} : { skipInvalidation: skip } }));
  const findings: StaleTranslationFinding[] = [];
  b.platform.host.events.on("staleTranslation", (f) => findings.push(f));
  const v = b.vms[0]!;
  return { b, v, driver: v.drivers[0]!, dev: v.devices[0]!.device, findings };
}

describe("stale-translation audit (mock)", () => {
  it("passes the conformance case stale-translation-audit", () => {
    const kase = conformanceCases.find((k) => k.id === "stale-translation-audit")!;
    expect(runCase(mockPlugin, kase, 1, [])).toMatchObject({ status: "pass" });
  });

  it("an IOTLB entry kept after an unmap without INV_RANGE: the finding names the device, IOVA, both results and the last invalidation", () => {
    const { b, driver, dev, findings } = bed("iotlb");
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, GPA, 0x1000, Perm.ReadWrite));
    expect(dev.read(IOVA + 8, 4).ok).toBe(true);
    unwrap(driver.unmap(d, IOVA, 0x1000));
    // The stale IOTLB entry still translates: the device reaches the page, and the audit says so.
    expect(dev.read(IOVA + 8, 4).ok).toBe(true);
    expect(findings).toHaveLength(1);
    const f = findings[0]!;
    expect(f).toMatchObject({ vm: b.vms[0]!.vm.id, unit: b.units[0]!.name, cache: "IOTLB", rid: 0x10, iova: IOVA + 8, tables: expect.stringMatching(/^fault/) });
    expect(f.cached).toMatch(/^0x[0-9a-f]+ rw \(4K\)$/);
    // The map's INV_RANGE (caching mode) covered the address; nothing after the unmap did.
    expect(f.lastInvalidation).toMatchObject({ what: "INV_RANGE 1" });
    b.dispose();
  });

  it("an attachment kept after a device entry change without INV_DEVICE: a context-cache finding on IOTLB hits and on walks", () => {
    const { b, driver, dev, findings } = bed("context");
    const a = unwrap(driver.createDomain());
    const c = unwrap(driver.createDomain());
    unwrap(driver.map(a, IOVA, GPA, 0x2000, Perm.ReadWrite));
    unwrap(driver.map(c, IOVA, GPA + 0x1000, 0x1000, Perm.Read));
    unwrap(driver.attach(0x10, a));
    expect(dev.read(IOVA, 4).ok).toBe(true);
    expect(findings).toHaveLength(0);
    unwrap(driver.attach(0x10, c));
    // The host still holds domain a: an IOTLB hit on its page, then a walk of its table for the next page.
    expect(dev.read(IOVA, 4).ok).toBe(true);
    expect(dev.read(IOVA + 0x1000, 4).ok).toBe(true);
    expect(findings).toHaveLength(2);
    expect(findings[0]).toMatchObject({ cache: "context cache", rid: 0x10, iova: IOVA, cached: expect.stringMatching(/ rw \(4K\)$/), tables: expect.stringMatching(/ r- \(4K\)$/) });
    expect(findings[1]).toMatchObject({ cache: "context cache", rid: 0x10, iova: IOVA + 0x1000, cached: expect.stringMatching(/ rw \(4K\)$/), tables: expect.stringMatching(/^fault/) });
    // The first attach's INV_DEVICE is the last invalidation that covered the device.
    expect(findings[0]!.lastInvalidation).toMatchObject({ what: "INV_DEVICE" });
    b.dispose();
  });

  it("the interrupt class is not declared: the mock reads each IRTE at the remap, so a skipped INV_IRTE changes nothing", () => {
    expect(mockPlugin.capabilities.auditClasses).toEqual(["iotlb", "context"]);
    const { b, driver, dev, findings } = bed("interrupt");
    const msi = unwrap(driver.mapInterrupt!(0x10, 0x44, 1));
    dev.signalMsi(msi);
    unwrap(driver.unmapInterrupt!(0x10, msi));
    dev.signalMsi(msi);
    b.poll();
    expect(findings).toHaveLength(0);
    expect(driver.readEvents().map((e) => e.kind)).toEqual(["interrupt-fault"]);
    b.dispose();
  });

  it("is off by default: the same stale IOTLB entry gives no finding", () => {
    const { b, driver, dev, findings } = bed("iotlb", false);
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, GPA, 0x1000, Perm.ReadWrite));
    dev.read(IOVA, 4);
    unwrap(driver.unmap(d, IOVA, 0x1000));
    expect(dev.read(IOVA, 4).ok).toBe(true);
    expect(findings).toHaveLength(0);
    b.dispose();
  });
});

