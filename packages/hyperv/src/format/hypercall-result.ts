import { decodeLayout, defineLayout, encodeLayout, type Fields } from "@viommu/core";

/**
 * The 64-bit hypercall result value returned in RAX / X0 (spec arm-hyperv-virtio.md §5.1; Linux hvgdk_mini.h
 * HV_HYPERCALL_RESULT_MASK and HV_HYPERCALL_REP_COMP_*; TLFS HV_X64_HYPERCALL_OUTPUT). Bits [31:16] and [63:44]
 * are reserved; callers ignore them. For a rep call `reps_completed` counts from zero, not from the start index.
 */
export const hypercallResultLayout = defineLayout("HV_HYPERCALL_OUTPUT", 64, [
  { name: "status", bit: 0, width: 16 },
  { name: "reps_completed", bit: 32, width: 12 },
] as const);

export type HypercallResult = Fields<typeof hypercallResultLayout>;

/** Decodes any 64-bit value; never throws. */
export function decodeHypercallResult(value: bigint): HypercallResult {
  const v = value & ((1n << 64n) - 1n);
  return decodeLayout(hypercallResultLayout, Uint32Array.of(Number(v & 0xffffffffn), Number(v >> 32n)));
}

/** The result value a hypervisor returns; throws RangeError when a value does not fit (a caller bug). */
export function encodeHypercallResult(status: number, repsCompleted = 0): bigint {
  const raw = encodeLayout(hypercallResultLayout, { status, reps_completed: repsCompleted });
  return (BigInt(raw[1]!) << 32n) | BigInt(raw[0]!);
}
