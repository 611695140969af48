import { describe, expect, it } from "vitest";
import {
  errnoOf,
  fromBytes,
  fromWords64,
  parseVevents,
  HwptAllocFlag,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  newIotlbHit,
  newWalkResult,
  NO_PASID,
  ok,
  Perm,
  toBytes,
  unwrap,
  type PagingDomain,
  type ViommuCore,
} from "@viommu/core";
import { decodeEvent, decodeSte, encodeCommand, encodeSte, SteConfig } from "../../src/format/index.js";
import {
  decodeHwInfoArmSmmuv3,
  encodeHwptArmSmmuv3,
  HW_INFO_ARM_SMMUV3_BYTES,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
} from "../../src/format/uapi.js";
import { DEFAULT_SMMUV3_HW } from "../../src/hw/smmuv3-hw-config.js";
import type { ArmVsmmu } from "../../src/hw/smmuv3-viommu.js";
import { hex64, hostSetup } from "../support.js";

function vsmmuOf(h: ReturnType<typeof hostSetup>, id: number): ArmVsmmu {
  return unwrap(h.ctx.viommu(id)).ops as ArmVsmmu;
}

function vsteBytes(words: string[]): Uint8Array {
  return encodeHwptArmSmmuv3(fromWords64(words));
}

function invalidate(h: ReturnType<typeof hostSetup>, viommuId: number, commands: Uint32Array[], entryLen = 16) {
  const bytes = new Uint8Array(commands.length * entryLen);
  commands.forEach((c, i) => bytes.set(toBytes(c).subarray(0, Math.min(16, entryLen)), i * entryLen));
  return h.ctx.hwptInvalidate({ hwptId: viommuId, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entryLen, entryNum: commands.length, entries: bytes });
}

describe("SMMUv3 physical unit: hw_info and vIOMMU allocation", () => {
  it("reports iommu_hw_info_arm_smmuv3 (type 2, 40 bytes) with IDR0..5, IIDR and AIDR as read from the SMMU", () => {
    const h = hostSetup();
    const r = unwrap(h.ctx.getHwInfo({ flags: 0, devId: h.devId, dataLen: 64 }));
    expect(r.outDataType).toBe(IOMMU_HW_INFO_TYPE_ARM_SMMUV3);
    expect(r.dataLen).toBe(HW_INFO_ARM_SMMUV3_BYTES);
    expect(decodeHwInfoArmSmmuv3(r.data)).toEqual({ flags: 0, reserved: 0, idr: DEFAULT_SMMUV3_HW.idr, iidr: DEFAULT_SMMUV3_HW.iidr, aidr: DEFAULT_SMMUV3_HW.aidr });
    expect([...r.data.subarray(40)]).toEqual(new Array(24).fill(0));
  });

  it("answers EOPNOTSUPP to a hw_info type of an implementation it does not have", () => {
    const h = hostSetup();
    expect(errnoOf(h.ctx.getHwInfo({ flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, devId: h.devId, dataLen: 40, inDataType: 3 }))).toBe("EOPNOTSUPP");
  });

  it("gives a vSMMU the stage-2 parent's VMID, so every vSMMU of a VM on that parent tags one VMID", () => {
    const h = hostSetup();
    const parent = unwrap(h.ctx.objects.get(h.parentId)) as unknown as { domain: PagingDomain };
    const a = unwrap(h.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, devId: h.devId, hwptId: h.parentId }));
    const b = unwrap(h.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, devId: h.devId, hwptId: h.parentId }));
    expect(vsmmuOf(h, a).vmid).toBe(parent.domain.vmid);
    expect(vsmmuOf(h, b).vmid).toBe(parent.domain.vmid);
  });

  it("refuses vIOMMU types it does not implement (EOPNOTSUPP) and non-SMMUv3 nesting parents (EINVAL)", () => {
    const h = hostSetup();
    expect(errnoOf(h.ctx.viommuAlloc({ flags: 0, type: 2, devId: h.devId, hwptId: h.parentId }))).toBe("EOPNOTSUPP");
    const foreign = { kind: "paging", nestParent: true, vmid: 1, unit: h.unit } as unknown as PagingDomain;
    expect(errnoOf(h.unit.viommuInit({ viommuType: IOMMU_VIOMMU_TYPE_ARM_SMMUV3 } as ViommuCore, foreign, undefined))).toBe("EINVAL");
  });

  it("cannot host a vSMMU without both stages (get_viommu_size is 0)", () => {
    const idr0 = DEFAULT_SMMUV3_HW.idr[0]! & ~1; // no S2P
    const h = hostSetup({ config: { ...DEFAULT_SMMUV3_HW, idr: [idr0, ...DEFAULT_SMMUV3_HW.idr.slice(1)] } });
    expect(h.unit.getViommuSize(h.device, IOMMU_VIOMMU_TYPE_ARM_SMMUV3)).toBe(0);
    expect(errnoOf(h.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, devId: h.devId, hwptId: h.parentId }))).toBe("EOPNOTSUPP");
  });

});

describe("SMMUv3 nested domains (IOMMU_HWPT_DATA_ARM_SMMUV3)", () => {
  function withViommu() {
    const h = hostSetup();
    const viommuId = unwrap(h.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, devId: h.devId, hwptId: h.parentId }));
    const alloc = (bytes: Uint8Array, type = IOMMU_HWPT_DATA_ARM_SMMUV3, flags = 0) => h.ctx.hwptAlloc({ flags, devId: h.devId, ptId: viommuId, data: { type, bytes } });
    return { ...h, viommuId, alloc };
  }

  it.each([
    ["a V=0 vSTE (becomes all zero, an abort STE)", ["0x0000000000000ffe", "0x0000000000000000"], undefined],
    ["an abort vSTE", ["0x0000000000000001", "0x0000000000000000"], undefined],
    ["a bypass vSTE", ["0x0000000000000009", "0x0000000000000000"], undefined],
    ["an S1 vSTE as Linux writes it", ["0x000000005a4e100b", "0x00000000000000d6"], undefined],
    ["an S1 vSTE with EATS translate", ["0x000000005a4e100b", "0x00000000100000d6"], undefined],
    ["SHCFG set (Linux 6.1's abort STE)", ["0x0000000000000001", "0x0000100000000000"], "EIO"],
    ["an S2 Config", ["0x000000000000000d", "0x0000000000000000"], "EIO"],
    ["a nested Config", ["0x000000000000000f", "0x0000000000000000"], "EIO"],
    ["EATS split-stage", ["0x000000005a4e100b", "0x0000000020000000"], "EIO"],
    ["MEV set by the guest", ["0x000000005a4e100b", "0x0000000000080000"], "EIO"],
  ])("%s → %s", (_what, words, errno) => {
    const h = withViommu();
    const r = h.alloc(vsteBytes(words));
    expect(errnoOf(r)).toBe(errno);
  });

  it("takes the HWPT data through the kernel's copy helper: wrong type or size is EINVAL, any flag EOPNOTSUPP", () => {
    const h = withViommu();
    const good = vsteBytes(["0x1", "0x0"]);
    expect(errnoOf(h.alloc(good, 1))).toBe("EINVAL");
    expect(errnoOf(h.alloc(good.subarray(0, 8)))).toBe("EINVAL");
    expect(errnoOf(h.alloc(new Uint8Array(24)))).toBe("EINVAL");
    expect(errnoOf(h.alloc(good))).toBeUndefined();
    // Linux 2026 arm_vsmmu_alloc_domain_nested: `if (flags) return -EOPNOTSUPP`.
    expect(errnoOf(h.alloc(good, IOMMU_HWPT_DATA_ARM_SMMUV3, HwptAllocFlag.PASID))).toBe("EOPNOTSUPP");
    expect(errnoOf(vsmmuOf(h, h.viommuId).allocDomainNested(h.device, HwptAllocFlag.PASID, { type: IOMMU_HWPT_DATA_ARM_SMMUV3, bytes: good }))).toBe("EOPNOTSUPP");
    // FAULT_ID_VALID is the core's: a fault id that names nothing is its ENOENT.
    expect(errnoOf(h.alloc(good, IOMMU_HWPT_DATA_ARM_SMMUV3, HwptAllocFlag.FAULT_ID_VALID))).toBe("ENOENT");
  });

  it("installs a nested STE: Config nested, the vSTE's S1 fields, MEV, and the parent's S2VMID, VTCR and S2TTB", () => {
    const h = withViommu();
    unwrap(h.ctx.vdeviceAlloc({ viommuId: h.viommuId, devId: h.devId, virtId: 0x28 }));
    const hwpt = unwrap(h.alloc(vsteBytes(["0x000000005a4e100b", "0x00000000000000d6"])));
    unwrap(h.ctx.attach(h.devId, hwpt));
    const ste = decodeSte(h.unit.steOf(0x100)!);
    const parent = unwrap(h.ctx.objects.get(h.parentId)) as unknown as { domain: PagingDomain };
    expect(ste).toMatchObject({ V: 1, Config: SteConfig.Nested, S1ContextPtr: 0x5a4e1000, S1DSS: 2, S1CIR: 1, S1COR: 1, S1CSH: 3, MEV: 1, S2FWB: 1 });
    expect(ste).toMatchObject({ S2VMID: parent.domain.vmid, S2T0SZ: 16, S2SL0: 2, S2TG: 0, S2PS: 5, S2AA64: 1, S2PTW: 1, S2R: 1, S2TTB: parent.domain.table.root });
  });

  it("installs the stage-2 STE for a bypass vSTE and an abort STE for a V=0 one", () => {
    const h = withViommu();
    unwrap(h.ctx.attach(h.devId, unwrap(h.alloc(vsteBytes(["0x9", "0x0"])))));
    expect(decodeSte(h.unit.steOf(0x100)!)).toMatchObject({ V: 1, Config: SteConfig.S2Translate });
    unwrap(h.ctx.attach(h.devId, unwrap(h.alloc(vsteBytes(["0x0", "0x0"])))));
    expect(hex64(h.unit.steOf(0x100)!)).toEqual(hex64(encodeSte({ V: 1, Config: SteConfig.Abort })));
  });

  it("needs the device's vDEVICE before attaching a translating vSTE (ENOENT), not for abort or bypass", () => {
    const h = withViommu();
    const s1 = unwrap(h.alloc(vsteBytes(["0x000000005a4e100b", "0x0"])));
    expect(errnoOf(h.ctx.attach(h.devId, s1))).toBe("ENOENT");
    expect(errnoOf(h.ctx.attach(h.devId, unwrap(h.alloc(vsteBytes(["0x1", "0x0"])))))).toBeUndefined();
    expect(errnoOf(h.ctx.attach(h.devId, unwrap(h.alloc(vsteBytes(["0x9", "0x0"])))))).toBeUndefined();
  });

  it("records C_BAD_STE for a nested STE the SMMU finds ILLEGAL (S1CDMax beyond SSIDSIZE) and forwards it with the vSID", () => {
    const h = withViommu();
    unwrap(h.ctx.vdeviceAlloc({ viommuId: h.viommuId, devId: h.devId, virtId: 0x28 }));
    const q = unwrap(h.ctx.veventqAlloc({ flags: 0, viommuId: h.viommuId, type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, depth: 4 }));
    unwrap(h.ctx.attach(h.devId, unwrap(h.alloc(vsteBytes(["0xf80000000001000b", "0x0"])))));
    expect(h.device.read(0x1000, 4).ok).toBe(false);
    const records = parseVevents(unwrap(q.file.read(1024)), 32);
    expect(records).toHaveLength(1);
    const e = decodeEvent(fromBytes(records[0]!.payload!, 0, 256));
    expect(e).toMatchObject({ name: "C_BAD_STE", fields: { StreamID: 0x28 } });
  });

  it("blocks DMA of a detached device with an abort STE, which records no event", () => {
    const h = withViommu();
    unwrap(h.ctx.attach(h.devId, unwrap(h.alloc(vsteBytes(["0x9", "0x0"])))));
    expect(h.device.read(0x1000, 4).ok).toBe(true);
    unwrap(h.ctx.detach(h.devId));
    expect(h.device.read(0x1000, 4).ok).toBe(false);
    expect(h.unit.hostEvents).toHaveLength(0);
  });
});

describe("SMMUv3 vIOMMU invalidation (IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3)", () => {
  function withVdevice() {
    const h = hostSetup();
    const viommuId = unwrap(h.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, devId: h.devId, hwptId: h.parentId }));
    unwrap(h.ctx.vdeviceAlloc({ viommuId, devId: h.devId, virtId: 0x28 }));
    return { ...h, viommuId, vsmmu: vsmmuOf(h, viommuId) };
  }

  it("forces the VMID into TLBI_NH_{ALL,ASID,VA,VAA} and turns TLBI_NSNH_ALL into TLBI_NH_ALL of the VMID with dw1 cleared", () => {
    const h = withVdevice();
    const vmid = h.vsmmu.vmid;
    const va = encodeCommand("CMD_TLBI_NH_VA", { VMID: 0x77, ASID: 5, NUM: 3, SCALE: 1, TG: 1, TTL: 3, Leaf: 1, Addr: 0xffffd000n });
    expect(h.vsmmu.convertGuestCommand(va)).toEqual(ok());
    expect(hex64(va)).toEqual(hex64(encodeCommand("CMD_TLBI_NH_VA", { VMID: vmid, ASID: 5, NUM: 3, SCALE: 1, TG: 1, TTL: 3, Leaf: 1, Addr: 0xffffd000n })));
    const nsnh = encodeCommand("CMD_TLBI_NSNH_ALL", {});
    expect(h.vsmmu.convertGuestCommand(nsnh).ok).toBe(true);
    expect(hex64(nsnh)).toEqual(hex64(encodeCommand("CMD_TLBI_NH_ALL", { VMID: vmid })));
    for (const name of ["CMD_TLBI_NH_ALL", "CMD_TLBI_NH_ASID", "CMD_TLBI_NH_VAA"] as const) {
      const c = encodeCommand(name, { VMID: 0x1234 });
      h.vsmmu.convertGuestCommand(c);
      expect(c[1]! & 0xffff).toBe(vmid);
    }
  });

  it("translates the vSID of ATC_INV, CFGI_CD and CFGI_CD_ALL to the physical StreamID, EIO for an unknown vSID", () => {
    const h = withVdevice();
    for (const name of ["CMD_ATC_INV", "CMD_CFGI_CD", "CMD_CFGI_CD_ALL"] as const) {
      const c = encodeCommand(name, { SID: 0x28 });
      expect(h.vsmmu.convertGuestCommand(c).ok).toBe(true);
      expect(c[1]).toBe(0x100);
    }
    expect(errnoOf(h.vsmmu.convertGuestCommand(encodeCommand("CMD_CFGI_CD", { SID: 0x29 })))).toBe("EIO");
  });

  it.each(["CMD_CFGI_STE", "CMD_CFGI_STE_RANGE", "CMD_TLBI_S12_VMALL", "CMD_TLBI_S2_IPA", "CMD_TLBI_EL2_ALL", "CMD_PRI_RESP", "CMD_RESUME", "CMD_SYNC", "CMD_PREFETCH_CONFIG"] as const)(
    "rejects %s with EIO: its whole batch of 63 is issued to no effect, the batches before it ran",
    (name) => {
      const h = withVdevice();
      const vmid = h.vsmmu.vmid;
      h.unit.iotlb.insert(vmid, 1, 0x10_0000, 12, 0x8000_0000, Perm.ReadWrite);
      h.unit.iotlb.insert(vmid, 2, 0x10_0000, 12, 0x8000_1000, Perm.ReadWrite);
      const r = invalidate(h, h.viommuId, [encodeCommand("CMD_TLBI_NH_ASID", { ASID: 1 }), encodeCommand(name, {}), encodeCommand("CMD_TLBI_NH_ALL", {})]);
      expect(r.handled).toBe(0);
      expect(errnoOf(r.result)).toBe("EIO");
      expect(h.unit.iotlb.size).toBe(2);
      // 63 good ones form the first batch, which runs; the bad one fails the second.
      const long = [...Array.from({ length: 62 }, () => encodeCommand("CMD_TLBI_NH_ASID", { ASID: 3 })), encodeCommand("CMD_TLBI_NH_ASID", { ASID: 1 }), encodeCommand(name, {})];
      const r2 = invalidate(h, h.viommuId, long);
      expect(r2.handled).toBe(63);
      expect(h.unit.iotlb.size).toBe(1);
    },
  );

  it.each([
    ["TLBI_NH_ALL with an ASID", encodeCommand("CMD_TLBI_NH_ALL", {}), (c: Uint32Array) => (c[1] = 0x0005_0000)],
    ["TLBI_NSNH_ALL with a VMID", encodeCommand("CMD_TLBI_NSNH_ALL", {}), (c: Uint32Array) => (c[1] = 7)],
    ["TLBI_NH_VA with SSec", encodeCommand("CMD_TLBI_NH_VA", { ASID: 1, TG: 1, TTL: 3 }), (c: Uint32Array) => (c[0] = (c[0]! | (1 << 10)) >>> 0)],
    ["TLBI_NH_VA with TTL but TG 0", encodeCommand("CMD_TLBI_NH_VA", { ASID: 1, TTL: 3 }), () => undefined],
    ["TLBI_NH_VA with NUM = SCALE = TTL = 0 (Reserved)", encodeCommand("CMD_TLBI_NH_VA", { ASID: 1, TG: 1 }), () => undefined],
    ["TLBI_NH_VA 16K TTL 1 without DS", encodeCommand("CMD_TLBI_NH_VA", { ASID: 1, TG: 2, TTL: 1 }), () => undefined],
    ["TLBI_NH_VAA with an ASID", encodeCommand("CMD_TLBI_NH_VAA", { TG: 1, TTL: 3 }), (c: Uint32Array) => (c[1] = 0x0001_0000)],
    ["ATC_INV with Size 53", encodeCommand("CMD_ATC_INV", { SID: 0x28, Size: 53 }), () => undefined],
    ["CFGI_CD_ALL with an SSID", encodeCommand("CMD_CFGI_CD_ALL", { SID: 0x28 }), (c: Uint32Array) => (c[0] = (c[0]! | 0x1000) >>> 0)],
    ["CFGI_CD with SSV", encodeCommand("CMD_CFGI_CD", { SID: 0x28 }), (c: Uint32Array) => (c[0] = (c[0]! | (1 << 11)) >>> 0)],
  ])("rejects %s with EIO (arm_vsmmu_validate_user_cmd)", (_what, cmd, tweak) => {
    const h = withVdevice();
    tweak(cmd);
    expect(errnoOf(h.vsmmu.convertGuestCommand(cmd))).toBe("EIO");
  });

  it("accepts what Linux's arm_smmu_tlb_inv_range_cmd sends: a leaf range TLBI with its TTL, a non-leaf one of two pages", () => {
    const h = withVdevice();
    expect(h.vsmmu.convertGuestCommand(encodeCommand("CMD_TLBI_NH_VA", { ASID: 1, TG: 1, TTL: 3, Leaf: 1, Addr: 0x1000n })).ok).toBe(true);
    expect(h.vsmmu.convertGuestCommand(encodeCommand("CMD_TLBI_NH_VA", { ASID: 1, TG: 1, NUM: 1, Addr: 0x1000n })).ok).toBe(true);
    expect(h.vsmmu.convertGuestCommand(encodeCommand("CMD_ATC_INV", { SID: 0x28, Size: 52, SSV: 1, SSID: 3, Global: 1 })).ok).toBe(true);
  });

  it("copies the array with the full-array helper: wrong type EINVAL, zero entries a type probe, a nonzero tail E2BIG, a zero tail or a short entry accepted", () => {
    const h = withVdevice();
    expect(invalidate(h, h.viommuId, [])).toEqual({ handled: 0, result: ok() });
    const bytes = toBytes(encodeCommand("CMD_TLBI_NH_ALL", {}));
    expect(errnoOf(h.ctx.hwptInvalidate({ hwptId: h.viommuId, dataType: 0, entryLen: 16, entryNum: 1, entries: bytes }).result)).toBe("EINVAL");
    const long = new Uint8Array(24);
    long.set(bytes);
    expect(invalidate(h, h.viommuId, [encodeCommand("CMD_TLBI_NH_ALL", {})], 24).result.ok).toBe(true);
    long[20] = 1;
    expect(errnoOf(h.ctx.hwptInvalidate({ hwptId: h.viommuId, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entryLen: 24, entryNum: 1, entries: long }).result)).toBe("E2BIG");
    const short = h.ctx.hwptInvalidate({ hwptId: h.viommuId, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entryLen: 8, entryNum: 1, entries: bytes.subarray(0, 8) });
    expect(short).toEqual({ handled: 1, result: ok() });
  });

  it("runs the converted commands on the physical queue: a TLBI by ASID of this VMID empties the IOTLB of that ASID", () => {
    const h = withVdevice();
    const vmid = h.vsmmu.vmid;
    h.unit.iotlb.insert(vmid, 7, 0x10_0000, 12, 0x8000_0000, Perm.ReadWrite);
    h.unit.iotlb.insert(vmid, 8, 0x10_0000, 12, 0x8000_1000, Perm.ReadWrite);
    h.unit.iotlb.insert(vmid + 1, 7, 0x10_0000, 12, 0x8000_2000, Perm.ReadWrite);
    expect(invalidate(h, h.viommuId, [encodeCommand("CMD_TLBI_NH_ASID", { VMID: vmid + 1, ASID: 7 })]).handled).toBe(1);
    expect(h.unit.iotlb.size).toBe(2);
  });

  it("processes more entries than one hardware batch (63 commands plus a CMD_SYNC)", () => {
    const h = withVdevice();
    const commands = Array.from({ length: 200 }, (_, i) => encodeCommand("CMD_TLBI_NH_VA", { ASID: 1, Addr: BigInt(i * 4096) }));
    expect(invalidate(h, h.viommuId, commands)).toEqual({ handled: 200, result: ok() });
  });
});

describe("SMMUv3 physical command execution", () => {
  it("flags an unknown opcode or a command with reserved bits set CERROR_ILL", () => {
    const h = hostSetup();
    expect(h.unit.executeCommand(Uint32Array.of(0x7f, 0, 0, 0))).toBe(1);
    expect(h.unit.executeCommand(Uint32Array.of(0x10, 0, 1, 0))).toBe(1);
    expect(h.unit.executeCommand(encodeCommand("CMD_TLBI_NSNH_ALL", {}))).toBe(0);
  });

  it("invalidates exactly the range a TLBI_NH_VA range command covers", () => {
    const h = hostSetup();
    for (let p = 0; p < 8; p++) h.unit.iotlb.insert(1, 2, p * 4096, 12, 0x4000_0000 + p * 4096, Perm.Read);
    // TG 4K, SCALE 1, NUM 1: (1 + 1) × 2^1 = 4 pages from 0x2000.
    h.unit.executeCommand(encodeCommand("CMD_TLBI_NH_VA", { VMID: 1, ASID: 2, TG: 1, SCALE: 1, NUM: 1, Addr: 0x2000n }));
    expect(h.unit.iotlb.size).toBe(4);
    const hit = newIotlbHit();
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((p) => h.unit.iotlb.lookup(1, 2, p * 4096, hit))).toEqual([true, true, false, false, false, false, true, true]);
  });
});

describe("SMMUv3 translation of a device's DMA", () => {
  it("walks a stage-2-only (paging) attachment and caches it in the IOTLB", () => {
    const h = hostSetup();
    unwrap(h.ctx.attach(h.devId, h.ioasId));
    expect(decodeSte(h.unit.steOf(0x100)!)).toMatchObject({ V: 1, Config: SteConfig.S2Translate });
    const out = newWalkResult();
    h.device.translate(0x12345, true, NO_PASID, out);
    expect(out).toMatchObject({ ok: true, output: h.vm.memory.backingOf(0x12345), pageShift: 21 });
    const misses = h.unit.iotlb.misses;
    h.device.translate(0x12345, false, NO_PASID, out);
    expect(h.unit.iotlb.misses).toBe(misses);
    expect(h.unit.iotlb.hits).toBeGreaterThan(0);
  });

  it("terminates a SubstreamID on a stream without stage 1 (C_BAD_SUBSTREAMID, in the host log)", () => {
    const h = hostSetup();
    unwrap(h.ctx.attach(h.devId, h.ioasId));
    expect(h.device.read(0x1000, 4, 3).ok).toBe(false);
    expect(h.unit.hostEvents.map((e) => e[0]! & 0xff)).toEqual([0x08]);
  });
});

describe("SMMUv3 masters with several StreamIDs", () => {
  it("refuses a vDEVICE for a master with other than exactly one StreamID with EOPNOTSUPP (arm_vsmmu_vdevice_init)", () => {
    for (const sids of [[0x100, 0x101], []]) {
      const h = hostSetup();
      unwrap(h.unit.setStreamIds(h.device, sids));
      const viommuId = unwrap(h.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, devId: h.devId, hwptId: h.parentId }));
      expect(errnoOf(h.ctx.vdeviceAlloc({ viommuId, devId: h.devId, virtId: 0x28 }))).toBe("EOPNOTSUPP");
      // Nothing of it is left: the vSID is free and the vSMMU maps nothing.
      expect(vsmmuOf(h, viommuId).sidMap.size).toBe(0);
      expect(h.ctx.list("VDEVICE")).toEqual([]);
    }
    const one = hostSetup();
    unwrap(one.unit.setStreamIds(one.device, [0x100]));
    const viommuId = unwrap(one.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, devId: one.devId, hwptId: one.parentId }));
    expect(one.ctx.vdeviceAlloc({ viommuId, devId: one.devId, virtId: 0x28 }).ok).toBe(true);
  });

  it("installs a master's STE at every one of its StreamIDs, and refuses one beyond SIDSIZE", () => {
    const h = hostSetup();
    unwrap(h.unit.setStreamIds(h.device, [0x100, 0x1ff]));
    unwrap(h.ctx.attach(h.devId, h.ioasId));
    expect(decodeSte(h.unit.steOf(0x1ff)!).Config).toBe(SteConfig.S2Translate);
    expect(h.unit.steOf(0x1ff)).toBe(h.unit.steOf(0x100));
    h.ctx.detach(h.devId);
    expect(decodeSte(h.unit.steOf(0x1ff)!).Config).toBe(SteConfig.Abort);
    expect(errnoOf(h.unit.setStreamIds(h.device, [0x1_0000]))).toBe("EINVAL");
  });
});
