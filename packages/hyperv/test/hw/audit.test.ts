/**
 * The stale-translation audit on the pvIOMMU: the guest's one invalidation is the IOTLB flush of a stage-1 device
 * domain (HVCALL_FLUSH_DEVICE_DOMAIN / _LIST). With VmmDeviceOptions.audit every IOTLB hit of an assigned device is
 * checked against a fresh nested walk of the guest's x86-64 table; a driver that unmaps without the flush is caught
 * at the first use of the stale entry, naming the device, the IOVA, both results and the last flush.
 */
import { describe, expect, it } from "vitest";
import { conformanceCases, runCase } from "@viommu/conformance";
import { Perm, unwrap, type StaleTranslationFinding } from "@viommu/core";
import { hypervPlugin } from "../../src/plugin.js";
import { DATA_GPA, hvBed, IOVA } from "../support.js";

function audited(skip: "iotlb" | undefined, audit = true) {
  const b = hvBed({ audit, guest: skip === undefined ? {} : { skipInvalidation: skip } });
  const findings: StaleTranslationFinding[] = [];
  b.bed.platform.host.events.on("staleTranslation", (f) => findings.push(f));
  return { ...b, findings, dev: b.v.devices[0]!.device };
}

describe("stale-translation audit (hyperv)", () => {
  it("passes the conformance case stale-translation-audit", () => {
    const kase = conformanceCases.find((k) => k.id === "stale-translation-audit")!;
    expect(runCase(hypervPlugin, kase, 1, [])).toMatchObject({ status: "pass" });
  });

  it("an unmap without HVCALL_FLUSH_DEVICE_DOMAIN_LIST: the stale IOTLB hit is a finding with the device, IOVA, both results and the last flush", () => {
    const { bed, v, driver, dev, findings } = audited("iotlb");
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x2000, Perm.ReadWrite));
    expect(dev.read(IOVA + 0x10, 4).ok).toBe(true);
    unwrap(driver.flush(d));
    expect(dev.read(IOVA + 0x10, 4).ok).toBe(true);
    unwrap(driver.unmap(d, IOVA, 0x1000));
    expect(dev.read(IOVA + 0x10, 4).ok).toBe(true);
    expect(findings).toHaveLength(1);
    expect(findings[0]).toMatchObject({ vm: v.vm.id, unit: "hv-iommu0", cache: "IOTLB", rid: 0x10, iova: IOVA + 0x10, tables: expect.stringMatching(/^fault/), lastInvalidation: { what: expect.stringMatching(/^HVCALL_FLUSH_DEVICE_DOMAIN \d+$/) } });
    expect(findings[0]!.cached).toMatch(/ rw \(4K\)$/);
    // The page the unmap left alone still agrees with the tables.
    expect(dev.read(IOVA + 0x1000, 4).ok).toBe(true);
    expect(dev.read(IOVA + 0x1000, 4).ok).toBe(true);
    expect(findings).toHaveLength(1);
    bed.dispose();
  });

  it("the correct driver's flush leaves nothing stale, and without the audit nothing is checked", () => {
    for (const [skip, audit] of [[undefined, true], ["iotlb", false]] as const) {
      const { bed, driver, dev, findings } = audited(skip, audit);
      const d = unwrap(driver.createDomain());
      unwrap(driver.attach(0x10, d));
      unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
      dev.read(IOVA, 4);
      dev.read(IOVA, 4);
      unwrap(driver.unmap(d, IOVA, 0x1000));
      expect(dev.read(IOVA, 4).ok).toBe(skip === "iotlb");
      expect(findings).toEqual([]);
      bed.dispose();
    }
  });

  it("declares the IOTLB as its only class: attachments, roots and interrupt entries are hypercall arguments applied at once", () => {
    expect(hypervPlugin.capabilities).toMatchObject({ audit: true, auditClasses: ["iotlb"] });
    const { bed, driver, dev, findings } = audited(undefined);
    const a = unwrap(driver.createDomain());
    const b = unwrap(driver.createDomain());
    unwrap(driver.map(a, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    unwrap(driver.attach(0x10, a));
    expect(dev.read(IOVA, 4).ok).toBe(true);
    unwrap(driver.attach(0x10, b));
    expect(dev.read(IOVA, 4).ok).toBe(false);
    expect(findings).toEqual([]);
    bed.dispose();
  });
});
