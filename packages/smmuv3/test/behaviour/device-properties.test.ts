import { describe, expect, it } from "vitest";
import { decodeLayout, ok, Perm, unwrap, type TranslationMode } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import { idr0Layout, idr1Layout, idr3Layout, idr5Layout } from "../../src/format/id-registers.js";
import type { Smmuv3HwConfig } from "../../src/hw/smmuv3-hw-config.js";
import { smmuv3Plugin } from "../../src/plugin.js";
import { Smmuv3Device } from "../../src/vmm/smmuv3-device.js";
import { hostConfig, hostSetup, smmuBed } from "../support.js";

/** The ID registers the guest reads (MMIO) from an emulated SMMU created with `properties`. */
function guestIds(properties: Record<string, string> | undefined, mode: TranslationMode = "nested", config?: Smmuv3HwConfig) {
  const h = hostSetup(config === undefined ? {} : { config });
  const created = Smmuv3Device.create({ vm: h.vm, iommufd: h.ctx, unit: h.unit, ioasId: h.ioasId, parentHwptId: h.parentId, anchorDevId: h.devId, mode, ...(properties ? { properties } : {}) });
  if (!created.ok) return created;
  const read = (offset: number): Uint32Array => Uint32Array.of(Number(h.vm.mmioRead(created.value.mmioBase + offset, 4)));
  return ok({ idr0: decodeLayout(idr0Layout, read(0x0)), idr1: decodeLayout(idr1Layout, read(0x4)), idr3: decodeLayout(idr3Layout, read(0xc)), idr5: decodeLayout(idr5Layout, read(0x14)) });
}

describe("SMMUv3 device properties under QEMU's names change what the guest reads as QEMU's do", () => {
  const plain = unwrap(guestIds(undefined));

  it("declares stage, ril, ats, oas and ssidsize, with the defaults the device has without them", () => {
    expect(smmuv3Plugin.properties!.map((p) => p.name)).toEqual(["stage", "ril", "ats", "oas", "ssidsize"]);
    expect(plain.idr3.RIL).toBe(1);
    expect(plain.idr0.ATS).toBe(1);
    expect(plain.idr5.OAS).toBe(5);
    expect(plain.idr1.SSIDSIZE).toBe(20);
    expect(plain.idr0.S1P).toBe(1);
    expect(plain.idr0.S2P).toBe(0);
  });

  it("ril=off clears IDR3.RIL (only), and the guest driver then invalidates page by page", () => {
    const ids = unwrap(guestIds({ ril: "off" }));
    expect(ids.idr3).toEqual({ ...plain.idr3, RIL: 0 });
    expect(ids.idr0).toEqual(plain.idr0);
    expect(unwrap(guestIds({ ril: "on" })).idr3.RIL).toBe(1);
    const { driver, iommu, device } = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], properties: { ril: "off" } });
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, domain));
    unwrap(driver.map(domain, 0x10_0000, 0x2000_0000, 0x4000, Perm.ReadWrite));
    expect(device.read(0x10_0000, 8).ok).toBe(true);
    const before = iommu.stats.trapped;
    unwrap(driver.unmap(domain, 0x10_0000, 0x4000));
    // Four TLBI_NH_VA (one per page) and the CMD_SYNC, where RIL would have sent one range command.
    expect(iommu.stats.trapped - before).toBe(5);
  });

  it("ats=off clears IDR0.ATS and withdraws PRI (IDR0.PRI, IDR1.PRIQS); ats=on on a host without ATS is refused", () => {
    const ids = unwrap(guestIds({ ats: "off" }));
    expect(ids.idr0).toEqual({ ...plain.idr0, ATS: 0, PRI: 0 });
    expect(ids.idr1).toEqual({ ...plain.idr1, PRIQS: 0 });
    expect(unwrap(guestIds({ ats: "on" })).idr0.ATS).toBe(1);
    const refused = guestIds({ ats: "on" }, "nested", hostConfig({ idr0: { ATS: 0, PRI: 0 }, idr1: { PRIQS: 0 } }));
    expect(!refused.ok && refused.error.message).toMatch(/^ats=on: the host SMMU has no ATS/);
  });

  it("oas=44 sets IDR5.OAS to 0b100; oas=48 on a 44-bit host is refused", () => {
    expect(unwrap(guestIds({ oas: "44" })).idr5).toEqual({ ...plain.idr5, OAS: 4 });
    expect(unwrap(guestIds({ oas: "48" })).idr5.OAS).toBe(5);
    const refused = guestIds({ oas: "48" }, "nested", hostConfig({ idr5: { OAS: 4 } }));
    expect(!refused.ok && refused.error.message).toMatch(/^oas=48: /);
  });

  it("ssidsize sets IDR1.SSIDSIZE; beyond the host's, or any SubstreamIDs in shadow mode, is refused", () => {
    expect(unwrap(guestIds({ ssidsize: "8" })).idr1).toEqual({ ...plain.idr1, SSIDSIZE: 8 });
    expect(unwrap(guestIds({ ssidsize: "0" })).idr1.SSIDSIZE).toBe(0);
    const narrow = guestIds({ ssidsize: "20" }, "nested", hostConfig({ idr1: { SSIDSIZE: 10 } }));
    expect(!narrow.ok && narrow.error.message).toMatch(/^ssidsize=20: the host SMMU has 10/);
    const shadow = guestIds({ ssidsize: "4" }, "shadow");
    expect(!shadow.ok && shadow.error.message).toMatch(/shadow mode/);
    expect(unwrap(guestIds({ ssidsize: "0" }, "shadow")).idr1.SSIDSIZE).toBe(0);
  });

  it("values QEMU refuses or this device cannot offer are refused before the device exists, naming the property", () => {
    for (const [properties, message] of [
      [{ stage: "2" }, /property 'stage': the emulated SMMU offers stage 1 only/],
      [{ stage: "nested" }, /property 'stage'/],
      [{ ril: "maybe" }, /property 'ril' takes on, off/],
      [{ oas: "52" }, /property 'oas' takes 44, 48/],
      [{ ssidsize: "21" }, /property 'ssidsize': must be an integer from 0 to 20/],
      [{ "caching-mode": "on" }, /property 'caching-mode' not found/],
    ] as const) {
      const bed = Testbed.create({ plugin: smmuv3Plugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], properties });
      expect(!bed.ok && bed.error.message, JSON.stringify(properties)).toMatch(message);
    }
    expect(unwrap(guestIds({ stage: "1" })).idr0).toEqual(plain.idr0);
  });
});
