import { defineLayout, type Fields } from "@viommu/core";

/**
 * Global registers of the CMDQV config page (spec arm-hyperv-virtio.md §4.2, iommufd.md §7.3). Field names are
 * Linux's tegra241-cmdqv.c macro names; CONFIG's batching fields and CONS_DRAM_EN come from QEMU
 * hw/arm/tegra241-cmdqv.h (Linux only uses CMDQV_EN).
 */

/** TEGRA241_CMDQV_CONFIG (0x0000). Enabling handshake: write CMDQV_EN, poll STATUS.CMDQV_ENABLED. */
export const cmdqvConfigLayout = defineLayout("CMDQV_CONFIG", 32, [
  { name: "CMDQV_EN", bit: 0, width: 1 },
  { name: "CMDQV_PER_CMD_OFFSET", bit: 1, width: 3 },
  { name: "CMDQ_MAX_CLK_BATCH", bit: 4, width: 8 },
  { name: "CMDQ_MAX_CMD_BATCH", bit: 12, width: 8 },
  { name: "CONS_DRAM_EN", bit: 20, width: 1 },
] as const);

/**
 * CONFIG reset value of NVIDIA's QEMU model (spec §4.2): CMDQV_EN 1, PER_CMD_OFFSET 1, CLK_BATCH 0x40,
 * CMD_BATCH 0x20. A later revision of the QEMU series uses 0x00020083 instead, commented "PER_CMD_OFFSET=16B,
 * CLK_BATCH=256, CMD_BATCH=32", which suggests CLK_BATCH holds a log2 (8 → 256); the public sources define no
 * encoding, so the fields are shown raw.
 */
export const CMDQV_CONFIG_RESET = 0x00020403;

/**
 * TEGRA241_CMDQV_PARAM (0x0004, read-only). Logical VCMDQs per VINTF = 2^NUM_VCMDQ_LOG2 / 2^NUM_VINTF_LOG2;
 * SID slots per VINTF = 2^NUM_SID_PER_VM_LOG2.
 */
export const cmdqvParamLayout = defineLayout("CMDQV_PARAM", 32, [
  { name: "CMDQV_VER", bit: 0, width: 4 },
  { name: "CMDQV_NUM_VCMDQ_LOG2", bit: 4, width: 4 },
  { name: "CMDQV_NUM_VINTF_LOG2", bit: 8, width: 4 },
  { name: "CMDQV_NUM_SID_PER_VM_LOG2", bit: 12, width: 4 },
] as const);

export type CmdqvParam = Fields<typeof cmdqvParamLayout>;

/** The PARAM QEMU shows a VM: version 1, 2 VCMDQs, 1 VINTF, 16 SID slots (hw/arm/tegra241-cmdqv.h). */
export const CMDQV_PARAM_QEMU_GUEST = 0x00004011;

/** The counts Linux derives from PARAM (__tegra241_cmdqv_probe). */
export function cmdqvCounts(param: CmdqvParam): { vintfs: number; vcmdqs: number; lvcmdqsPerVintf: number; sidsPerVintf: number } {
  const vintfs = 2 ** param.CMDQV_NUM_VINTF_LOG2;
  const vcmdqs = 2 ** param.CMDQV_NUM_VCMDQ_LOG2;
  return { vintfs, vcmdqs, lvcmdqsPerVintf: Math.floor(vcmdqs / vintfs), sidsPerVintf: 2 ** param.CMDQV_NUM_SID_PER_VM_LOG2 };
}

/** TEGRA241_CMDQV_STATUS (0x0008, read-only). */
export const cmdqvStatusLayout = defineLayout("CMDQV_STATUS", 32, [{ name: "CMDQV_ENABLED", bit: 0, width: 1 }] as const);

/**
 * TEGRA241_CMDQV_CMDQ_ALLOC(q) (0x0200 + 4q): maps global VCMDQ q to logical VCMDQ CMDQV_CMDQ_ALLOC_LVCMDQ of
 * VINTF CMDQV_CMDQ_ALLOC_VINTF. Linux maps a VINTF's LVCMDQs in ascending and unmaps them in descending order.
 */
export const cmdqAllocLayout = defineLayout("CMDQV_CMDQ_ALLOC", 32, [
  { name: "CMDQV_CMDQ_ALLOCATED", bit: 0, width: 1 },
  { name: "CMDQV_CMDQ_ALLOC_LVCMDQ", bit: 1, width: 7 },
  { name: "CMDQV_CMDQ_ALLOC_VINTF", bit: 15, width: 6 },
] as const);

/**
 * The bitmap registers hold no fields but one bit per object: VINTF_ERR_MAP and VINTF_INT_MASK (0x14/0x18 and
 * 0x1C/0x20) one bit per VINTF (64), CMDQ_ERR_MAP(0..3) (0x24..0x30) one bit per global VCMDQ (128). Each 32-bit
 * word is declared as one MAP field so `viommu decode` can show it.
 */
export const bitmapWordLayout = defineLayout("CMDQV_BITMAP_WORD", 32, [{ name: "MAP", bit: 0, width: 32 }] as const);
