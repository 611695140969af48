import { fromBytes, toBytes, type RawBits } from "@viommu/core";

/**
 * The SMMUv3 part of Linux's iommufd user API (`include/uapi/linux/iommufd.h`; spec iommufd.md §2, §3.6, §4.1,
 * §5.3): the type values and the byte layouts of the vendor structs the core carries opaquely. All structs are
 * little-endian.
 */

/** `IOMMU_VIOMMU_TYPE_ARM_SMMUV3`. */
export const IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1;
/** `IOMMU_HWPT_DATA_ARM_SMMUV3`: `struct iommu_hwpt_arm_smmuv3 { __aligned_le64 ste[2]; }`. */
export const IOMMU_HWPT_DATA_ARM_SMMUV3 = 2;
/** `IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3`: `struct iommu_viommu_arm_smmuv3_invalidate { __aligned_le64 cmd[2]; }`. */
export const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1;
/** `IOMMU_VEVENTQ_TYPE_ARM_SMMUV3`: `struct iommu_vevent_arm_smmuv3 { __aligned_le64 evt[4]; }`. */
export const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1;
/** `IOMMU_HW_INFO_TYPE_ARM_SMMUV3`: `struct iommu_hw_info_arm_smmuv3`. */
export const IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2;

/** Bytes of `iommu_hwpt_arm_smmuv3` (the vSTE's first two 64-bit words); also its minimum (`ste` is the last field). */
export const HWPT_ARM_SMMUV3_BYTES = 16;
/** Bytes of one invalidation entry: a raw 128-bit command. */
export const VIOMMU_INVALIDATE_ARM_SMMUV3_BYTES = 16;
/** Bytes of one vEVENT payload: a raw 256-bit event record. */
export const VEVENT_ARM_SMMUV3_BYTES = 32;
/** Bytes of `iommu_hw_info_arm_smmuv3`: flags, __reserved, idr[6], iidr, aidr (ten u32). */
export const HW_INFO_ARM_SMMUV3_BYTES = 40;

/** The vSTE words (dw0, dw1) as the HWPT data bytes. */
export function encodeHwptArmSmmuv3(vste: RawBits): Uint8Array {
  if (vste.length !== 4) throw new RangeError("a vSTE is two 64-bit words");
  return toBytes(vste);
}

/** The vSTE words from (already size-checked) HWPT data bytes. */
export function decodeHwptArmSmmuv3(bytes: Uint8Array): RawBits {
  return fromBytes(bytes, 0, 128);
}

/** Encodes `iommu_hw_info_arm_smmuv3`. */
export interface HwInfoArmSmmuv3 {
  readonly flags: number;
  /** `__reserved` (renamed `impl` in later headers): 0 from a plain SMMUv3. */
  readonly reserved: number;
  /** IDR0..IDR5 as read from the SMMU. */
  readonly idr: readonly number[];
  readonly iidr: number;
  readonly aidr: number;
}

export function encodeHwInfoArmSmmuv3(info: HwInfoArmSmmuv3): Uint8Array {
  const out = new Uint8Array(HW_INFO_ARM_SMMUV3_BYTES);
  const v = new DataView(out.buffer);
  v.setUint32(0, info.flags >>> 0, true);
  v.setUint32(4, info.reserved >>> 0, true);
  for (let i = 0; i < 6; i++) v.setUint32(8 + i * 4, (info.idr[i] ?? 0) >>> 0, true);
  v.setUint32(32, info.iidr >>> 0, true);
  v.setUint32(36, info.aidr >>> 0, true);
  return out;
}

/** Decodes `iommu_hw_info_arm_smmuv3` from a buffer of at least HW_INFO_ARM_SMMUV3_BYTES (shorter reads as zero). */
export function decodeHwInfoArmSmmuv3(bytes: Uint8Array): HwInfoArmSmmuv3 {
  const padded = new Uint8Array(HW_INFO_ARM_SMMUV3_BYTES);
  padded.set(bytes.subarray(0, HW_INFO_ARM_SMMUV3_BYTES));
  const v = new DataView(padded.buffer);
  return {
    flags: v.getUint32(0, true),
    reserved: v.getUint32(4, true),
    idr: Array.from({ length: 6 }, (_, i) => v.getUint32(8 + i * 4, true)),
    iidr: v.getUint32(32, true),
    aidr: v.getUint32(36, true),
  };
}
