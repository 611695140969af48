import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromWords64, toHex64 } from "@viommu/core";
import {
  CommandOpcode,
  INVALIDATE_ALL_PAGES_ADDRESS,
  buildCompletePprRequest,
  buildCompletionWait,
  buildInvalidateDevtabEntry,
  buildInvalidateInterruptTable,
  buildInvalidateIommuAll,
  buildInvalidateIommuPages,
  buildInvalidateIotlbPages,
  buildPrefetchIommuPages,
  commandProblem,
  decodeCommand,
  invalidationRange,
  linuxInvalidationAddress,
} from "../../src/format/index.js";

/**
 * Vectors are worked out from spec x86.md B6 and Linux iommu.c build_* (CMD_SET_TYPE puts the opcode in
 * d1[31:28]); the QW0/QW1 hex is each command's two 64-bit words.
 */
describe("commands Linux builds", () => {
  it("COMPLETION_WAIT: semaphore 0x102034000, S, data 5 (build_completion_wait)", () => {
    const raw = buildCompletionWait(0x102034000, 5n);
    expect(toHex64(raw)).toEqual(["0x1000000102034001", "0x0000000000000005"]);
    expect(decodeCommand(raw)).toEqual({ name: "COMPLETION_WAIT", code: 1, fields: { S: 1, I: 0, F: 0, StoreAddress: 0x102034000, Opcode: 1, StoreData: 5n } });
  });
  it("COMPLETION_WAIT with I and F", () => {
    expect(toHex64(buildCompletionWait(0x1000, 0n, { interrupt: true, flush: true, store: false }))[0]).toBe("0x1000000000001006");
  });
  it("INVALIDATE_DEVTAB_ENTRY and INVALIDATE_INTERRUPT_TABLE for the IOAPIC's 00:14.0", () => {
    expect(toHex64(buildInvalidateDevtabEntry(0xa0))).toEqual(["0x20000000000000a0", "0x0000000000000000"]);
    expect(toHex64(buildInvalidateInterruptTable(0xa0))).toEqual(["0x50000000000000a0", "0x0000000000000000"]);
    expect(decodeCommand(fromWords64(["0x20000000000000a0", "0"]))).toMatchObject({ name: "INVALIDATE_DEVTAB_ENTRY", fields: { DeviceID: 0xa0 } });
  });
  it("INVALIDATE_IOMMU_PAGES flushing a whole domain (amd_iommu_flush_tlb_domid: S | PDE, address 0x7FFF_FFFF_FFFF_F000)", () => {
    const raw = buildInvalidateIommuPages({ domainId: 0x1234, address: 0n, size: INVALIDATE_ALL_PAGES_ADDRESS });
    expect(toHex64(raw)).toEqual(["0x3000123400000000", "0x7ffffffffffff003"]);
    expect(decodeCommand(raw).fields).toMatchObject({ DomainID: 0x1234, S: 1, PDE: 1, GN: 0, Address: 0x7ffffffffffff000n });
    expect(invalidationRange(raw[2]!, raw[3]!)).toEqual({ all: true, base: 0, size: 2 ** 64 });
  });
  it("INVALIDATE_IOMMU_PAGES for one page: S = 0", () => {
    const raw = buildInvalidateIommuPages({ domainId: 1, address: 0x5000n, size: 0x1000n });
    expect(toHex64(raw)).toEqual(["0x3000000100000000", "0x0000000000005002"]);
    expect(invalidationRange(raw[2]!, raw[3]!)).toEqual({ all: false, base: 0x5000, size: 0x1000 });
  });
  it("INVALIDATE_IOMMU_PAGES for 2 MiB at 0x200000: address 0x2FF000 | S (build_inv_address)", () => {
    const raw = buildInvalidateIommuPages({ domainId: 1, address: 0x200000n, size: 0x200000n });
    expect(toHex64(raw)[1]).toBe("0x00000000002ff003");
    expect(invalidationRange(raw[2]!, raw[3]!)).toEqual({ all: false, base: 0x200000, size: 0x200000 });
  });
  it("INVALIDATE_IOMMU_PAGES with PASID for a v2 domain (GN)", () => {
    const raw = buildInvalidateIommuPages({ domainId: 2, address: 0x7000n, size: 0x1000n, pasid: 0x12345 });
    expect(toHex64(raw)).toEqual(["0x3000000200012345", "0x0000000000007006"]);
    expect(decodeCommand(raw).fields).toMatchObject({ PASID: 0x12345, GN: 1 });
  });
  it("INVALIDATE_IOTLB_PAGES: devid 0x10, qdep 32, PASID 0x1234 split over d0[23:16] and d1[23:16]", () => {
    const raw = buildInvalidateIotlbPages({ deviceId: 0x10, maxPend: 32, address: 0x5000n, size: 0x1000n, pasid: 0x1234 });
    expect(toHex64(raw)).toEqual(["0x4034001020120010", "0x0000000000005004"]);
    expect(decodeCommand(raw).fields).toMatchObject({ DeviceID: 0x10, MaxPend: 32, QueueID: 0x10, PASID_15_8: 0x12, PASID_7_0: 0x34, PASID_19_16: 0, PASID: 0x1234, GN: 1, S: 0 });
  });
  it("COMPLETE_PPR_REQUEST: devid 0x100, PASID 5, tag 0x1AB, success (build_complete_ppr)", () => {
    const raw = buildCompletePprRequest({ deviceId: 0x100, pasid: 5, tag: 0x1ab, status: 0 });
    expect(toHex64(raw)).toEqual(["0x7000000500000100", "0x000001ab00000004"]);
    expect(decodeCommand(raw).fields).toMatchObject({ DeviceID: 0x100, PASID: 5, GN: 1, CompletionTag: 0x1ab, Status: 0 });
    expect(toHex64(buildCompletePprRequest({ deviceId: 1, tag: 0x3ff, status: 0xf }))[1]).toBe("0x0000f1ff00000000");
  });
  it("INVALIDATE_IOMMU_ALL is just the opcode", () => {
    expect(toHex64(buildInvalidateIommuAll())).toEqual(["0x8000000000000000", "0x0000000000000000"]);
  });
  it("PREFETCH_IOMMU_PAGES puts PFCount, PASID, GN, Inval where QEMU's reserved mask leaves room", () => {
    const raw = buildPrefetchIommuPages({ deviceId: 0x10, pfCount: 3, address: 0x8000n, size: 0x1000n, pasid: 7, invalidate: true });
    expect(toHex64(raw)).toEqual(["0x6000000703000010", "0x0000000000008014"]);
    expect(commandProblem(raw)).toBeUndefined();
  });
});

describe("command names and problems", () => {
  it.each(Object.entries(CommandOpcode))("opcode %s = %i decodes by name", (name, code) => {
    expect(decodeCommand(fromWords64([BigInt(code) << 60n, 0n])).name).toBe(name);
  });
  it.each([
    ["opcode 0", ["0x0", "0x0"], "unknown-opcode"],
    ["opcode 9 (vIOMMU INSERT_GUEST_EVENT, not handled here)", ["0x9000000000000000", "0x0"], "unknown-opcode"],
    ["opcode 0xF", ["0xf000000000000000", "0x0"], "unknown-opcode"],
    ["COMPLETION_WAIT reserved QW0[59:52]", ["0x1010000000000001", "0x0"], "reserved-bits"],
    ["INVALIDATE_IOMMU_PAGES reserved QW0[31:20]", ["0x3000000000100000", "0x0"], "reserved-bits"],
    ["INVALIDATE_IOMMU_PAGES reserved QW1[11:3]", ["0x3000000000000000", "0x8"], "reserved-bits"],
    ["INVALIDATE_IOTLB_PAGES reserved QW1 bit 1", ["0x4000000000000000", "0x2"], "reserved-bits"],
    ["INVALIDATE_IOMMU_ALL with an operand", ["0x8000000000000001", "0x0"], "reserved-bits"],
  ])("%s is an ILLEGAL_COMMAND_ERROR (%s)", (_what, words, problem) => {
    expect(commandProblem(fromWords64(words))).toBe(problem);
  });
  it("decodes unknown opcodes with their raw operands", () => {
    expect(decodeCommand(fromWords64(["0xf000000000000123", "0x5"]))).toEqual({ name: "UNKNOWN", code: 15, fields: { Operand1: 0x123n, Opcode: 15, Operand2: 5n } });
  });
  it("decodes any 128 bits", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (a, b) => {
        const raw = fromWords64([a, b]);
        const d = decodeCommand(raw);
        expect(d.code).toBe(Number(a >> 60n));
        commandProblem(raw);
        invalidationRange(raw[2]!, raw[3]!);
      }),
    );
  });
});

describe("the range an S = 1 invalidation covers (B6; QEMU amdvi_decode_invalidation_size)", () => {
  it.each([
    ["0x0000000000005000", false, 0x5000, 0x1000],
    ["0x0000000000004001", false, 0x4000, 0x2000],
    ["0x0000000000005001", false, 0x4000, 0x4000],
    ["0x000000000007f001", false, 0x0, 0x100000],
    ["0x00000000000fb001", false, 0xf8000, 0x8000],
    ["0x0007fffffffff001", false, 0x0, 2 ** 52],
    ["0x000ffffffffff001", true, 0, 2 ** 64],
  ])("%s → all = %s, base 0x%s, size %s", (word, all, base, size) => {
    const raw = fromWords64([word]);
    expect(invalidationRange(raw[0]!, raw[1]!)).toEqual({ all, base, size });
  });
  it("agrees with Linux's encoder for aligned power-of-two ranges", () => {
    fc.assert(
      fc.property(fc.integer({ min: 13, max: 51 }), fc.integer({ min: 0, max: 2 ** 20 }), (shift, n) => {
        const size = 2 ** shift;
        const base = (n * size) % 2 ** 52;
        const word = linuxInvalidationAddress(BigInt(base), BigInt(size));
        const raw = fromWords64([word]);
        expect(invalidationRange(raw[0]!, raw[1]!)).toEqual({ all: false, base, size });
      }),
    );
  });
});
