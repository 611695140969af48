import { defineLayout } from "@viommu/core";
import { bits, defineByteLayout, struct, u32, u64 } from "./byte-layout.js";
import { HvStatus, type HvStatusCode } from "./hv-status.js";

/**
 * hv_device_interrupt_target and the VP set it may carry (spec arm-hyperv-virtio.md §5.2; Linux
 * include/hyperv/hvgdk_mini.h, hvhdk_mini.h). The fixed part is 16 bytes: vector, flags, then a union of vp_mask
 * (VPs 0–63) and hv_vpset.format. With PROCESSOR_SET the rest of the VP set (valid_bank_mask, then one 64-bit
 * bank per set bit) follows in the hypercall's variable header, which is therefore 1 + popcount(valid_bank_mask)
 * words: Linux's "var-size starts after vp_mask (thus vp_set.format does not count, but
 * vp_set.valid_bank_mask does)".
 */

/** HV_DEVICE_INTERRUPT_TARGET_*: MULTICAST 1, PROCESSOR_SET 2 (Linux never sets MULTICAST). */
export const deviceInterruptTargetFlagsLayout = defineLayout("HV_DEVICE_INTERRUPT_TARGET", 32, [
  { name: "multicast", bit: 0, width: 1 },
  { name: "processor_set", bit: 1, width: 1 },
] as const);

/** enum hv_generic_set_format. */
export const HvGenericSetFormat = {
  HV_GENERIC_SET_SPARSE_4K: 0,
  HV_GENERIC_SET_ALL: 1,
} as const;

/** The part of struct hv_vpset inside the fixed header: its format. */
export const vpSetHeaderLayout = defineByteLayout("hv_vpset", 8, [{ name: "format", offset: 0, codec: u64 }] as const);

export const deviceInterruptTargetLayout = defineByteLayout("hv_device_interrupt_target", 16, [
  { name: "vector", offset: 0, codec: u32 },
  { name: "flags", offset: 4, codec: bits(deviceInterruptTargetFlagsLayout, 4) },
  { name: "vp_mask", offset: 8, codec: u64 },
  { name: "vp_set", offset: 8, codec: struct(vpSetHeaderLayout), union: true },
] as const);

/** VPs per sparse bank (HV_VCPUS_PER_SPARSE_BANK) and the most banks a VP set encodes (HV_MAX_SPARSE_VCPU_BANKS). */
export const HV_VCPUS_PER_SPARSE_BANK = 64;
export const HV_MAX_SPARSE_VCPU_BANKS = 64;

function popcount64(v: bigint): number {
  let n = 0;
  for (let x = v; x !== 0n; x &= x - 1n) n++;
  return n;
}

/**
 * The variable header words of a VP set targeting `vps`, as Linux's cpumask_to_vpset builds them: nr_bank =
 * highest bank + 1, valid_bank_mask = GENMASK(nr_bank − 1, 0) and every bank up to it (empty ones included).
 */
export function vpSetVariableHeader(vps: readonly number[]): bigint[] {
  let nrBank = 0;
  const banks: bigint[] = [];
  for (const vp of vps) {
    if (!Number.isInteger(vp) || vp < 0 || vp >= HV_VCPUS_PER_SPARSE_BANK * HV_MAX_SPARSE_VCPU_BANKS) throw new RangeError(`VP index ${vp}`);
    const bank = Math.floor(vp / HV_VCPUS_PER_SPARSE_BANK);
    while (banks.length <= bank) banks.push(0n);
    banks[bank] = banks[bank]! | (1n << BigInt(vp % HV_VCPUS_PER_SPARSE_BANK));
    nrBank = Math.max(nrBank, bank + 1);
  }
  return [(1n << BigInt(nrBank)) - 1n, ...banks];
}

/**
 * Whether a target's variable header has exactly the words its flags imply: none without PROCESSOR_SET;
 * valid_bank_mask plus one bank per set bit with it. HV_STATUS_INVALID_HYPERCALL_INPUT when the sizes disagree,
 * HV_STATUS_INVALID_PARAMETER for an unknown VP set format; undefined when consistent.
 */
export function targetVariableHeaderProblem(processorSet: number, vpSetFormat: bigint, varHeader: readonly bigint[]): HvStatusCode | undefined {
  if (processorSet === 0) return varHeader.length === 0 ? undefined : HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT;
  if (vpSetFormat !== BigInt(HvGenericSetFormat.HV_GENERIC_SET_SPARSE_4K) && vpSetFormat !== BigInt(HvGenericSetFormat.HV_GENERIC_SET_ALL)) {
    return HvStatus.HV_STATUS_INVALID_PARAMETER;
  }
  if (varHeader.length === 0) return HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT;
  return varHeader.length === 1 + popcount64(varHeader[0]!) ? undefined : HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT;
}

/**
 * The VP indexes a target selects: vp_mask bits without PROCESSOR_SET; with it, every VP for HV_GENERIC_SET_ALL,
 * else the sparse banks (bank k of valid_bank_mask is the next bank word). `maxVp` bounds "all". Call only after
 * targetVariableHeaderProblem returned undefined.
 */
export function targetProcessors(processorSet: number, vpMaskOrFormat: bigint, varHeader: readonly bigint[], maxVp: number): number[] {
  const out: number[] = [];
  if (processorSet === 0) {
    for (let i = 0; i < 64; i++) if ((vpMaskOrFormat >> BigInt(i)) & 1n) out.push(i);
    return out;
  }
  if (vpMaskOrFormat === BigInt(HvGenericSetFormat.HV_GENERIC_SET_ALL)) {
    for (let i = 0; i <= maxVp; i++) out.push(i);
    return out;
  }
  const validBankMask = varHeader[0] ?? 0n;
  let next = 1;
  for (let bank = 0; bank < HV_MAX_SPARSE_VCPU_BANKS; bank++) {
    if (((validBankMask >> BigInt(bank)) & 1n) === 0n) continue;
    const word = varHeader[next++] ?? 0n;
    for (let i = 0; i < HV_VCPUS_PER_SPARSE_BANK; i++) if ((word >> BigInt(i)) & 1n) out.push(bank * HV_VCPUS_PER_SPARSE_BANK + i);
  }
  return out;
}
