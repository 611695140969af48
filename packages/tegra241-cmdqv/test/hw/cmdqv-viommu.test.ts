import { afterEach, describe, expect, it } from "vitest";
import { errnoOf, IOMMU_HW_INFO_FLAG_INPUT_TYPE, parseVevents, unwrap } from "@viommu/core";
import { IOMMU_HW_INFO_TYPE_ARM_SMMUV3 } from "@viommu/smmuv3";
import {
  cmdqAllocLayout,
  cmdqAllocOffset,
  decodeHwInfoTegra241Cmdqv,
  decodeReg32,
  decodeReg64,
  decodeVeventTegra241Cmdqv,
  decodeViommuTegra241Cmdqv,
  IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV,
  IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV,
  IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV,
  IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV,
  lvcmdqPage1,
  vcmdqBaseLayout,
  VcmdqPage0Reg,
  VcmdqPage1Reg,
  vintfBase,
  vintfConfigLayout,
  VintfReg,
  vintfSidMatchOffset,
  vintfSidReplaceOffset,
} from "../../src/format/index.js";
import { hostSystem, type HostSystem } from "./host-system.js";

let sys: HostSystem | undefined;
afterEach(() => {
  sys?.dispose();
  sys = undefined;
});

function open(options?: Parameters<typeof hostSystem>[0]): HostSystem {
  sys = hostSystem(options);
  return sys;
}

/** The VINTF a vIOMMU got: the one user VINTF whose CONFIG is enabled with HYP_OWN clear, by mmap offset order. */
function userVintfs(s: HostSystem): number[] {
  const out: number[] = [];
  for (let v = 1; v < s.cmdqv.cmdqv.geometry.vintfs; v++) if (s.cmdqv.cmdqv.read32(vintfBase(v) + VintfReg.CONFIG) & 1) out.push(v);
  return out;
}

describe("GET_HW_INFO", () => {
  it("INPUT_TYPE = TEGRA241_CMDQV answers iommu_hw_info_tegra241_cmdqv from PARAM; the default type stays the SMMU's", () => {
    const s = open();
    const tegra = unwrap(s.ctx.getHwInfo({ flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, devId: s.devIds[0]!, dataLen: 8, inDataType: IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV }));
    expect(tegra.outDataType).toBe(IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV);
    expect(decodeHwInfoTegra241Cmdqv(tegra.data)).toEqual({ flags: 0, version: 1, log2vcmdqs: 1, log2vsids: 4, __reserved: 0 });
    expect(unwrap(s.ctx.getHwInfo({ flags: 0, devId: s.devIds[0]!, dataLen: 40 })).outDataType).toBe(IOMMU_HW_INFO_TYPE_ARM_SMMUV3);
    expect(errnoOf(s.ctx.getHwInfo({ flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, devId: s.devIds[0]!, dataLen: 8, inDataType: 9 }))).toBe("EOPNOTSUPP");
  });
});

describe("IOMMU_VIOMMU_ALLOC of type TEGRA241_CMDQV", () => {
  it("needs iommu_viommu_tegra241_cmdqv: none is EINVAL, a wrong size EINVAL", () => {
    const s = open();
    const base = { flags: 0, type: IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV, devId: s.devIds[0]!, hwptId: s.parentId };
    expect(errnoOf(s.ctx.viommuAlloc(base))).toBe("EINVAL");
    expect(errnoOf(s.ctx.viommuAlloc({ ...base, data: { type: IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV, bytes: new Uint8Array(8) } }))).toBe("EINVAL");
    expect(errnoOf(s.ctx.viommuAlloc({ ...base, data: { type: IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV, bytes: new Uint8Array(24) } }))).toBe("EINVAL");
    expect(userVintfs(s)).toEqual([]);
  });

  it("writes back the VINTF page-0 mmap offset and 64 KiB, and enables a VINTF with the parent's VMID and HYP_OWN 0", () => {
    const s = open();
    const { data } = s.allocViommu();
    const out = decodeViommuTegra241Cmdqv(data.bytes)!;
    expect(out.out_vintf_mmap_length).toBe(0x10000n);
    expect(out.out_vintf_mmap_offset).toBeGreaterThanOrEqual(4096n);
    const [v] = userVintfs(s);
    expect(v).toBe(1);
    const config = decodeReg32(vintfConfigLayout, s.cmdqv.cmdqv.read32(vintfBase(v!) + VintfReg.CONFIG));
    expect(config).toMatchObject({ VINTF_EN: 1, VINTF_HYP_OWN: 0 });
    expect(config.VINTF_VMID).toBeGreaterThan(0);
    // VINTF0 is the host's, hypervisor-owned.
    expect(decodeReg32(vintfConfigLayout, s.cmdqv.cmdqv.read32(vintfBase(0) + VintfReg.CONFIG))).toMatchObject({ VINTF_EN: 1, VINTF_HYP_OWN: 1 });
  });

  it("answers ENOSPC once every VINTF but the host's is taken", () => {
    const s = open();
    for (let i = 1; i < 64; i++) s.allocViommu();
    const data = { type: IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV, bytes: new Uint8Array(16) };
    expect(errnoOf(s.ctx.viommuAlloc({ flags: 0, type: data.type, devId: s.devIds[0]!, hwptId: s.parentId, data }))).toBe("ENOSPC");
  });

  it("mmap follows the core's rules and pins the vIOMMU: destroy is EBUSY until unmapped, then the VINTF is disabled and reusable", () => {
    const s = open();
    const { id, data } = s.allocViommu();
    const offset = Number(decodeViommuTegra241Cmdqv(data.bytes)!.out_vintf_mmap_offset);
    const rw = { read: true, write: true };
    expect(errnoOf(s.ctx.mmap({ offset, length: 0x10000, shared: false, prot: rw }))).toBe("EINVAL");
    expect(errnoOf(s.ctx.mmap({ offset, length: 0x10000, shared: true, prot: { ...rw, exec: true } }))).toBe("EPERM");
    expect(errnoOf(s.ctx.mmap({ offset, length: 0x8000, shared: true, prot: rw }))).toBe("ENXIO");
    expect(errnoOf(s.ctx.mmap({ offset: offset + 0x1000, length: 0x10000, shared: true, prot: rw }))).toBe("ENXIO");
    const handle = unwrap(s.ctx.mmap({ offset, length: 0x10000, shared: true, prot: rw }));
    expect(errnoOf(s.ctx.destroy(id))).toBe("EBUSY");
    handle.unmap();
    unwrap(s.ctx.destroy(id));
    expect(userVintfs(s)).toEqual([]);
    s.allocViommu();
    expect(userVintfs(s)).toEqual([1]);
  });
});

describe("vDEVICEs as SID_MATCH / SID_REPLACE slots", () => {
  it("programs SID_REPLACE = pSID and SID_MATCH = vSID << 1 | 1; destroying clears the pair", () => {
    const s = open();
    const { id } = s.allocViommu();
    const vdev = unwrap(s.ctx.vdeviceAlloc({ viommuId: id, devId: s.devIds[0]!, virtId: 0x42 }));
    const c = s.cmdqv.cmdqv;
    expect(c.read32(vintfSidReplaceOffset(1, 0))).toBe(0x100);
    expect(c.read32(vintfSidMatchOffset(1, 0))).toBe((0x42 << 1) | 1);
    unwrap(s.ctx.destroy(vdev));
    expect(c.read32(vintfSidMatchOffset(1, 0))).toBe(0);
    expect(c.read32(vintfSidReplaceOffset(1, 0))).toBe(0);
  });

  it("rejects a virt_id above U32_MAX with EINVAL and a 17th vDEVICE with ENOSPC", () => {
    const s = open({ devices: 18 });
    const { id } = s.allocViommu();
    expect(errnoOf(s.ctx.vdeviceAlloc({ viommuId: id, devId: s.devIds[0]!, virtId: 2 ** 32 }))).toBe("EINVAL");
    for (let i = 0; i < 16; i++) unwrap(s.ctx.vdeviceAlloc({ viommuId: id, devId: s.devIds[i]!, virtId: 0x10 + i }));
    expect(errnoOf(s.ctx.vdeviceAlloc({ viommuId: id, devId: s.devIds[16]!, virtId: 0x40 }))).toBe("ENOSPC");
  });

  it("keeps Linux's 32-bit write: a vSID with bit 31 set matches through its low 31 bits", () => {
    const s = open();
    const { id } = s.allocViommu();
    unwrap(s.ctx.vdeviceAlloc({ viommuId: id, devId: s.devIds[0]!, virtId: 0x8000_0005 }));
    expect(s.cmdqv.cmdqv.read32(vintfSidMatchOffset(1, 0))).toBe(0xb);
    expect(s.cmdqv.cmdqv.vintfs[1]!.physicalSid(5)).toBe(0x100);
  });
});

describe("HW queues as logical VCMDQs", () => {
  const QUEUE = 0x1000_0000;
  const alloc = (s: HostSystem, viommuId: number, index: number, length: number, iova = QUEUE + index * 0x10_0000) =>
    s.ctx.hwQueueAlloc({ flags: 0, viommuId, type: IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, index, nestingParentIova: iova, length });

  it("maps the global VCMDQ into the VINTF and writes BASE = PA | log2(entries)", () => {
    const s = open();
    const { id } = s.allocViommu();
    unwrap(alloc(s, id, 0, 0x1000));
    const c = s.cmdqv.cmdqv;
    expect(decodeReg32(cmdqAllocLayout, c.read32(cmdqAllocOffset(2)))).toEqual({ CMDQV_CMDQ_ALLOCATED: 1, CMDQV_CMDQ_ALLOC_LVCMDQ: 0, CMDQV_CMDQ_ALLOC_VINTF: 1 });
    const base = decodeReg64(vcmdqBaseLayout, c.mmio.read(lvcmdqPage1(1, 0) + VcmdqPage1Reg.BASE, 8));
    expect(base.LOG2SIZE).toBe(8);
    expect(base.ADDR).toBe(s.vm.memory.backingOf(QUEUE));
  });

  it("enforces Linux's rules: index ≥ LVCMDQs EINVAL, duplicate EEXIST, a gap EIO, size and alignment EINVAL", () => {
    const s = open({ backingPageShift: 30 });
    const { id } = s.allocViommu();
    expect(errnoOf(alloc(s, id, 2, 0x1000))).toBe("EINVAL");
    expect(errnoOf(alloc(s, id, 1, 0x1000))).toBe("EIO");
    expect(errnoOf(alloc(s, id, 0, 0x3000))).toBe("EINVAL");
    expect(errnoOf(alloc(s, id, 0, 16))).toBe("EINVAL");
    expect(errnoOf(alloc(s, id, 0, 2 ** 24))).toBe("EINVAL");
    expect(errnoOf(alloc(s, id, 0, 0x2000, QUEUE + 0x1000))).toBe("EINVAL");
    unwrap(alloc(s, id, 0, 32));
    expect(errnoOf(alloc(s, id, 0, 0x1000))).toBe("EEXIST");
    unwrap(alloc(s, id, 1, 2 ** 23, QUEUE + 2 ** 23));
  });

  it("must be destroyed in descending order (EBUSY otherwise); destroying deinits and unmaps the queue", () => {
    const s = open();
    const { id } = s.allocViommu();
    const q0 = unwrap(alloc(s, id, 0, 0x1000));
    const q1 = unwrap(alloc(s, id, 1, 0x1000));
    expect(errnoOf(s.ctx.destroy(q0))).toBe("EBUSY");
    expect(errnoOf(s.ctx.ioasUnmap({ ioasId: s.ioasId, iova: 0n, length: 2n ** 64n - 1n }))).toBe("EBUSY");
    unwrap(s.ctx.destroy(q1));
    unwrap(s.ctx.destroy(q0));
    const c = s.cmdqv.cmdqv;
    expect(c.read32(cmdqAllocOffset(2)) & 1).toBe(0);
    expect(c.read32(lvcmdqPage1(1, 0) + VcmdqPage1Reg.BASE)).toBe(0);
    expect(c.vintfs[1]!.lvcmdqs).toEqual([undefined, undefined]);
  });

  it("reports a queue error as a TEGRA241_CMDQV vEVENT carrying the LVCMDQ error map, dropped when no vEVENTQ exists", () => {
    const s = open();
    const { id, data } = s.allocViommu();
    unwrap(alloc(s, id, 0, 0x1000));
    unwrap(alloc(s, id, 1, 0x1000));
    const page0 = unwrap(s.ctx.mmap({ offset: Number(decodeViommuTegra241Cmdqv(data.bytes)!.out_vintf_mmap_offset), length: 0x10000, shared: true, prot: { read: true, write: true } })).region;
    const fail = (lidx: number): void => {
      s.vm.memory.writeWords(QUEUE + lidx * 0x10_0000, Uint32Array.of(0x03, 0, 0, 0));
      page0.write(lidx * 0x80 + VcmdqPage0Reg.CONFIG, 4, 1n);
      page0.write(lidx * 0x80 + VcmdqPage0Reg.PROD_INDX, 4, 1n);
    };
    fail(0);
    expect(s.cmdqv.droppedEvents).toBe(1);
    const q = unwrap(s.ctx.veventqAlloc({ flags: 0, viommuId: id, type: IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV, depth: 4 }));
    fail(1);
    const records = parseVevents(unwrap(q.file.read(4096)), 16);
    expect(records).toHaveLength(1);
    expect(decodeVeventTegra241Cmdqv(records[0]!.payload!)).toEqual({ lvcmdq_err_map: [0b11n, 0n] });
    q.file.close();
  });
});
