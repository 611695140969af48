import type { ErrnoName } from "@viommu/core";

/**
 * HV_STATUS codes: the 16-bit status in a hypercall result value (spec arm-hyperv-virtio.md §5.1; Linux
 * include/hyperv/hvgdk_mini.h). HV_STATUS_DEVICE_ALREADY_IN_DOMAIN (0x66) is not in hvgdk_mini.h: it comes from
 * the Hyper-V pvIOMMU patch series, whose attach path treats it as success (iommufd.md §8.4).
 */
export const HvStatus = {
  HV_STATUS_SUCCESS: 0x0,
  HV_STATUS_INVALID_HYPERCALL_CODE: 0x2,
  HV_STATUS_INVALID_HYPERCALL_INPUT: 0x3,
  HV_STATUS_INVALID_ALIGNMENT: 0x4,
  HV_STATUS_INVALID_PARAMETER: 0x5,
  HV_STATUS_ACCESS_DENIED: 0x6,
  HV_STATUS_INVALID_PARTITION_STATE: 0x7,
  HV_STATUS_OPERATION_DENIED: 0x8,
  HV_STATUS_UNKNOWN_PROPERTY: 0x9,
  HV_STATUS_PROPERTY_VALUE_OUT_OF_RANGE: 0xa,
  HV_STATUS_INSUFFICIENT_MEMORY: 0xb,
  HV_STATUS_INVALID_PARTITION_ID: 0xd,
  HV_STATUS_INVALID_VP_INDEX: 0xe,
  HV_STATUS_NOT_FOUND: 0x10,
  HV_STATUS_INVALID_PORT_ID: 0x11,
  HV_STATUS_INVALID_CONNECTION_ID: 0x12,
  HV_STATUS_INSUFFICIENT_BUFFERS: 0x13,
  HV_STATUS_NOT_ACKNOWLEDGED: 0x14,
  HV_STATUS_INVALID_VP_STATE: 0x15,
  HV_STATUS_NO_RESOURCES: 0x1d,
  HV_STATUS_PROCESSOR_FEATURE_NOT_SUPPORTED: 0x20,
  HV_STATUS_INVALID_LP_INDEX: 0x41,
  HV_STATUS_INVALID_REGISTER_VALUE: 0x50,
  HV_STATUS_DEVICE_ALREADY_IN_DOMAIN: 0x66,
  HV_STATUS_OPERATION_FAILED: 0x71,
  HV_STATUS_TIME_OUT: 0x78,
  HV_STATUS_CALL_PENDING: 0x79,
  HV_STATUS_VTL_ALREADY_ENABLED: 0x86,
} as const;

export type HvStatusName = keyof typeof HvStatus;
export type HvStatusCode = (typeof HvStatus)[HvStatusName];

const statusNames = new Map<number, HvStatusName>(Object.entries(HvStatus).map(([name, code]) => [code, name as HvStatusName]));

/** The HV_STATUS_* name of a status code, or `UNKNOWN`. */
export function hvStatusName(status: number): HvStatusName | "UNKNOWN" {
  return statusNames.get(status) ?? "UNKNOWN";
}

/**
 * Linux's errno for each status (drivers/hv/hv_common.c `hv_status_infos[]` as read in torvalds/linux; the table
 * lists INVALID_LP_INDEX and INVALID_REGISTER_VALUE twice, as EINVAL and then EIO, and the lookup takes the first
 * match, so both are EINVAL). Statuses the table omits fall back to EIO.
 */
const errnoByStatus: ReadonlyMap<number, ErrnoName | undefined> = new Map<number, ErrnoName | undefined>([
  [HvStatus.HV_STATUS_SUCCESS, undefined],
  [HvStatus.HV_STATUS_INVALID_HYPERCALL_CODE, "EINVAL"],
  [HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT, "EINVAL"],
  [HvStatus.HV_STATUS_INVALID_ALIGNMENT, "EIO"],
  [HvStatus.HV_STATUS_INVALID_PARAMETER, "EINVAL"],
  [HvStatus.HV_STATUS_ACCESS_DENIED, "EIO"],
  [HvStatus.HV_STATUS_INVALID_PARTITION_STATE, "EIO"],
  [HvStatus.HV_STATUS_OPERATION_DENIED, "EIO"],
  [HvStatus.HV_STATUS_UNKNOWN_PROPERTY, "EIO"],
  [HvStatus.HV_STATUS_PROPERTY_VALUE_OUT_OF_RANGE, "EIO"],
  [HvStatus.HV_STATUS_INSUFFICIENT_MEMORY, "ENOMEM"],
  [HvStatus.HV_STATUS_INVALID_PARTITION_ID, "EINVAL"],
  [HvStatus.HV_STATUS_INVALID_VP_INDEX, "EINVAL"],
  [HvStatus.HV_STATUS_NOT_FOUND, "EIO"],
  [HvStatus.HV_STATUS_INVALID_PORT_ID, "EINVAL"],
  [HvStatus.HV_STATUS_INVALID_CONNECTION_ID, "EINVAL"],
  [HvStatus.HV_STATUS_INSUFFICIENT_BUFFERS, "EIO"],
  [HvStatus.HV_STATUS_NOT_ACKNOWLEDGED, "EIO"],
  [HvStatus.HV_STATUS_INVALID_VP_STATE, "EIO"],
  [HvStatus.HV_STATUS_NO_RESOURCES, "EIO"],
  [HvStatus.HV_STATUS_PROCESSOR_FEATURE_NOT_SUPPORTED, "EIO"],
  [HvStatus.HV_STATUS_INVALID_LP_INDEX, "EINVAL"],
  [HvStatus.HV_STATUS_INVALID_REGISTER_VALUE, "EINVAL"],
  [HvStatus.HV_STATUS_OPERATION_FAILED, "EIO"],
  [HvStatus.HV_STATUS_TIME_OUT, "EIO"],
  [HvStatus.HV_STATUS_CALL_PENDING, "EIO"],
  [HvStatus.HV_STATUS_VTL_ALREADY_ENABLED, "EIO"],
]);

/** The result value Linux's hv_do_hypercall() returns when no hypercall page exists (U64_MAX). */
export const HV_RESULT_NO_HYPERCALL_PAGE = (1n << 64n) - 1n;

/**
 * The one status → errno conversion, as Linux `hv_result_to_errno()` does it: takes a full 64-bit result value
 * (or a bare 16-bit status), returns undefined for success, EOPNOTSUPP for U64_MAX (hypercalls impossible),
 * the table's errno for a listed status and EIO for any other.
 */
export function hvResultToErrno(result: bigint | number): ErrnoName | undefined {
  const value = BigInt(result);
  if (value === HV_RESULT_NO_HYPERCALL_PAGE) return "EOPNOTSUPP";
  const status = Number(value & 0xffffn);
  return errnoByStatus.has(status) ? errnoByStatus.get(status) : "EIO";
}
