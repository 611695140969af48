import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  HV_RESULT_NO_HYPERCALL_PAGE,
  HvStatus,
  decodeHypercallInput,
  decodeHypercallResult,
  encodeHypercallInput,
  encodeHypercallResult,
  hvResultToErrno,
  hvStatusName,
  hypercallInputProblem,
  type HvStatusName,
} from "../../src/format/index.js";

// Bit positions: spec arm-hyperv-virtio.md §5.1 and Linux include/hyperv/hvgdk_mini.h HV_HYPERCALL_* (read in
// torvalds/linux); control words as Linux builds them in hv_do_hypercall / hv_do_rep_hypercall (code |
// varhead << 17 | rep_count << 32 | rep_start << 48).
describe("hypercall input value (spec §5.1)", () => {
  it.each([
    ["MAP_DEVICE_INTERRUPT, var header 2 (irqdomain.c, one VP bank)", { call_code: 0x7c, variable_header_size: 2 }, 0x000000000004007cn],
    ["RETARGET_INTERRUPT | (var_size << 17), var_size 1 + 1 bank (pci-hyperv.c)", { call_code: 0x7e, variable_header_size: 2 }, 0x000000000004007en],
    ["MAP_DEVICE_GPA_PAGES, 512 reps", { call_code: 0xb3, rep_count: 512 }, 0x00000200000000b3n],
    ["MAP_DEVICE_GPA_PAGES, restart at rep 3 of 10", { call_code: 0xb3, rep_count: 10, rep_start_index: 3 }, 0x0003000a000000b3n],
    ["FLUSH_DEVICE_DOMAIN_LIST, 1 rep", { call_code: 0xd1, rep_count: 1 }, 0x00000001000000d1n],
    ["a fast call", { call_code: 0x125, fast: 1 }, 0x0000000000010125n],
    ["a nested call (HV_HYPERCALL_NESTED, bit 31)", { call_code: 0x7e, nested: 1 }, 0x000000008000007en],
    ["the widest fields", { call_code: 0xffff, variable_header_size: 0x3ff, rep_count: 0xfff, rep_start_index: 0xfff }, 0x0fff0fff07feffffn],
  ])("%s", (_what, fields, value) => {
    expect(encodeHypercallInput(fields)).toBe(value);
    expect(decodeHypercallInput(value)).toMatchObject(fields);
  });

  it.each([
    ["a valid simple call", 0x00000000000000b1n, false, undefined],
    ["a valid rep call", 0x0003000a000000b3n, true, undefined],
    ["reserved bit 27", 0x00000000080000b1n, false, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["reserved bit 30", 0x00000000400000b1n, false, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["reserved bit 44", 0x00001000000000b1n, false, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["reserved bit 63", 0x80000000000000b1n, false, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["a rep count on a simple call", 0x00000001000000b1n, false, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["a rep start index on a simple call", 0x00010000000000b1n, false, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["a zero rep count on a rep call", 0x00000000000000b3n, true, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["a rep start index equal to the rep count", 0x000a000a000000b3n, true, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
  ])("rejects or accepts %s (TLFS common hypercall status codes)", (_what, value, rep, status) => {
    expect(hypercallInputProblem(value, rep)).toBe(status);
  });

  it("decodes any 64-bit value and re-encodes it when no reserved bit is set", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (value) => {
        const fields = decodeHypercallInput(value);
        const reserved = value & 0xf000f00078000000n;
        expect(encodeHypercallInput(fields)).toBe(value & ~reserved);
      }),
    );
  });
});

describe("hypercall result value (spec §5.1; TLFS HV_X64_HYPERCALL_OUTPUT)", () => {
  it.each([
    ["success after 10 reps", HvStatus.HV_STATUS_SUCCESS, 10, 0x0000000a00000000n],
    ["INSUFFICIENT_MEMORY after 3 reps (deposit and continue)", HvStatus.HV_STATUS_INSUFFICIENT_MEMORY, 3, 0x000000030000000bn],
    ["DEVICE_ALREADY_IN_DOMAIN", HvStatus.HV_STATUS_DEVICE_ALREADY_IN_DOMAIN, 0, 0x0000000000000066n],
  ])("%s", (_what, status, reps, value) => {
    expect(encodeHypercallResult(status, reps)).toBe(value);
    expect(decodeHypercallResult(value)).toEqual({ status, reps_completed: reps });
  });

  it("ignores the reserved bits [31:16] and [63:44]", () => {
    expect(decodeHypercallResult(0xfffff0050000fffbn)).toEqual({ status: 0xfffb, reps_completed: 5 });
  });
});

describe("HV_STATUS names and hv_result_to_errno", () => {
  // Every status the spec lists (§5.1), with its code, plus DEVICE_ALREADY_IN_DOMAIN from the pvIOMMU series, and the
  // errno of Linux drivers/hv/hv_common.c hv_status_infos[] as read in torvalds/linux (first match wins; absent → EIO).
  const table: readonly [HvStatusName, number, string | undefined][] = [
    ["HV_STATUS_SUCCESS", 0x0, undefined],
    ["HV_STATUS_INVALID_HYPERCALL_CODE", 0x2, "EINVAL"],
    ["HV_STATUS_INVALID_HYPERCALL_INPUT", 0x3, "EINVAL"],
    ["HV_STATUS_INVALID_ALIGNMENT", 0x4, "EIO"],
    ["HV_STATUS_INVALID_PARAMETER", 0x5, "EINVAL"],
    ["HV_STATUS_ACCESS_DENIED", 0x6, "EIO"],
    ["HV_STATUS_INVALID_PARTITION_STATE", 0x7, "EIO"],
    ["HV_STATUS_OPERATION_DENIED", 0x8, "EIO"],
    ["HV_STATUS_UNKNOWN_PROPERTY", 0x9, "EIO"],
    ["HV_STATUS_PROPERTY_VALUE_OUT_OF_RANGE", 0xa, "EIO"],
    ["HV_STATUS_INSUFFICIENT_MEMORY", 0xb, "ENOMEM"],
    ["HV_STATUS_INVALID_PARTITION_ID", 0xd, "EINVAL"],
    ["HV_STATUS_INVALID_VP_INDEX", 0xe, "EINVAL"],
    ["HV_STATUS_NOT_FOUND", 0x10, "EIO"],
    ["HV_STATUS_INVALID_PORT_ID", 0x11, "EINVAL"],
    ["HV_STATUS_INVALID_CONNECTION_ID", 0x12, "EINVAL"],
    ["HV_STATUS_INSUFFICIENT_BUFFERS", 0x13, "EIO"],
    ["HV_STATUS_NOT_ACKNOWLEDGED", 0x14, "EIO"],
    ["HV_STATUS_INVALID_VP_STATE", 0x15, "EIO"],
    ["HV_STATUS_NO_RESOURCES", 0x1d, "EIO"],
    ["HV_STATUS_PROCESSOR_FEATURE_NOT_SUPPORTED", 0x20, "EIO"],
    ["HV_STATUS_INVALID_LP_INDEX", 0x41, "EINVAL"],
    ["HV_STATUS_INVALID_REGISTER_VALUE", 0x50, "EINVAL"],
    ["HV_STATUS_DEVICE_ALREADY_IN_DOMAIN", 0x66, "EIO"],
    ["HV_STATUS_OPERATION_FAILED", 0x71, "EIO"],
    ["HV_STATUS_TIME_OUT", 0x78, "EIO"],
    ["HV_STATUS_CALL_PENDING", 0x79, "EIO"],
    ["HV_STATUS_VTL_ALREADY_ENABLED", 0x86, "EIO"],
  ];
  it.each(table)("%s = %i maps to %s", (name, code, errno) => {
    expect(HvStatus[name]).toBe(code);
    expect(hvStatusName(code)).toBe(name);
    expect(hvResultToErrno(code)).toBe(errno);
  });

  it("covers exactly the listed statuses", () => {
    expect(Object.keys(HvStatus).sort()).toEqual(table.map(([name]) => name).sort());
  });

  it("converts a full result value by its status, U64_MAX to EOPNOTSUPP and unknown codes to EIO", () => {
    expect(hvResultToErrno(0x000000030000000bn)).toBe("ENOMEM");
    expect(hvResultToErrno(HV_RESULT_NO_HYPERCALL_PAGE)).toBe("EOPNOTSUPP");
    expect(hvResultToErrno(0x1234)).toBe("EIO");
    expect(hvStatusName(0x1234)).toBe("UNKNOWN");
  });
});
