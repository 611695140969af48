import type { ErrnoName } from "@viommu/core";
import { HvStatus, type HvStatusCode } from "../format/hv-status.js";

/**
 * The one place the hypervisor model turns a host-side errno (what iommufd answered while it carried out a
 * hypercall) into the status the guest sees. The hypervisor's real choices for these internal failures are not
 * public; the mapping keeps each errno's meaning: malformed or incompatible → INVALID_PARAMETER, no such object
 * → NOT_FOUND, busy → OPERATION_DENIED, out of memory or ids → NO_RESOURCES (the model has no page-deposit
 * protocol, so INSUFFICIENT_MEMORY, which asks the caller to deposit and retry, would never succeed), anything
 * else → OPERATION_FAILED.
 */
export function statusOfErrno(errno: ErrnoName): HvStatusCode {
  switch (errno) {
    case "EINVAL":
    case "EOPNOTSUPP":
    case "EFAULT":
    case "EOVERFLOW":
    case "ERANGE":
    case "EEXIST":
      return HvStatus.HV_STATUS_INVALID_PARAMETER;
    case "ENOENT":
      return HvStatus.HV_STATUS_NOT_FOUND;
    case "EBUSY":
      return HvStatus.HV_STATUS_OPERATION_DENIED;
    case "ENOMEM":
    case "ENOSPC":
      return HvStatus.HV_STATUS_NO_RESOURCES;
    default:
      return HvStatus.HV_STATUS_OPERATION_FAILED;
  }
}
