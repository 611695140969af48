import { describe, expect, it } from "vitest";
import { err, Perm, unwrap } from "@viommu/core";
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

  it("installs mappings up to the type1 back end's entry limit; the one beyond is refused visibly: CERROR_ILL at its TLBI, a host-log entry, DMA there faults", () => {
    const limit = 4;
    const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], mode: "shadow", shadowBackend: "type1", dmaEntryLimit: limit });
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    // Non-adjacent pages: one shadow entry each. The driver announces each map with a TLBI (IDR4 map notify).
    for (let i = 0; i < limit + 1; i++) unwrap(s.driver.map(domain, IOVA + i * 0x2000, DATA + i * 0x2000, 0x1000, Perm.ReadWrite));
    const reached = Array.from({ length: limit + 1 }, (_, i) => s.device.read(IOVA + i * 0x2000, 4).ok);
    expect(reached).toEqual([true, true, true, true, false]);
    expect(s.iommu.stats.shadowMappings).toBe(limit);
    // The guest's driver saw the failed TLBI as a command error (Linux: "CMDQ error ... Illegal command").
    expect(s.driver.readEvents()).toMatchObject([{ kind: "command-error", name: "CERROR_ILL" }]);
    const log = s.bed.platform.host.log.entries({ vm: s.vm.id, kind: "shadow-map-refused" });
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ errno: "ENOSPC", source: `smmuv3@0x${s.iommu.mmioBase.toString(16)}` });
    // Room made by an unmap lets a later invalidation of the refused page install it.
    unwrap(s.driver.unmap(domain, IOVA, 0x1000));
    unwrap(s.driver.flush(domain, IOVA + limit * 0x2000, 0x1000));
    expect(s.device.read(IOVA + limit * 0x2000, 4).ok).toBe(true);
    expect(s.driver.readEvents()).toEqual([]);
  });

  it("the iommufd back end has no entry limit: every mapping is installed and nothing is refused", () => {
    const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], mode: "shadow", shadowBackend: "iommufd", dmaEntryLimit: 4 });
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    for (let i = 0; i < 8; i++) unwrap(s.driver.map(domain, IOVA + i * 0x2000, DATA + i * 0x2000, 0x1000, Perm.ReadWrite));
    expect(s.iommu.stats.shadowMappings).toBe(8);
    expect(s.driver.readEvents()).toEqual([]);
    expect(s.bed.platform.host.log.entries()).toEqual([]);
  });

  it("gives back the IOAS of an address space no stream uses any more", () => {
    const s = shadowed();
    unwrap(s.driver.map(s.domain, IOVA, DATA, 0x1000, Perm.ReadWrite));
    const ioases = s.v.iommufd.list("IOAS").length;
    const other = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, other));
    unwrap(s.driver.attach(0x10, s.domain));
    unwrap(s.driver.attach(0x10, other));
    expect(s.v.iommufd.list("IOAS").length).toBe(ioases);
  });

  it("a shadow address space the host will not attach is written to the host log and fails that CFGI with CERROR_ILL; the guest's next CFGI recovers", () => {
    const s = shadowed();
    unwrap(s.driver.map(s.domain, IOVA, DATA, 0x1000, Perm.ReadWrite));
    const ctx = s.v.iommufd;
    const attach = ctx.attach.bind(ctx);
    ctx.attach = () => {
      ctx.attach = attach;
      return err("ENOMEM", "no memory for the attachment");
    };
    const other = unwrap(s.driver.createDomain());
    unwrap(s.driver.map(other, IOVA, DATA, 0x1000, Perm.ReadWrite));
    unwrap(s.driver.attach(0x10, other));
    expect(s.driver.readEvents()).toMatchObject([{ kind: "command-error", name: "CERROR_ILL" }]);
    expect(s.bed.platform.host.log.entries({ kind: "configuration-refused" })).toMatchObject([{ vm: s.vm.id, errno: "ENOMEM" }]);
    // The driver's later CFGIs of the same attach re-derived the stream once the host attached again.
    expect(s.device.read(IOVA, 4).ok).toBe(true);
  });
});

