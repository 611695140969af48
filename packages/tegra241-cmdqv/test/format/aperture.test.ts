import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  cmdqAllocOffset,
  cmdqErrMapOffset,
  cmdqvApertureSize,
  decodeCmdqvOffset,
  globalVcmdqIndex,
  lvcmdqPage0,
  lvcmdqPage1,
  vcmdqPage0,
  vcmdqPage1,
  vintfBase,
  vintfLvcmdqErrMap64Offset,
  vintfPage0,
  vintfPage1,
  vintfSidMatchOffset,
  vintfSidReplaceOffset,
} from "../../src/format/index.js";

// Offsets: spec arm-hyperv-virtio.md §4.1–4.4 / iommufd.md §7.2, checked against the TEGRA241_* macros of Linux
// drivers/iommu/arm/arm-smmu-v3/tegra241-cmdqv.c (read in torvalds/linux) and QEMU hw/arm/tegra241-cmdqv.h.
describe("CMDQV aperture (spec §4.1)", () => {
  it.each([
    ["TEGRA241_CMDQV_CMDQ_ERR_MAP(3)", cmdqErrMapOffset(3), 0x30],
    ["TEGRA241_CMDQV_CMDQ_ALLOC(5)", cmdqAllocOffset(5), 0x214],
    ["TEGRA241_VINTF(2)", vintfBase(2), 0x1200],
    ["VINTF(2) SID_MATCH(3)", vintfSidMatchOffset(2, 3), 0x124c],
    ["VINTF(2) SID_REPLACE(3)", vintfSidReplaceOffset(2, 3), 0x128c],
    ["VINTF(0) LVCMDQ_ERR_MAP_64(1)", vintfLvcmdqErrMap64Offset(0, 1), 0x10c8],
    ["TEGRA241_VCMDQ_PAGE0(3)", vcmdqPage0(3), 0x10180],
    ["TEGRA241_VCMDQ_PAGE1(3)", vcmdqPage1(3), 0x20180],
    ["TEGRA241_VINTFi_PAGE0(0) (QEMU CMDQV_VINTF_PAGE0_BASE)", vintfPage0(0), 0x30000],
    ["TEGRA241_VINTFi_PAGE1(0) (QEMU CMDQV_VINTF_PAGE1_BASE)", vintfPage1(0), 0x40000],
    ["TEGRA241_VINTFi_PAGE0(1): 0x30000 + 128 KiB", vintfPage0(1), 0x50000],
    ["TEGRA241_VINTFi_LVCMDQ_PAGE0(1, 1)", lvcmdqPage0(1, 1), 0x50080],
    ["TEGRA241_VINTFi_LVCMDQ_PAGE1(1, 1)", lvcmdqPage1(1, 1), 0x60080],
    ["QEMU's one-VINTF aperture (TEGRA241_CMDQV_IO_LEN)", cmdqvApertureSize(1), 0x50000],
  ])("%s = %i", (_what, offset, expected) => {
    expect(offset).toBe(expected);
  });

  it("pre-assigns global VCMDQ vintf · N + lidx (tegra241_vintf_init_lvcmdq)", () => {
    expect(globalVcmdqIndex(3, 1, 2)).toBe(7);
  });

  it.each([
    [0x0000, { block: "global", register: "CONFIG", index: 0 }],
    [0x0004, { block: "global", register: "PARAM", index: 0 }],
    [0x0018, { block: "global", register: "VINTF_ERR_MAP", index: 1 }],
    [0x001c, { block: "global", register: "VINTF_INT_MASK", index: 0 }],
    [0x002c, { block: "global", register: "CMDQ_ERR_MAP", index: 2 }],
    [0x03fc, { block: "global", register: "CMDQ_ALLOC", index: 127 }],
    [0x1204, { block: "vintf", vintf: 2, register: "STATUS", index: 0 }],
    [0x124c, { block: "vintf", vintf: 2, register: "SID_MATCH", index: 3 }],
    [0x10cc, { block: "vintf", vintf: 0, register: "LVCMDQ_ERR_MAP", index: 3 }],
    [0x10184, { block: "vcmdq-page0", queue: 3, register: "PROD_INDX" }],
    [0x20184, { block: "vcmdq-page1", queue: 3, register: "BASE_H" }],
    [0x30000, { block: "vintf-page0", vintf: 0, queue: 0, register: "CONS_INDX" }],
    [0x30094, { block: "vintf-page0", vintf: 0, queue: 1, register: "GERRORN" }],
    [0x40088, { block: "vintf-page1", vintf: 0, queue: 1, register: "CONS_INDX_BASE" }],
    [0x60080, { block: "vintf-page1", vintf: 1, queue: 1, register: "BASE" }],
  ])("offset 0x%s names its register", (offset, ref) => {
    expect(decodeCmdqvOffset(offset)).toEqual(ref);
  });

  it.each([
    ["unaligned", 0x0002],
    ["a gap in the config page", 0x000c],
    ["past the last CMDQ_ALLOC", 0x0400],
    ["a hole in a VCMDQ slot", 0x10018],
    ["a hole in a page-1 slot", 0x20010],
    ["past QEMU's one-VINTF aperture", 0x50000],
  ])("offset holding no register: %s", (_what, offset) => {
    expect(decodeCmdqvOffset(offset, 1)).toBeUndefined();
  });

  it("decodes any offset without throwing", () => {
    fc.assert(
      fc.property(fc.integer({ min: -16, max: 0x2_0000_0 }), (offset) => {
        decodeCmdqvOffset(offset);
      }),
    );
  });
});
