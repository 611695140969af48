import { describe, expect, it } from "vitest";
import { Perm, unwrap, type StaleTranslationFinding } from "@viommu/core";
import { smmuBed } from "../support.js";

const IOVA = 0x10_0000;
const DATA = 0x2000_0000;

/** The guest physical address a finding's cached output (a host physical address, nested) stands for. */
function cachedGpa(vm: { memory: { guestAddressOf(hpa: number): number | undefined } }, f: StaleTranslationFinding): number | undefined {
  const m = /^0x([0-9a-f]+) rw \(4K\)$/.exec(f.cached);
  return m === null ? undefined : vm.memory.guestAddressOf(parseInt(m[1]!, 16));
}

/** A VM with one passthrough device at vSID 0x10, the audit as asked, the guest driver skipping `skip`. */
function audited(audit: boolean, skip?: "iotlb" | "context") {
  const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], audit, guest: skip === undefined ? {} : { skipInvalidation: skip } });
  const found: StaleTranslationFinding[] = [];
  s.bed.platform.host.events.on("staleTranslation", (f) => found.push(f));
  return { ...s, found };
}

describe("SMMUv3 stale-translation audit (nested: the physical SMMU's IOTLB and CD cache)", () => {
  it("catches an unmap whose TLBI the guest skipped: IOTLB, the vSID, the IOVA, cached vs tables, the last invalidation", () => {
    const { driver, device, vm, found, unit } = audited(true, "iotlb");
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, domain));
    unwrap(driver.map(domain, IOVA, DATA, 0x2000, Perm.ReadWrite));
    expect(device.read(IOVA, 8).ok).toBe(true);
    expect(found).toEqual([]);
    unwrap(driver.unmap(domain, IOVA, 0x1000));
    // The stale entry is used (what the hardware does without the TLBI), and the audit reports it.
    expect(device.read(IOVA, 8).ok).toBe(true);
    expect(found).toHaveLength(1);
    const f = found[0]!;
    expect(f).toMatchObject({ vm: vm.id, unit: unit.name, cache: "IOTLB", rid: 0x10, iova: IOVA });
    expect(cachedGpa(vm, f)).toBe(DATA);
    expect(f.pasid).toBeUndefined();
    expect(f.tables).toMatch(/^fault/);
    // The last command that covered the address is the CD's invalidation at attach (no TLBI came after the unmap).
    expect(f.lastInvalidation?.what).toMatch(/^CMD_CFGI_(CD|STE)/);
    // The page still mapped is not stale.
    expect(device.read(IOVA + 0x1000, 8).ok).toBe(true);
    expect(found).toHaveLength(1);
  });

  it("catches a CD replaced without CMD_CFGI_CD: the CD cache, the IOVA used through the old domain", () => {
    const { driver, device, found, vm } = audited(true, "context");
    const a = unwrap(driver.createDomain());
    const b = unwrap(driver.createDomain());
    unwrap(driver.map(a, IOVA, DATA, 0x1000, Perm.ReadWrite));
    unwrap(driver.map(b, IOVA + 0x10_0000, DATA + 0x1000, 0x1000, Perm.ReadWrite));
    unwrap(driver.attach(0x10, a));
    expect(device.read(IOVA, 8).ok).toBe(true);
    unwrap(driver.attach(0x10, b));
    expect(device.read(IOVA, 8).ok).toBe(true);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ cache: "CD cache", rid: 0x10, iova: IOVA });
    expect(cachedGpa(vm, found[0]!)).toBe(DATA);
    expect(found[0]!.tables).toMatch(/^fault/);
    // The host's TLBI_NH_ALL when the VMM re-attached the unchanged STE: no CFGI_CD after the new CD.
    expect(found[0]!.lastInvalidation?.what).toMatch(/^CMD_TLBI_NH_ALL VMID \d+$/);
  });

  it("the correct driver doing the same work gives no finding, and with the audit off nothing is checked", () => {
    for (const [audit, skip] of [[true, undefined], [false, "iotlb"], [false, "context"]] as const) {
      const { driver, device, found } = audited(audit, skip);
      const a = unwrap(driver.createDomain());
      const b = unwrap(driver.createDomain());
      unwrap(driver.map(a, IOVA, DATA, 0x2000, Perm.ReadWrite));
      unwrap(driver.map(b, IOVA + 0x10_0000, DATA + 0x1000, 0x1000, Perm.ReadWrite));
      unwrap(driver.attach(0x10, a));
      expect(device.read(IOVA, 8).ok).toBe(true);
      unwrap(driver.unmap(a, IOVA, 0x1000));
      expect(device.read(IOVA, 8).ok).toBe(skip === "iotlb");
      unwrap(driver.attach(0x10, b));
      expect(device.read(IOVA + 0x1000, 8).ok).toBe(skip === "context");
      expect(device.read(IOVA + 0x10_0000, 8).ok).toBe(skip !== "context");
      expect(found).toEqual([]);
    }
  });
});
