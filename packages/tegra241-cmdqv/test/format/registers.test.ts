import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { decodeLayout } from "@viommu/core";
import {
  CMDQV_CONFIG_RESET,
  CMDQV_PARAM_QEMU_GUEST,
  VcmdqCerror,
  activeGerrors,
  bitmapSet,
  bitmapTest,
  cmdqAllocLayout,
  cmdqvConfigLayout,
  cmdqvCounts,
  cmdqvParamLayout,
  decodeReg32,
  decodeReg64,
  encodeReg32,
  encodeReg64,
  lvcmdqErrMapLayout,
  queuePointer,
  reg32HasReservedBits,
  vcmdqBaseFor,
  vcmdqBaseLayout,
  vcmdqCerrorName,
  vcmdqConsIndxBaseLayout,
  vcmdqConsIndxLayout,
  vcmdqGerrorLayout,
  vcmdqProdIndxLayout,
  vintfConfigLayout,
  vintfSidMatchLayout,
  vintfSidReplaceLayout,
  vintfStatusLayout,
} from "../../src/format/index.js";

// Bit positions: spec arm-hyperv-virtio.md §4.2–4.4 and iommufd.md §7.3, checked against Linux tegra241-cmdqv.c
// (GENMASK/BIT macros) and QEMU hw/arm/tegra241-cmdqv.h (REG32/FIELD). Values are what Linux writes.
describe("global registers (spec §4.2)", () => {
  it("CONFIG reset value 0x00020403 of NVIDIA's QEMU", () => {
    expect(decodeReg32(cmdqvConfigLayout, CMDQV_CONFIG_RESET)).toEqual({
      CMDQV_EN: 1,
      CMDQV_PER_CMD_OFFSET: 1,
      CMDQ_MAX_CLK_BATCH: 0x40,
      CMDQ_MAX_CMD_BATCH: 0x20,
      CONS_DRAM_EN: 0,
    });
  });

  it("CONFIG 0x00020083 of a later QEMU revision: the same EN / PER_CMD_OFFSET / CMD_BATCH, CLK_BATCH 8", () => {
    expect(decodeReg32(cmdqvConfigLayout, 0x00020083)).toEqual({ CMDQV_EN: 1, CMDQV_PER_CMD_OFFSET: 1, CMDQ_MAX_CLK_BATCH: 8, CMDQ_MAX_CMD_BATCH: 0x20, CONS_DRAM_EN: 0 });
  });

  it("PARAM QEMU shows a VM: VER 1, 2 VCMDQs, 1 VINTF, 16 SIDs = 0x4011", () => {
    const param = decodeReg32(cmdqvParamLayout, CMDQV_PARAM_QEMU_GUEST);
    expect(param).toEqual({ CMDQV_VER: 1, CMDQV_NUM_VCMDQ_LOG2: 1, CMDQV_NUM_VINTF_LOG2: 0, CMDQV_NUM_SID_PER_VM_LOG2: 4 });
    expect(cmdqvCounts(param)).toEqual({ vintfs: 1, vcmdqs: 2, lvcmdqsPerVintf: 2, sidsPerVintf: 16 });
  });

  it("a host PARAM with 128 VCMDQs and 64 VINTFs gives 2 LVCMDQs per VINTF (__tegra241_cmdqv_probe)", () => {
    expect(cmdqvCounts(decodeReg32(cmdqvParamLayout, 0x4671))).toEqual({ vintfs: 64, vcmdqs: 128, lvcmdqsPerVintf: 2, sidsPerVintf: 16 });
  });

  it.each([
    ["VINTF 1, LVCMDQ 1 as tegra241_cmdqv_hw_reset writes it (unmapped)", { CMDQV_CMDQ_ALLOC_VINTF: 1, CMDQV_CMDQ_ALLOC_LVCMDQ: 1 }, 0x00008002],
    ["then mapped: | CMDQV_CMDQ_ALLOCATED (tegra241_vcmdq_map_lvcmdq)", { CMDQV_CMDQ_ALLOC_VINTF: 1, CMDQV_CMDQ_ALLOC_LVCMDQ: 1, CMDQV_CMDQ_ALLOCATED: 1 }, 0x00008003],
    ["the widest fields", { CMDQV_CMDQ_ALLOC_VINTF: 63, CMDQV_CMDQ_ALLOC_LVCMDQ: 127, CMDQV_CMDQ_ALLOCATED: 1 }, 0x001f80ff],
  ])("CMDQ_ALLOC %s", (_what, fields, value) => {
    expect(encodeReg32(cmdqAllocLayout, fields)).toBe(value);
    expect(decodeReg32(cmdqAllocLayout, value)).toMatchObject(fields);
  });

  it("error maps and interrupt masks are plain bitmaps over 32-bit words", () => {
    const map = new Uint32Array(4);
    bitmapSet(map, 0);
    bitmapSet(map, 97);
    expect(Array.from(map)).toEqual([1, 0, 0, 2]);
    expect([bitmapTest(map, 97), bitmapTest(map, 96), bitmapTest(map, 200)]).toEqual([true, false, false]);
    bitmapSet(map, 97, false);
    expect(map[3]).toBe(0);
    expect(() => bitmapSet(map, 128)).toThrow(RangeError);
  });
});

describe("VINTF registers (spec §4.3)", () => {
  it.each([
    ["host VINTF0: HYP_OWN | EN, VMID 0 (tegra241_vintf_hw_init)", { VINTF_EN: 1, VINTF_HYP_OWN: 1 }, 0x00020001],
    ["user VINTF: VMID 5 from the vSMMU's stage 2, HYP_OWN 0, EN", { VINTF_EN: 1, VINTF_VMID: 5 }, 0x0000000b],
    ["the widest VMID", { VINTF_VMID: 0xffff }, 0x0001fffe],
  ])("CONFIG %s", (_what, fields, value) => {
    expect(encodeReg32(vintfConfigLayout, fields)).toBe(value);
    expect(decodeReg32(vintfConfigLayout, value)).toMatchObject(fields);
  });

  it("STATUS: ENABLED, VCMDQ error (QEMU V_VINTF_STATUS_VCMDQ_ERROR = 1 << 1), VI_NUM_LVCMDQ [23:16]", () => {
    expect(decodeReg32(vintfStatusLayout, 0x00020003)).toEqual({ VINTF_ENABLED: 1, VINTF_STATUS: 1, VINTF_VI_NUM_LVCMDQ: 2 });
  });

  it("SID_MATCH = vSID << 1 | 1 and SID_REPLACE = pSID (tegra241_vintf_init_vsid)", () => {
    expect(encodeReg32(vintfSidMatchLayout, { VIRT_SID: 0x10, ENABLE: 1 })).toBe(0x21);
    expect(decodeReg32(vintfSidMatchLayout, 0x21)).toEqual({ ENABLE: 1, VIRT_SID: 0x10 });
    expect(decodeReg32(vintfSidReplaceLayout, 0x10040)).toEqual({ PHYS_SID: 0x10040 });
    expect(reg32HasReservedBits(vintfSidMatchLayout, 0x00200001)).toBe(true); // bit 21, beyond QEMU's 20-bit VIRT_SID
  });

  it("LVCMDQ_ERR_MAP: 128 bits read as two 64-bit words (Linux LVCMDQ_ERR_MAP_64)", () => {
    const raw = Uint32Array.of(0x2, 0, 0, 0x80000000);
    expect(decodeLayout(lvcmdqErrMapLayout, raw)).toEqual({ LVCMDQ_ERR_MAP_64_0: 0x2n, LVCMDQ_ERR_MAP_64_1: 0x8000000000000000n });
  });
});

describe("per-VCMDQ registers (spec §4.4)", () => {
  it("CONS_INDX: RD [19:0], ERR [30:24]; an illegal command at index 5 of a 256-entry queue, wrap 1", () => {
    const cons = decodeReg32(vcmdqConsIndxLayout, 0x01000105);
    expect(cons).toEqual({ RD: 0x105, ERR: VcmdqCerror.CERROR_ILL });
    expect(vcmdqCerrorName(cons.ERR)).toBe("CERROR_ILL");
    expect(queuePointer(cons.RD, 8)).toEqual({ index: 5, wrap: 1 });
    expect([vcmdqCerrorName(4), vcmdqCerrorName(0x7f)]).toEqual(["CERROR_ILL_ACCESS", "UNKNOWN"]);
  });

  it("PROD_INDX WR [19:0]; GERROR bits; an error is active while GERROR ≠ GERRORN", () => {
    expect(decodeReg32(vcmdqProdIndxLayout, 0xfff00123)).toEqual({ WR: 0x00123 });
    expect(decodeReg32(vcmdqGerrorLayout, 0x7)).toEqual({ CMDQ_ERR: 1, CONS_DRAM_WR_ABT_ERR: 1, CMDQ_INIT_ERR: 1 });
    expect(activeGerrors(0x1, 0x0)).toBe(0x1);
    expect(activeGerrors(0x1, 0x1)).toBe(0x0);
  });

  it.each([
    ["host queue: 2^19 entries at 0x812000000 (q_base = base & VCMDQ_ADDR | LOG2SIZE)", 0x0000000812000013n, { ADDR: 0x812000000, LOG2SIZE: 19 }],
    ["user queue: 4 KiB = 256 entries at 4 GiB", 0x0000000100000008n, { ADDR: 0x100000000, LOG2SIZE: 8 }],
    ["the highest address bit 47", 0x0000800000000005n, { ADDR: 2 ** 47, LOG2SIZE: 5 }],
  ])("BASE %s", (_what, value, fields) => {
    expect(encodeReg64(vcmdqBaseLayout, fields)).toBe(value);
    expect(decodeReg64(vcmdqBaseLayout, value)).toEqual(fields);
  });

  it("BASE from an IOMMU_HW_QUEUE_ALLOC request, with iommufd's rules (tegra241_vintf_alloc_lvcmdq_user)", () => {
    expect(vcmdqBaseFor(0x100000000n, 4096)).toBe(0x0000000100000008n);
    expect(vcmdqBaseFor(0x100000000n, 32)).toBe(0x0000000100000001n);
    expect(vcmdqBaseFor(0x100000000n, 16)).toBeUndefined(); // below 32 bytes
    expect(vcmdqBaseFor(0x100000000n, 3000)).toBeUndefined(); // not a power of two
    expect(vcmdqBaseFor(0x100000800n, 4096)).toBeUndefined(); // not aligned to the length
    expect(vcmdqBaseFor(1n << 48n, 4096)).toBeUndefined(); // beyond VCMDQ_ADDR
    expect(vcmdqBaseFor(0n, 1 << 20, 15)).toBeUndefined(); // more than 2^(CMDQS + 4) bytes
    expect(vcmdqBaseFor(0n, 1 << 19, 15)).toBe(15n);
  });

  it("CONS_INDX_BASE ADDR [47:0]", () => {
    expect(decodeReg64(vcmdqConsIndxBaseLayout, 0xffff123456789abcn)).toEqual({ ADDR: 0x123456789abc });
  });

  it("round-trips every 32-bit value through each register layout, reserved bits aside", () => {
    const layouts = [cmdqvConfigLayout, cmdqvParamLayout, cmdqAllocLayout, vintfConfigLayout, vintfStatusLayout, vintfSidMatchLayout, vcmdqConsIndxLayout, vcmdqGerrorLayout];
    fc.assert(
      fc.property(fc.constantFrom(...layouts), fc.nat({ max: 0xffffffff }), (layout, value) => {
        const fields = decodeReg32(layout, value);
        const back = encodeReg32(layout, fields);
        expect(back).toBe((value & ~layout.reservedMask[0]!) >>> 0);
      }),
    );
  });
});
