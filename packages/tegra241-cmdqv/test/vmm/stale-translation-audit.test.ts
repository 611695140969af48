import { describe, expect, it } from "vitest";
import { Perm, unwrap, type StaleTranslationFinding } from "@viommu/core";
import { tegra241CmdqvPlugin } from "../../src/plugin.js";
import { device, driver, IOVA, DATA_GPA, tegraBed } from "../support.js";

describe("Tegra241 CMDQV: the SMMUv3 stale-translation audit, with invalidations issued on a guest-owned VCMDQ", () => {
  it("inherits the audit and its classes from SMMUv3", () => {
    expect(tegra241CmdqvPlugin.capabilities.audit).toBe(true);
    expect(tegra241CmdqvPlugin.capabilities.auditClasses).toEqual(["iotlb", "context"]);
  });

  it("notes a TLBI the guest issued on its VCMDQ (no trap) as the last invalidation of a later stale hit", () => {
    const bed = tegraBed({ audit: true, guest: { skipInvalidation: "iotlb" } });
    const found: StaleTranslationFinding[] = [];
    bed.platform.host.events.on("staleTranslation", (f) => found.push(f));
    const v = bed.vms[0]!;
    const d = driver(v);
    const dma = v.devices[0]!.device;
    const domain = unwrap(d.createDomain());
    unwrap(d.attach(0x10, domain));
    unwrap(d.map(domain, IOVA, DATA_GPA, 0x2000, Perm.ReadWrite));
    expect(dma.read(IOVA, 8).ok).toBe(true);
    const trapped = device(v).stats.trapped;
    // An explicit flush of the range is not the skipped class: it goes to the VCMDQ, straight to the hardware.
    unwrap(d.flush(domain, IOVA, 0x1000));
    expect(device(v).stats.trapped).toBe(trapped);
    expect(dma.read(IOVA, 8).ok).toBe(true);
    unwrap(d.unmap(domain, IOVA, 0x1000));
    expect(dma.read(IOVA, 8).ok).toBe(true);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ cache: "IOTLB", rid: 0x10, iova: IOVA });
    expect(found[0]!.tables).toMatch(/^fault/);
    expect(found[0]!.lastInvalidation?.what).toMatch(/^CMD_TLBI_NH_VA VMID \d+ ASID \d+$/);
  });
});
