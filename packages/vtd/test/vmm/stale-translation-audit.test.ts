import { describe, expect, it } from "vitest";
import { Perm, unwrap, type StaleTranslationFinding, type TranslationMode } from "@viommu/core";
import type { VtdVariant } from "../../src/guest/vtd-driver.js";
import { VtdUnit } from "../../src/hw/vtd-unit.js";
import { DATA_GPA, IOVA, mapped, vtdBed } from "../support.js";

/** A bed with the audit on (unless `audit` is false) and the driver forgetting `skip`; the findings it publishes. */
function audited(mode: TranslationMode, variant: VtdVariant, skip: "iotlb" | "context" | "interrupt" | undefined, audit = true) {
  const b = vtdBed(mode, variant, { audit, guest: skip === undefined ? {} : { skipInvalidation: skip } });
  const findings: StaleTranslationFinding[] = [];
  b.bed.platform.host.events.on("staleTranslation", (f) => findings.push(f));
  return { ...b, findings, dev: b.bed.vms[0]!.devices[0]!.device };
}

const setups: [TranslationMode, VtdVariant, string, string][] = [
  ["nested", "scalable", "PASID cache", "P_IOTLB_INV|IOTLB DID"],
  ["shadow", "scalable", "PASID cache", "P_IOTLB_INV|IOTLB DID"],
  ["shadow", "legacy", "context cache", "IOTLB DID"],
];

describe.each(setups)("the stale-translation audit, %s mode, %s guest", (mode, variant, contextCache) => {
  it("finds nothing when the driver invalidates as it should", () => {
    const t = audited(mode, variant, undefined);
    const a = mapped(t, 0x10, IOVA, DATA_GPA, 0x2000);
    expect(t.dev.read(IOVA, 8).ok).toBe(true);
    unwrap(t.driver.unmap(a, IOVA, 0x1000));
    expect(t.dev.read(IOVA, 8).ok).toBe(false);
    const b = unwrap(t.driver.createDomain());
    unwrap(t.driver.map(b, IOVA, DATA_GPA + 0x1000, 0x1000, Perm.ReadWrite));
    unwrap(t.driver.attach(0x10, b));
    expect(t.dev.read(IOVA, 8).ok).toBe(true);
    const msi = unwrap(t.driver.mapInterrupt(0x10, 0x44, 2));
    t.dev.signalMsi(msi);
    unwrap(t.driver.unmapInterrupt(0x10, msi));
    t.dev.signalMsi(msi);
    expect(t.findings).toEqual([]);
    expect(t.device.audit?.findings).toEqual([]);
  });

  it("names the device, the IOVA, the cached and current answers and the last covering invalidation when the IOTLB flush after an unmap is skipped", () => {
    const t = audited(mode, variant, "iotlb");
    const a = mapped(t, 0x10, IOVA, DATA_GPA, 0x2000);
    expect(t.dev.read(IOVA, 8).ok).toBe(true);
    expect(t.findings).toEqual([]);
    unwrap(t.driver.unmap(a, IOVA, 0x1000));
    t.dev.read(IOVA + 0x10, 8);
    expect(t.findings).toHaveLength(1);
    const f = t.findings[0]!;
    expect(f).toMatchObject({ vm: t.bed.vms[0]!.vm.id, unit: `vtd@0x${t.device.mmioBase.toString(16)}`, cache: "IOTLB", rid: 0x10, iova: IOVA + 0x10, cached: `0x${(DATA_GPA + 0x10).toString(16)} rw (4K)` });
    expect(f.tables).toMatch(/^fault/);
    // The last invalidation that covered the page is the caching-mode flush that announced the map.
    expect(f.lastInvalidation?.what).toMatch(/IOTLB DID \d+ (PASID 0 )?0x100000\+0x2000/);
    // The neighbouring page the guest did not unmap still agrees with its tables.
    expect(t.dev.read(IOVA + 0x1000, 8).ok).toBe(true);
    expect(t.findings).toHaveLength(1);
  });

  it(`reports the ${contextCache} when the flush after a domain change is skipped`, () => {
    const t = audited(mode, variant, "context");
    const a = mapped(t, 0x10, IOVA, DATA_GPA, 0x1000);
    const b = unwrap(t.driver.createDomain());
    unwrap(t.driver.map(b, IOVA + 0x20_0000, DATA_GPA + 0x1000, 0x1000, Perm.ReadWrite));
    expect(t.dev.read(IOVA, 8).ok).toBe(true);
    unwrap(t.driver.attach(0x10, b));
    t.dev.read(IOVA, 8);
    expect(t.findings.length).toBeGreaterThan(0);
    expect(t.findings[0]).toMatchObject({ cache: contextCache, rid: 0x10, iova: IOVA, cached: `0x${DATA_GPA.toString(16)} rw (4K)` });
    expect(t.findings[0]!.tables).toMatch(/^fault/);
    expect(a).not.toBe(b);
  });

  it("reports the interrupt entry cache when the IEC flush after an IRTE change is skipped (the finding's address is the IRTE index)", () => {
    const t = audited(mode, variant, "interrupt");
    const msi = unwrap(t.driver.mapInterrupt(0x10, 0x44, 2));
    t.dev.signalMsi(msi);
    expect(t.findings).toEqual([]);
    unwrap(t.driver.unmapInterrupt(0x10, msi));
    t.dev.signalMsi(msi);
    expect(t.findings).toHaveLength(1);
    // Destination 2, vector 0x44: the cached IRTE still delivers; the table's entry is not present.
    expect(t.findings[0]).toMatchObject({ cache: "interrupt entry cache", rid: 0x10, iova: 0, cached: "0x244 rw (4K)" });
    expect(t.findings[0]!.tables).toMatch(/^fault/);
    // This driver forgot the flush after the map too: the last that covered index 0 is the one at start-up.
    expect(t.findings[0]!.lastInvalidation?.what).toBe("IEC_INV global");
  });
});

describe("the stale-translation audit off", () => {
  it("reports nothing and leaves the physical unit without auditors", () => {
    const t = audited("nested", "scalable", "iotlb", false);
    const a = mapped(t, 0x10, IOVA, DATA_GPA, 0x1000);
    expect(t.dev.read(IOVA, 8).ok).toBe(true);
    unwrap(t.driver.unmap(a, IOVA, 0x1000));
    // The skipped flush leaves the stale translation in use: nothing notices.
    expect(t.dev.read(IOVA, 8).ok).toBe(true);
    expect(t.findings).toEqual([]);
    expect(t.device.audit).toBeUndefined();
    const unit = t.dev.unit as VtdUnit;
    expect(unit).toBeInstanceOf(VtdUnit);
    expect((unit as unknown as { auditors: unknown }).auditors).toBeUndefined();
  });

  it("removes its auditor when the device is unplugged", () => {
    const t = audited("nested", "scalable", undefined);
    const unit = t.dev.unit as unknown as { auditors: Map<number, unknown> | undefined };
    expect(unit.auditors?.size).toBe(1);
    unwrap(t.device.unassignDevice(0x10));
    expect(unit.auditors).toBeUndefined();
  });
});
