import { defineLayout } from "@viommu/core";

/**
 * Registers of one VINTF at 0x1000 + 0x100·v in the config page (spec arm-hyperv-virtio.md §4.3, iommufd.md §7.3;
 * Linux tegra241-cmdqv.c; QEMU hw/arm/tegra241-cmdqv.h).
 */

/**
 * TEGRA241_VINTF_CONFIG (+0x00). VINTF_VMID is the VMID the hardware uses for this VINTF's queues (Linux writes
 * the vSMMU's stage-2 VMID); VINTF_HYP_OWN is wired to 0 for a guest-owned VINTF, which restricts its queues to
 * the guest command set, so a VMM forces it to 0 on guest writes.
 */
export const vintfConfigLayout = defineLayout("VINTF_CONFIG", 32, [
  { name: "VINTF_EN", bit: 0, width: 1 },
  { name: "VINTF_VMID", bit: 1, width: 16 },
  { name: "VINTF_HYP_OWN", bit: 17, width: 1 },
] as const);

/**
 * TEGRA241_VINTF_STATUS (+0x04). VINTF_STATUS: 0 no error, 1 VCMDQ error (QEMU values). VINTF_VI_NUM_LVCMDQ
 * appears only in QEMU and an RFC (spec §9 item 9).
 */
export const vintfStatusLayout = defineLayout("VINTF_STATUS", 32, [
  { name: "VINTF_ENABLED", bit: 0, width: 1 },
  { name: "VINTF_STATUS", bit: 1, width: 3 },
  { name: "VINTF_VI_NUM_LVCMDQ", bit: 16, width: 8 },
] as const);

export const VintfStatusCode = { NO_ERROR: 0, VCMDQ_ERROR: 1 } as const;

/**
 * TEGRA241_VINTF_SID_MATCH(s) (+0x40 + 4s): Linux writes (vSID << 1) | 1 for the slot of each vDEVICE; QEMU
 * declares VIRT_SID 20 bits wide, [31:21] undeclared.
 */
export const vintfSidMatchLayout = defineLayout("VINTF_SID_MATCH", 32, [
  { name: "ENABLE", bit: 0, width: 1 },
  { name: "VIRT_SID", bit: 1, width: 20 },
] as const);

/** TEGRA241_VINTF_SID_REPLACE(s) (+0x80 + 4s): the physical SID substituted for the slot's VIRT_SID (QEMU width 20). */
export const vintfSidReplaceLayout = defineLayout("VINTF_SID_REPLACE", 32, [{ name: "PHYS_SID", bit: 0, width: 20 }] as const);

/**
 * TEGRA241_VINTF_LVCMDQ_ERR_MAP (+0xC0): a 128-bit map, bit l = this VINTF's logical VCMDQ l is in error. Linux
 * reads it as two 64-bit words (LVCMDQ_ERR_MAP_64(0..1)), QEMU as four 32-bit words; both are little-endian views
 * of the same bits. This layout is the 128-bit value as two 64-bit words, lowest first.
 */
export const lvcmdqErrMapLayout = defineLayout("VINTF_LVCMDQ_ERR_MAP", 128, [
  { name: "LVCMDQ_ERR_MAP_64_0", bit: 0, width: 64, big: true },
  { name: "LVCMDQ_ERR_MAP_64_1", bit: 64, width: 64, big: true },
] as const);
