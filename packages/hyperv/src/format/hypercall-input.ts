import { decodeLayout, defineLayout, encodeLayout, hasReservedBits, type Fields } from "@viommu/core";
import { HvStatus, type HvStatusCode } from "./hv-status.js";

/**
 * The 64-bit hypercall input value (control word) a caller passes in RCX / X0 (spec arm-hyperv-virtio.md §5.1;
 * Linux include/hyperv/hvgdk_mini.h HV_HYPERCALL_*; TLFS HV_X64_HYPERCALL_INPUT). Linux's RSVD0 mask is
 * [31:27] while it also defines bit 31 as NESTED; bit 31 is declared here as `nested`, so [30:27], [47:44] and
 * [63:60] are the reserved bits.
 */
export const hypercallInputLayout = defineLayout("HV_HYPERCALL_INPUT", 64, [
  { name: "call_code", bit: 0, width: 16 },
  { name: "fast", bit: 16, width: 1 },
  /** Size of the variable header in 8-byte units. */
  { name: "variable_header_size", bit: 17, width: 10 },
  { name: "nested", bit: 31, width: 1 },
  { name: "rep_count", bit: 32, width: 12 },
  { name: "rep_start_index", bit: 48, width: 12 },
] as const);

export type HypercallInput = Fields<typeof hypercallInputLayout>;

const U64_MASK = (1n << 64n) - 1n;

function toRaw(value: bigint): Uint32Array {
  const v = value & U64_MASK;
  return Uint32Array.of(Number(v & 0xffffffffn), Number(v >> 32n));
}

/** Decodes any 64-bit value (higher bits of a wider bigint are ignored); never throws. */
export function decodeHypercallInput(value: bigint): HypercallInput {
  return decodeLayout(hypercallInputLayout, toRaw(value));
}

/** Encodes a control word; throws RangeError for a field value that does not fit (a caller bug). */
export function encodeHypercallInput(fields: Partial<HypercallInput>): bigint {
  const raw = encodeLayout(hypercallInputLayout, fields);
  return (BigInt(raw[1]!) << 32n) | BigInt(raw[0]!);
}

/**
 * Why the hypervisor rejects this control word for a simple or rep hypercall, as the TLFS "common hypercall
 * status codes" list it: a reserved bit set, a nonzero rep count or start index on a simple call, a zero rep
 * count on a rep call, or a rep start index not below the rep count → HV_STATUS_INVALID_HYPERCALL_INPUT.
 * Undefined when the control word is acceptable.
 */
export function hypercallInputProblem(value: bigint, rep: boolean): HvStatusCode | undefined {
  const raw = toRaw(value);
  if (hasReservedBits(hypercallInputLayout, raw)) return HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT;
  const input = decodeLayout(hypercallInputLayout, raw);
  if (rep) {
    if (input.rep_count === 0 || input.rep_start_index >= input.rep_count) return HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT;
  } else if (input.rep_count !== 0 || input.rep_start_index !== 0) {
    return HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT;
  }
  return undefined;
}
