import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromBytes, toHex64 } from "@viommu/core";
import {
  CMDQV_PARAM_QEMU_GUEST,
  GUEST_VCMDQ_COMMANDS,
  IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV,
  IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV,
  IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV,
  IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV,
  VINTF_MMAP_LENGTH,
  cmdqvParamLayout,
  commandOpcode,
  decodeHwInfoTegra241Cmdqv,
  decodeReg32,
  decodeVeventTegra241Cmdqv,
  decodeViommuTegra241Cmdqv,
  encodeHwInfoTegra241Cmdqv,
  encodeVeventTegra241Cmdqv,
  encodeViommuTegra241Cmdqv,
  guestParamFromHwInfo,
  guestVcmdqAllows,
  hwInfoFromParam,
  hwInfoTegra241CmdqvProblem,
  lvcmdqsInError,
  vintfPage0,
} from "../../src/format/index.js";

function words(bytes: Uint8Array): string[] {
  return toHex64(fromBytes(bytes, 0, bytes.length * 8));
}

// Constants and layouts: spec iommufd.md §7 / arm-hyperv-virtio.md §4.6, checked against Linux
// include/uapi/linux/iommufd.h (enum iommu_viommu_type, iommu_hw_queue_type, iommu_veventq_type,
// iommu_hw_info_type; struct iommu_hw_info_tegra241_cmdqv, iommu_viommu_tegra241_cmdqv, iommu_vevent_tegra241_cmdqv).
describe("iommufd uAPI (spec iommufd.md §7)", () => {
  it("type constants", () => {
    expect([IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV, IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV, IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV]).toEqual([2, 1, 2, 3]);
  });

  it("iommu_hw_info_tegra241_cmdqv: flags u32, version, log2vcmdqs, log2vsids, __reserved (8 bytes)", () => {
    const bytes = encodeHwInfoTegra241Cmdqv({ version: 1, log2vcmdqs: 1, log2vsids: 4 });
    expect(words(bytes)).toEqual(["0x0004010100000000"]);
    const info = decodeHwInfoTegra241Cmdqv(bytes)!;
    expect(info).toEqual({ flags: 0, version: 1, log2vcmdqs: 1, log2vsids: 4, __reserved: 0 });
    expect(hwInfoTegra241CmdqvProblem(info)).toBeUndefined();
    expect(hwInfoTegra241CmdqvProblem({ ...info, flags: 1 })).toMatch(/flags/);
    expect(hwInfoTegra241CmdqvProblem({ ...info, __reserved: 1 })).toMatch(/__reserved/);
    expect(decodeHwInfoTegra241Cmdqv(bytes.subarray(0, 7))).toBeUndefined();
  });

  it("hw_info from the host PARAM (tegra241_cmdqv_hw_info) and the VM's PARAM from hw_info (one VINTF)", () => {
    const info = hwInfoFromParam(decodeReg32(cmdqvParamLayout, 0x4671));
    expect(info).toEqual({ flags: 0, version: 1, log2vcmdqs: 1, log2vsids: 4, __reserved: 0 });
    expect(guestParamFromHwInfo(info)).toBe(CMDQV_PARAM_QEMU_GUEST);
  });

  it("iommu_viommu_tegra241_cmdqv: out_vintf_mmap_offset, out_vintf_mmap_length = 64 KiB (VINTF page 0)", () => {
    const bytes = encodeViommuTegra241Cmdqv({ out_vintf_mmap_offset: 0x7f0000000000n, out_vintf_mmap_length: VINTF_MMAP_LENGTH });
    expect(words(bytes)).toEqual(["0x00007f0000000000", "0x0000000000010000"]);
    expect(decodeViommuTegra241Cmdqv(bytes)).toEqual({ out_vintf_mmap_offset: 0x7f0000000000n, out_vintf_mmap_length: 0x10000n });
    // What the kernel maps at that offset: base_phys + TEGRA241_VINTFi_PAGE0(idx).
    expect(vintfPage0(1)).toBe(0x50000);
  });

  it("iommu_vevent_tegra241_cmdqv: lvcmdq_err_map[2], LVCMDQ 1 and 64 in error", () => {
    const bytes = encodeVeventTegra241Cmdqv({ lvcmdq_err_map: [0x2n, 0x1n] });
    expect(words(bytes)).toEqual(["0x0000000000000002", "0x0000000000000001"]);
    const e = decodeVeventTegra241Cmdqv(bytes)!;
    expect(lvcmdqsInError(e)).toEqual([1, 64]);
    expect(decodeVeventTegra241Cmdqv(bytes.subarray(0, 15))).toBeUndefined();
  });

  it("decoders accept any bytes of the right size", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        expect(encodeHwInfoTegra241Cmdqv(decodeHwInfoTegra241Cmdqv(bytes)!)).toEqual(bytes.subarray(0, 8));
        expect(encodeViommuTegra241Cmdqv(decodeViommuTegra241Cmdqv(bytes)!)).toEqual(bytes);
        expect(encodeVeventTegra241Cmdqv(decodeVeventTegra241Cmdqv(bytes)!)).toEqual(bytes);
      }),
    );
  });
});

// The guest-owned VCMDQ command set: spec §4.5 / iommufd.md §7.5; Linux tegra241_guest_vcmdq_supports_cmd lists
// CMDQ_OP_TLBI_NH_ASID (0x11), CMDQ_OP_TLBI_NH_VA (0x12), CMDQ_OP_ATC_INV (0x40); CMD_SYNC (0x46) follows each batch.
describe("guest VCMDQ command allow-list (spec §4.5)", () => {
  it("lists exactly TLBI_NH_ASID, TLBI_NH_VA, ATC_INV and CMD_SYNC", () => {
    expect(GUEST_VCMDQ_COMMANDS.map((c) => [c.opcode, c.name])).toEqual([
      [0x11, "CMD_TLBI_NH_ASID"],
      [0x12, "CMD_TLBI_NH_VA"],
      [0x40, "CMD_ATC_INV"],
      [0x46, "CMD_SYNC"],
    ]);
  });

  it.each([
    [0x11, true],
    [0x12, true],
    [0x40, true],
    [0x46, true],
    [0x03, false], // CFGI_STE
    [0x05, false], // CFGI_CD
    [0x10, false], // TLBI_NH_ALL
    [0x13, false], // TLBI_NH_VAA
    [0x30, false], // TLBI_NSNH_ALL
    [0x41, false], // PRI_RESP
    [0x44, false], // RESUME
  ])("opcode 0x%s allowed: %s", (opcode, allowed) => {
    expect(guestVcmdqAllows(opcode)).toBe(allowed);
  });

  it("reads the opcode from command word 0 bits [7:0]", () => {
    // CMD_TLBI_NH_VA with ASID 1 in dword 0 [63:48]: the low word is 0x00000012.
    expect(commandOpcode(0x00000012)).toBe(0x12);
    expect(commandOpcode(0xffffff46)).toBe(0x46);
  });
});
