import type { RawBits } from "@viommu/core";

/**
 * The iommufd user-API types AMD-Vi uses (spec iommufd.md §8.1–8.2). Mainline (drivers/iommu/amd/iommufd.c,
 * nested.c): hw_info type 4 and HWPT data type 3. Out of tree (AMDESE/linux-iommu, AMD's QEMU branch): vIOMMU
 * type 3 with `struct iommu_viommu_amd`, HW queue types for the guest command buffer, event log and PPR log.
 * Values the sources read do not give are marked as this model's choice.
 */
export const IOMMU_HW_INFO_TYPE_AMD = 4;
export const IOMMU_HWPT_DATA_AMD_GUEST = 3;
export const IOMMU_VIOMMU_TYPE_AMD = 3;

/**
 * HW queue types. AMDESE names IOMMU_HW_QUEUE_TYPE_AMD_CMD/_EVT/_PPR but the enum values were not in the
 * sources read; this model numbers them after mainline's TEGRA241_CMDQV = 1.
 */
export const IOMMU_HW_QUEUE_TYPE_AMD_CMD = 2;
export const IOMMU_HW_QUEUE_TYPE_AMD_EVT = 3;
export const IOMMU_HW_QUEUE_TYPE_AMD_PPR = 4;

/**
 * vEVENTQ types (model's choice: mainline has none for AMD). AMD: 16-byte event log entries naming the
 * guest DeviceID and guest DomainID, for the VMM to log. AMD_CMD_INTERCEPT: a guest command the hardware
 * vIOMMU stopped at because the hypervisor must act on it (a device table change).
 */
export const IOMMU_VEVENTQ_TYPE_AMD = 3;
export const IOMMU_VEVENTQ_TYPE_AMD_CMD_INTERCEPT = 4;

/**
 * vIOMMU invalidation data (model's choice, value after VTD_S1 = 0 and ARM_SMMUV3 = 1): raw 128-bit AMD
 * commands with the guest's DomainID, the way SMMUv3 forwards raw CMDQ commands. Mainline AMD had no
 * cache_invalidate; reviewers (Oct 2025) asked for exactly this for an emulated command buffer.
 */
export const IOMMU_VIOMMU_INVALIDATE_DATA_AMD = 2;
export const AMD_INVALIDATE_ENTRY_BYTES = 16;

/** `struct iommu_hw_info_amd { __aligned_u64 efr; __aligned_u64 efr2; }`. */
export const HW_INFO_AMD_BYTES = 16;

export function encodeHwInfoAmd(efr: bigint, efr2: bigint): Uint8Array {
  const out = new Uint8Array(HW_INFO_AMD_BYTES);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, efr, true);
  v.setBigUint64(8, efr2, true);
  return out;
}

export function decodeHwInfoAmd(bytes: Uint8Array): { efr: bigint; efr2: bigint } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { efr: v.getBigUint64(0, true), efr2: v.getBigUint64(8, true) };
}

/** `struct iommu_hwpt_amd_guest { __aligned_u64 dte[4]; }`: the guest's 256-bit DTE. */
export const HWPT_AMD_GUEST_BYTES = 32;

export function encodeHwptAmdGuest(dte: RawBits): Uint8Array {
  const out = new Uint8Array(HWPT_AMD_GUEST_BYTES);
  const v = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) v.setUint32(i * 4, dte[i] ?? 0, true);
  return out;
}

export function decodeHwptAmdGuest(bytes: Uint8Array): RawBits {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const raw = new Uint32Array(8);
  for (let i = 0; i < 8; i++) raw[i] = v.getUint32(i * 4, true);
  return raw;
}

/**
 * `struct iommu_viommu_amd` (the early out-of-tree version): u32 iommu_devid, viommu_devid, trans_devid,
 * out_gid; u64 out_vfmmio_mmap_offset; u32 reserved. 32 bytes; the driver copies through `reserved` (28).
 */
export const VIOMMU_AMD_BYTES = 32;
export const VIOMMU_AMD_MIN_BYTES = 28;

export interface ViommuAmdData {
  readonly iommuDevid: number;
  readonly viommuDevid: number;
  readonly transDevid: number;
  readonly outGid: number;
  readonly outVfmmioMmapOffset: number;
  readonly reserved: number;
}

export function encodeViommuAmd(data: Partial<ViommuAmdData>): Uint8Array {
  const out = new Uint8Array(VIOMMU_AMD_BYTES);
  const v = new DataView(out.buffer);
  v.setUint32(0, data.iommuDevid ?? 0, true);
  v.setUint32(4, data.viommuDevid ?? 0, true);
  v.setUint32(8, data.transDevid ?? 0, true);
  v.setUint32(12, data.outGid ?? 0, true);
  v.setBigUint64(16, BigInt(data.outVfmmioMmapOffset ?? 0), true);
  v.setUint32(24, data.reserved ?? 0, true);
  return out;
}

export function decodeViommuAmd(bytes: Uint8Array): ViommuAmdData {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    iommuDevid: v.getUint32(0, true),
    viommuDevid: v.getUint32(4, true),
    transDevid: v.getUint32(8, true),
    outGid: v.getUint32(12, true),
    outVfmmioMmapOffset: Number(v.getBigUint64(16, true)),
    reserved: v.getUint32(24, true),
  };
}
