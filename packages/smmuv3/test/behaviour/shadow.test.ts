import { describe, expect, it } from "vitest";
import { Perm, unwrap } from "@viommu/core";
import { encodeCommand } from "../../src/format/command.js";
import { IDR4_MODEL_MAP_NOTIFY } from "../../src/format/model-registers.js";
import { smmuBed } from "../support.js";

const IOVA = 0x10_0000;
const DATA = 0x2000_0000;

function shadowed() {
  const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], mode: "shadow" });
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  return { ...s, domain };
}

describe("shadow mode: the VMM mirrors the guest's stage-1 tables", () => {
  it("asks the guest for map notifications (IDR4 bit 0) only in shadow mode", () => {
    const shadow = shadowed();
    expect(Number(shadow.vm.mmioRead(shadow.iommu.mmioBase + 0x10, 4)) & IDR4_MODEL_MAP_NOTIFY).toBe(IDR4_MODEL_MAP_NOTIFY);
    const nested = smmuBed();
    expect(Number(nested.vm.mmioRead(nested.iommu.mmioBase + 0x10, 4)) & IDR4_MODEL_MAP_NOTIFY).toBe(0);
  });

  it("installs one shadow mapping per guest leaf, a 2 MiB block as one, and removes it on unmap", () => {
    const s = shadowed();
    unwrap(s.driver.map(s.domain, 0x4000_0000, DATA, 0x20_0000, Perm.ReadWrite));
    unwrap(s.driver.map(s.domain, IOVA, DATA + 0x40_0000, 0x2000, Perm.Read));
    expect(s.iommu.stats.shadowMappings).toBe(3);
    expect(s.device.write(0x4000_0000 + 0x12_3450, Uint8Array.of(5)).ok).toBe(true);
    expect(s.vm.memory.read8(DATA + 0x12_3450)).toBe(5);
    expect(s.device.write(IOVA, Uint8Array.of(1)).ok).toBe(false);
    expect(s.device.read(IOVA, 4).ok).toBe(true);
    unwrap(s.driver.unmap(s.domain, 0x4000_0000, 0x20_0000));
    expect(s.iommu.stats.shadowMappings).toBe(2);
    expect(s.device.read(0x4000_0000, 4).ok).toBe(false);
  });

  it("picks up a table change the guest announces with TLBI_NH_ASID", () => {
    const s = shadowed();
    unwrap(s.driver.map(s.domain, IOVA, DATA, 0x1000, Perm.ReadWrite));
    // Rewrite the leaf behind the driver's back to another page, then flush the ASID.
    let table = s.driver.domainInfo(s.domain)!.root;
    for (const shift of [39, 30, 21]) table = Number(s.vm.memory.read64(table + (Math.floor(IOVA / 2 ** shift) % 512) * 8) & 0x0000_ffff_ffff_f000n);
    const leaf = table + (Math.floor(IOVA / 4096) % 512) * 8;
    s.vm.memory.write64(leaf, (s.vm.memory.read64(leaf) & ~0x0000_ffff_ffff_f000n) | BigInt(DATA + 0x5000));
    unwrap(s.driver.flush(s.domain));
    expect(s.device.write(IOVA + 4, Uint8Array.of(0x77)).ok).toBe(true);
    expect(s.vm.memory.read8(DATA + 0x5004)).toBe(0x77);
    expect(s.vm.memory.read8(DATA + 4)).toBe(0);
  });

  it("maps nothing for a CD whose stage-1 table lies outside guest RAM, and maps again once the CD is fixed", () => {
    const s = shadowed();
    unwrap(s.driver.map(s.domain, IOVA, DATA, 0x1000, Perm.ReadWrite));
    const cd = s.driver.cdTableOf(0x10)!;
    const ttbHi = s.vm.memory.read32(cd + 12);
    s.vm.memory.write32(cd + 12, 0x2);
    unwrap(s.driver.submitCommands([encodeCommand("CMD_CFGI_CD", { SID: 0x10, Leaf: 1 })]));
    expect(s.device.read(IOVA, 4).ok).toBe(false);
    s.vm.memory.write32(cd + 12, ttbHi);
    unwrap(s.driver.submitCommands([encodeCommand("CMD_CFGI_CD", { SID: 0x10, Leaf: 1 })]));
    expect(s.device.read(IOVA, 4).ok).toBe(true);
  });

  it("lets the device reach guest RAM untranslated while the guest's SMMU is off and GBPA bypasses", () => {
    const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], mode: "shadow", noInit: true });
    expect(s.device.write(DATA, Uint8Array.of(3)).ok).toBe(true);
    expect(s.vm.memory.read8(DATA)).toBe(3);
  });
});
