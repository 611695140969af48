/**
 * The VT-d structures of the iommufd user API (Linux include/uapi/linux/iommufd.h; ../shared/spec/iommufd.md
 * §2.6, §2.10, §5.4, §5.5): hw_info data, the nested stage-1 allocation data and the stage-1 invalidation
 * entry. All little-endian; u64 fields that may exceed 2^53 (npages) are bigint.
 */

/** `IOMMU_HW_INFO_TYPE_INTEL_VTD`. */
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
/** `IOMMU_HWPT_DATA_VTD_S1`. */
export const IOMMU_HWPT_DATA_VTD_S1 = 1;
/** `IOMMU_HWPT_INVALIDATE_DATA_VTD_S1`. */
export const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0;

/** `struct iommu_hw_info_vtd` flags: `IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17`. */
export const HwInfoVtdFlag = { ERRATA_772415_SPR17: 1 << 0 } as const;

/** `struct iommu_hw_info_vtd { u32 flags; u32 __reserved; u64 cap_reg; u64 ecap_reg; }`. */
export const HW_INFO_VTD_BYTES = 24;

export interface HwInfoVtd {
  readonly flags: number;
  readonly capReg: bigint;
  readonly ecapReg: bigint;
}

export function encodeHwInfoVtd(info: HwInfoVtd): Uint8Array {
  const out = new Uint8Array(HW_INFO_VTD_BYTES);
  const v = new DataView(out.buffer);
  v.setUint32(0, info.flags, true);
  v.setBigUint64(8, info.capReg, true);
  v.setBigUint64(16, info.ecapReg, true);
  return out;
}

export function decodeHwInfoVtd(bytes: Uint8Array): HwInfoVtd {
  const padded = new Uint8Array(HW_INFO_VTD_BYTES);
  padded.set(bytes.subarray(0, HW_INFO_VTD_BYTES));
  const v = new DataView(padded.buffer);
  return { flags: v.getUint32(0, true), capReg: v.getBigUint64(8, true), ecapReg: v.getBigUint64(16, true) };
}

/** `struct iommu_hwpt_vtd_s1` flags. */
export const VtdS1Flag = {
  /** Supervisor requests allowed (PASID entry SRE). */
  SRE: 1 << 0,
  /** Extended accessed flag (PASID entry EAFE). */
  EAFE: 1 << 1,
  /** Write protect for supervisor requests (PASID entry WPE). */
  WPE: 1 << 2,
} as const;

/** `ADDR_WIDTH_4LEVEL` / `ADDR_WIDTH_5LEVEL`: the stage-1 widths VT-d accepts. */
export const VTD_S1_ADDR_WIDTH_4LEVEL = 48;
export const VTD_S1_ADDR_WIDTH_5LEVEL = 57;

/**
 * `struct iommu_hwpt_vtd_s1 { __aligned_u64 flags; __aligned_u64 pgtbl_addr; __u32 addr_width; __u32 __reserved; }`:
 * 24 bytes, and Linux copies it with `__reserved` as the last required field, so the minimum is the whole struct.
 */
export const VTD_S1_BYTES = 24;
export const VTD_S1_MIN_BYTES = 24;

export interface VtdS1Data {
  /** VtdS1Flag bits (a u64 in the uapi; only the low bits are defined). */
  readonly flags: number;
  /** Guest physical address of the first-level table root. */
  readonly pgtblAddr: number;
  readonly addrWidth: number;
}

export function encodeVtdS1(data: VtdS1Data): Uint8Array {
  const out = new Uint8Array(VTD_S1_BYTES);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, BigInt(data.flags), true);
  v.setBigUint64(8, BigInt(data.pgtblAddr), true);
  v.setUint32(16, data.addrWidth, true);
  return out;
}

/** Decodes the (already size-checked) struct; the caller range-checks pgtbl_addr (a u64) and the reserved word. */
export function decodeVtdS1(bytes: Uint8Array): { readonly flags: bigint; readonly pgtblAddr: bigint; readonly addrWidth: number; readonly reserved: number } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, VTD_S1_BYTES);
  return { flags: v.getBigUint64(0, true), pgtblAddr: v.getBigUint64(8, true), addrWidth: v.getUint32(16, true), reserved: v.getUint32(20, true) };
}

/** `IOMMU_VTD_INV_FLAGS_LEAF`: only leaf entries changed (the IH hint). */
export const VtdInvalidateFlag = { LEAF: 1 << 0 } as const;

/**
 * `struct iommu_hwpt_vtd_s1_invalidate { __aligned_u64 addr; __aligned_u64 npages; __u32 flags; __u32 __reserved; }`:
 * 24 bytes; the per-entry copy helper requires all of it (`__reserved` is the last initial field).
 */
export const VTD_S1_INVALIDATE_BYTES = 24;
export const VTD_S1_INVALIDATE_MIN_BYTES = 24;

export interface VtdS1Invalidate {
  readonly addr: bigint;
  readonly npages: bigint;
  readonly flags: number;
  readonly reserved: number;
}

export const U64_ALL_ONES = 0xffff_ffff_ffff_ffffn;

export function encodeVtdS1Invalidate(entry: Partial<VtdS1Invalidate>): Uint8Array {
  const out = new Uint8Array(VTD_S1_INVALIDATE_BYTES);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, entry.addr ?? 0n, true);
  v.setBigUint64(8, entry.npages ?? 0n, true);
  v.setUint32(16, entry.flags ?? 0, true);
  v.setUint32(20, entry.reserved ?? 0, true);
  return out;
}

export function decodeVtdS1Invalidate(bytes: Uint8Array): VtdS1Invalidate {
  const v = new DataView(bytes.buffer, bytes.byteOffset, VTD_S1_INVALIDATE_BYTES);
  return { addr: v.getBigUint64(0, true), npages: v.getBigUint64(8, true), flags: v.getUint32(16, true), reserved: v.getUint32(20, true) };
}

/**
 * `encodeVtdS1Invalidate` for the VMM's forwarding path: written into `out` (24 bytes from `offset`) with 32-bit
 * operations, addr and npages as numbers (below 2^53), `__reserved` zero. No BigInt, no allocation.
 */
export function encodeVtdS1InvalidateInto(out: Uint8Array, addr: number, npages: number, flags: number, offset = 0): Uint8Array {
  writeU32(out, offset, addr >>> 0);
  writeU32(out, offset + 4, Math.floor(addr / 2 ** 32) >>> 0);
  writeU32(out, offset + 8, npages >>> 0);
  writeU32(out, offset + 12, Math.floor(npages / 2 ** 32) >>> 0);
  writeU32(out, offset + 16, flags >>> 0);
  writeU32(out, offset + 20, 0);
  return out;
}

function writeU32(out: Uint8Array, at: number, v: number): void {
  out[at] = v & 0xff;
  out[at + 1] = (v >>> 8) & 0xff;
  out[at + 2] = (v >>> 16) & 0xff;
  out[at + 3] = v >>> 24;
}

/** An invalidation entry meaning "the whole nested domain": addr 0 with npages all ones. */
export function encodeVtdS1InvalidateAll(): Uint8Array {
  return encodeVtdS1Invalidate({ addr: 0n, npages: U64_ALL_ONES });
}
