import { describe, expect, it } from "vitest";
import { decodeLayout, fromWords64, newWalkResult, NO_PASID, Perm, unwrap } from "@viommu/core";
import { decodeCd, decodeCommand, l1StdLayout, Tg0 } from "../../src/format/index.js";
import { tlbiRangeCommands } from "../../src/format/tlbi-commands.js";
import { Smmuv3GuestDriver } from "../../src/guest/smmuv3-driver.js";
import { Smmuv3Device } from "../../src/vmm/smmuv3-device.js";
import { hex64, smmuBed } from "../support.js";
import { fixtureJson, type FixtureTranslations } from "../format/fixtures.js";

const IOVA = 0x10_0000;
const DATA = 0x2000_0000;

function attached(variant?: string) {
  const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], ...(variant !== undefined ? { guest: { variant } } : {}) });
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  return { ...s, domain };
}

function read64(s: ReturnType<typeof attached>, address: number): string {
  return `0x${s.vm.memory.read64(address).toString(16).padStart(16, "0")}`;
}

describe("the reference guest driver writes what Linux's arm-smmu-v3 writes", () => {
  const real = fixtureJson<FixtureTranslations>("translations.json").translations[0]!.at_dump.walk;
  const realSte = real.find((w) => w.what === "ste")!.val as string[];
  const realCd = real.find((w) => w.what === "cd")!.val as string[];

  it("writes an S1 STE like Linux 6.1's (dw0 = CD table | S1 translate | V, dw1 0xd6)", () => {
    const s = attached();
    const ste = s.driver.streamTableBase! + 0x10 * 64;
    const cdTable = s.driver.cdTableOf(0x10)!;
    expect(read64(s, ste)).toBe(`0x${(BigInt(cdTable) | 0xbn).toString(16).padStart(16, "0")}`);
    expect(read64(s, ste + 8)).toBe(realSte[1]);
    expect(BigInt(realSte[0]!) & 0xfffn).toBe(0xbn);
  });

  it("writes a CD like Linux 6.1's: same TCR fields, EPD1, V, AA64, R, A, ASET, ASID, MAIR (IPS from this SMMU's OAS)", () => {
    const s = attached();
    const cd = s.driver.cdTableOf(0x10)!;
    const ours = decodeCd(s.vm.memory.readWords(cd, new Uint32Array(16)));
    const theirs = decodeCd(fromWords64(realCd));
    const { TTB0: _ttb, IPS: ips, ...rest } = ours;
    const { TTB0: _t, IPS: _i, ...realRest } = theirs;
    expect(rest).toEqual(realRest);
    expect(ips).toBe(5);
    expect(ours.TTB0).toBe(s.driver.domainInfo(s.domain)!.root);
    expect(read64(s, cd + 24)).toBe("0xfffffffff404ff44");
  });

  it("fills the linear stream table with Linux 6.1's abort STE (V, Config 0, SHCFG incoming)", () => {
    const s = attached();
    const ste = s.driver.streamTableBase! + 0x11 * 64;
    expect([read64(s, ste), read64(s, ste + 8)]).toEqual(["0x0000000000000001", "0x0000100000000000"]);
    unwrap(s.driver.detach(0x10));
    const detached = s.driver.streamTableBase! + 0x10 * 64;
    expect([read64(s, detached), read64(s, detached + 8)]).toEqual(["0x0000000000000001", "0x0000100000000000"]);
    expect(s.device.read(IOVA, 4).ok).toBe(false);
  });

  it("maps pages as Linux's DMA API does: 0x…f47 read-write, 0x…fc7 read-only (as in the real guest's tables)", () => {
    const s = attached();
    unwrap(s.driver.map(s.domain, IOVA, DATA, 0x1000, Perm.ReadWrite));
    unwrap(s.driver.map(s.domain, IOVA + 0x1000, DATA + 0x1000, 0x1000, Perm.Read));
    const leaf = (iova: number): bigint => {
      let table = s.driver.domainInfo(s.domain)!.root;
      for (const shift of [39, 30, 21]) table = Number(s.vm.memory.read64(table + (Math.floor(iova / 2 ** shift) % 512) * 8) & 0x0000_ffff_ffff_f000n);
      return s.vm.memory.read64(table + (Math.floor(iova / 4096) % 512) * 8);
    };
    expect(leaf(IOVA)).toBe(BigInt(DATA) | 0xf47n);
    expect(leaf(IOVA + 0x1000)).toBe(BigInt(DATA + 0x1000) | 0xfc7n);
  });

  it("uses a 2-level stream table with SPLIT 8 and L1 descriptors of Span 9 when asked", () => {
    const s = attached("2level");
    const l1 = decodeLayout(l1StdLayout, s.vm.memory.readWords(s.driver.streamTableBase!, new Uint32Array(2)));
    expect(l1.Span).toBe(9);
    unwrap(s.driver.map(s.domain, IOVA, DATA, 0x2000, Perm.ReadWrite));
    expect(s.device.write(IOVA + 0x10, Uint8Array.of(7)).ok).toBe(true);
    expect(s.vm.memory.read8(DATA + 0x10)).toBe(7);
  });

  it.each([
    ["16k", 14, Tg0.Granule16K],
    ["64k", 16, Tg0.Granule64K],
  ])("translates DMA through %s-granule stage-1 tables", (variant, shift, tg0) => {
    const s = attached(variant);
    const page = 2 ** shift;
    unwrap(s.driver.map(s.domain, 0x400_0000, DATA, 2 * page, Perm.ReadWrite));
    expect(decodeCd(s.vm.memory.readWords(s.driver.cdTableOf(0x10)!, new Uint32Array(16))).TG0).toBe(tg0);
    expect(s.device.write(0x400_0000 + page + 0x18, Uint8Array.of(9)).ok).toBe(true);
    expect(s.vm.memory.read8(DATA + page + 0x18)).toBe(9);
    const out = newWalkResult();
    s.device.translate(0x400_0000 + 5, false, NO_PASID, out);
    expect(out).toMatchObject({ ok: true, output: s.vm.memory.backingOf(DATA + 5), pageShift: shift });
    unwrap(s.driver.unmap(s.domain, 0x400_0000, page));
    expect(s.device.read(0x400_0000, 4).ok).toBe(false);
    expect(s.device.read(0x400_0000 + page, 4).ok).toBe(true);
  });

  it("maps 2 MiB blocks where aligned, and a block's unmap drops it from the IOTLB", () => {
    const s = attached();
    unwrap(s.driver.map(s.domain, 0x4000_0000, DATA, 0x20_0000, Perm.ReadWrite));
    const out = newWalkResult();
    s.device.translate(0x4010_0000, false, NO_PASID, out);
    expect(out).toMatchObject({ ok: true, pageShift: 21, output: s.vm.memory.backingOf(DATA + 0x10_0000) });
    unwrap(s.driver.unmap(s.domain, 0x4000_0000, 0x20_0000));
    expect(s.device.read(0x4010_0000, 4).ok).toBe(false);
  });
});

describe("range TLB invalidation as Linux's arm_smmu_tlb_inv_range_cmd builds it", () => {
  it("covers 3 pages with one range command (TG 4K, NUM 2, SCALE 0, TTL 3)", () => {
    const [c, ...rest] = tlbiRangeCommands(5, 0x10_0000, 0x3000, 12, 12, true)!;
    expect(rest).toEqual([]);
    expect(decodeCommand(c!)).toMatchObject({ name: "CMD_TLBI_NH_VA", fields: { ASID: 5, NUM: 2, SCALE: 0, TG: 1, TTL: 3, Leaf: 1, Addr: 0x10_0000n } });
  });

  it("splits 33 pages into 1 page then 32 pages (SCALE 5), and a 2 MiB block gets TTL 2", () => {
    const cmds = tlbiRangeCommands(1, 0, 33 * 4096, 12, 12, true)!.map((c) => decodeCommand(c).fields as Record<string, unknown>);
    expect(cmds.map((f) => [f.NUM, f.SCALE, f.Addr])).toEqual([
      [0, 0, 0n],
      [0, 5, 0x1000n],
    ]);
    expect(decodeCommand(tlbiRangeCommands(1, 0, 0x20_0000, 12, 21, true)![0]!).fields).toMatchObject({ TTL: 2, SCALE: 9, NUM: 0 });
  });

  it("with the leaf size unknown sends non-leaf commands with TTL 0, widening a single page to two (NUM 0, SCALE 0, TTL 0 is Reserved)", () => {
    const [one] = tlbiRangeCommands(5, 0x10_0000, 0x1000, 12, undefined, true)!;
    expect(decodeCommand(one!)).toMatchObject({ fields: { NUM: 0, SCALE: 1, TG: 1, TTL: 0, Leaf: 0, Addr: 0x10_0000n } });
    const three = tlbiRangeCommands(5, 0x10_0000, 0x3000, 12, undefined, true)!.map((c) => decodeCommand(c).fields as Record<string, unknown>);
    expect(three.map((f) => [f.NUM, f.SCALE, f.TTL])).toEqual([[2, 0, 0]]);
  });

  it("issues one single-address command per leaf without range invalidation, and gives up past 64 commands", () => {
    expect(tlbiRangeCommands(1, 0x1000, 0x3000, 12, 12, false)!.map((c) => hex64(c)[1])).toEqual(["0x0000000000001001", "0x0000000000002001", "0x0000000000003001"]);
    expect(tlbiRangeCommands(1, 0, 65 * 4096, 12, 12, false)).toBeUndefined();
  });
});

describe("the reference guest driver's command queue", () => {
  it("splits a list longer than the queue into batches, each followed by a CMD_SYNC, and all of it executes", () => {
    const s = attached();
    const before = s.iommu.stats.trapped;
    const commands = Array.from({ length: 600 }, (_, i) => tlbiRangeCommands(1, i * 4096, 4096, 12, 12, true)![0]!);
    unwrap(s.driver.submitCommands(commands));
    expect(s.iommu.stats.trapped - before).toBe(600 + 3);
  });

  it("uses SEV syncs and polls CONS when the SMMU offers no MSIs", () => {
    const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true });
    s.iommu.destroy();
    const v = s.v;
    const iommu = unwrap(Smmuv3Device.create({ vm: s.vm, iommufd: v.iommufd, unit: s.unit, ioasId: v.ioasId, parentHwptId: v.parentHwptId, anchorDevId: v.devices[0]!.devId, mode: "nested" }, { msi: false }));
    unwrap(iommu.assignDevice(s.device, v.devices[0]!.devId, 0x10));
    v.iommus[0] = iommu;
    const driver = new Smmuv3GuestDriver({ vm: s.vm, memory: s.vm.memory, pages: v.pages, acpi: iommu.acpiTables(), mmioBase: iommu.mmioBase });
    unwrap(driver.init({ translation: true, interruptRemapping: false }));
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, domain));
    unwrap(driver.map(domain, IOVA, DATA, 0x1000, Perm.ReadWrite));
    expect(iommu.sevEvents).toBeGreaterThan(0);
    expect(s.device.read(IOVA, 4).ok).toBe(true);
    unwrap(driver.unmap(domain, IOVA, 0x1000));
    expect(s.device.read(IOVA, 4).ok).toBe(false);
  });
});
