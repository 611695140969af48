import { ByteReader, ByteWriter } from "@viommu/core";
import { encodeReg32 } from "./register-value.js";
import { cmdqvCounts, cmdqvParamLayout, type CmdqvParam } from "./global-registers.js";
import { CMDQV_PAGE_SIZE } from "./aperture.js";

/**
 * The iommufd uAPI of the Tegra241 CMDQV (spec iommufd.md §7, arm-hyperv-virtio.md §4.6; Linux
 * include/uapi/linux/iommufd.h, v6.17+). All structures are little-endian.
 */

export const IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV = 2;
export const IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV = 1;
export const IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV = 2;
export const IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV = 3;

/** struct iommu_hw_info_tegra241_cmdqv: 8 bytes. */
export interface HwInfoTegra241Cmdqv {
  /** Must be 0. */
  readonly flags: number;
  /** PARAM[3:0]. */
  readonly version: number;
  /** log2 of the logical VCMDQs per VINTF (what a VM's PARAM[7:4] shows). */
  readonly log2vcmdqs: number;
  /** PARAM[15:12]: log2 of the SID replacement slots per VINTF. */
  readonly log2vsids: number;
  /** Must be 0. */
  readonly __reserved: number;
}

export const HW_INFO_TEGRA241_CMDQV_SIZE = 8;

export function encodeHwInfoTegra241Cmdqv(info: Omit<HwInfoTegra241Cmdqv, "flags" | "__reserved"> & Partial<HwInfoTegra241Cmdqv>): Uint8Array {
  return new ByteWriter()
    .u32(info.flags ?? 0)
    .u8(info.version)
    .u8(info.log2vcmdqs)
    .u8(info.log2vsids)
    .u8(info.__reserved ?? 0)
    .finish();
}

/** Decodes the structure, or undefined when fewer than 8 bytes are given. */
export function decodeHwInfoTegra241Cmdqv(bytes: Uint8Array): HwInfoTegra241Cmdqv | undefined {
  if (bytes.length < HW_INFO_TEGRA241_CMDQV_SIZE) return undefined;
  const r = new ByteReader(bytes);
  return { flags: r.u32(0), version: r.u8(4), log2vcmdqs: r.u8(5), log2vsids: r.u8(6), __reserved: r.u8(7) };
}

/** Why the structure breaks its "must be 0" rules, or undefined. */
export function hwInfoTegra241CmdqvProblem(info: HwInfoTegra241Cmdqv): string | undefined {
  if (info.flags !== 0) return "flags must be 0";
  if (info.__reserved !== 0) return "__reserved must be 0";
  return undefined;
}

/**
 * What the kernel reports from the host's PARAM (tegra241_cmdqv_hw_info): version = PARAM[3:0], log2vcmdqs =
 * ilog2(LVCMDQs per VINTF), log2vsids = PARAM[15:12].
 */
export function hwInfoFromParam(param: CmdqvParam): HwInfoTegra241Cmdqv {
  const { lvcmdqsPerVintf } = cmdqvCounts(param);
  return {
    flags: 0,
    version: param.CMDQV_VER,
    log2vcmdqs: Math.floor(Math.log2(Math.max(lvcmdqsPerVintf, 1))),
    log2vsids: param.CMDQV_NUM_SID_PER_VM_LOG2,
    __reserved: 0,
  };
}

/**
 * The PARAM a VMM shows its VM: the uAPI says to use the hw_info fields directly and expose one VINTF
 * (PARAM[11:8] = 0).
 */
export function guestParamFromHwInfo(info: HwInfoTegra241Cmdqv): number {
  return encodeReg32(cmdqvParamLayout, {
    CMDQV_VER: info.version,
    CMDQV_NUM_VCMDQ_LOG2: info.log2vcmdqs,
    CMDQV_NUM_VINTF_LOG2: 0,
    CMDQV_NUM_SID_PER_VM_LOG2: info.log2vsids,
  });
}

/** struct iommu_viommu_tegra241_cmdqv: the kernel's answer to IOMMU_VIOMMU_ALLOC, 16 bytes. */
export interface ViommuTegra241Cmdqv {
  readonly out_vintf_mmap_offset: bigint;
  readonly out_vintf_mmap_length: bigint;
}

export const VIOMMU_TEGRA241_CMDQV_SIZE = 16;
/** The kernel always maps VINTF page 0, 64 KiB (tegra241_cmdqv_init_vintf_user). */
export const VINTF_MMAP_LENGTH = BigInt(CMDQV_PAGE_SIZE);

export function encodeViommuTegra241Cmdqv(data: ViommuTegra241Cmdqv): Uint8Array {
  return new ByteWriter().u64(data.out_vintf_mmap_offset).u64(data.out_vintf_mmap_length).finish();
}

export function decodeViommuTegra241Cmdqv(bytes: Uint8Array): ViommuTegra241Cmdqv | undefined {
  if (bytes.length < VIOMMU_TEGRA241_CMDQV_SIZE) return undefined;
  const r = new ByteReader(bytes);
  return { out_vintf_mmap_offset: r.u64(0), out_vintf_mmap_length: r.u64(8) };
}

/**
 * struct iommu_vevent_tegra241_cmdqv: lvcmdq_err_map[2], the VINTF's 128-bit LVCMDQ_ERR_MAP as two
 * little-endian u64 (Linux reads LVCMDQ_ERR_MAP_64(0), (1) and reports them unchanged).
 */
export interface VeventTegra241Cmdqv {
  readonly lvcmdq_err_map: readonly [bigint, bigint];
}

export const VEVENT_TEGRA241_CMDQV_SIZE = 16;

export function encodeVeventTegra241Cmdqv(event: VeventTegra241Cmdqv): Uint8Array {
  return new ByteWriter().u64(event.lvcmdq_err_map[0]).u64(event.lvcmdq_err_map[1]).finish();
}

export function decodeVeventTegra241Cmdqv(bytes: Uint8Array): VeventTegra241Cmdqv | undefined {
  if (bytes.length < VEVENT_TEGRA241_CMDQV_SIZE) return undefined;
  const r = new ByteReader(bytes);
  return { lvcmdq_err_map: [r.u64(0), r.u64(8)] };
}

/** The logical VCMDQs in error according to a vEVENT, ascending. */
export function lvcmdqsInError(event: VeventTegra241Cmdqv): number[] {
  const out: number[] = [];
  event.lvcmdq_err_map.forEach((word, half) => {
    for (let bit = 0; bit < 64; bit++) if ((word >> BigInt(bit)) & 1n) out.push(half * 64 + bit);
  });
  return out;
}
