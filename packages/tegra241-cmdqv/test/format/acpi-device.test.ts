import { iasl as findIasl } from "../../../../test-support/external-tools.js";
import { describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { acpiTableProblem } from "@viommu/core";
import {
  TEGRA241_CMDQV_HID,
  buildCmdqvSsdt,
  cmdqvCrs,
  cmdqvDeviceAml,
  decodeCmdqvCrs,
  qemuCmdqvAcpiDevice,
  tegra241CmdqvAcpiIdentity,
} from "../../src/format/index.js";

/** ACPICA's iasl on PATH (CI requires it; locally its absence skips these checks). */
const IASL_TOOL = findIasl();
const IASL = IASL_TOOL.command ?? "iasl";
const device = qemuCmdqvAcpiDevice(0, 1, 0x0c000000, 0x9c);

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Spec arm-hyperv-virtio.md §4.6: DSDT device _HID "NVDA200C", _UID = IORT SMMUv3 node Identifier, _CCA 1, _CRS =
// QWord memory window + one interrupt. As QEMU hw/arm/virt-acpi-build.c builds it (aml_qword_memory with
// AML_POS_DECODE, MIN/MAX_FIXED, CACHEABLE, READ_WRITE; aml_interrupt CONSUMER, EDGE, ACTIVE_HIGH, EXCLUSIVE)
// and Linux reads it (arm-smmu-v3.c acpi_smmu_dsdt_probe_tegra241_cmdqv, tegra241_cmdqv_find_acpi_resource).
describe("CMDQV ACPI device (spec §4.6)", () => {
  it("identity as data", () => {
    expect(TEGRA241_CMDQV_HID).toBe("NVDA200C");
    expect(tegra241CmdqvAcpiIdentity).toMatchObject({ hid: "NVDA200C", cca: 1, iortNode: false });
    expect(device).toEqual({ name: "CV00", uid: 1, base: 0x0c000000, length: 0x50000, gsiv: 0x9c });
  });

  it("_CRS bytes: QWord Address Space Descriptor (ACPI 6.5 §6.4.3.5.1), Extended Interrupt (§6.4.3.6), End Tag", () => {
    const crs = cmdqvCrs(device);
    expect(crs.length).toBe(57);
    expect(hex(crs)).toBe(
      [
        "8a2b00", // QWord descriptor, 43 bytes
        "00", // memory range
        "0c", // MaxFixed | MinFixed, positive decode
        "03", // cacheable, read/write
        "0000000000000000", // granularity
        "0000000c00000000", // minimum 0x0c000000
        "ffff040c00000000", // maximum 0x0c04ffff
        "0000000000000000", // translation offset
        "0000050000000000", // length 0x50000
        "890600", // extended interrupt, 6 bytes
        "03", // consumer, edge, active high, exclusive
        "01", // one interrupt
        "9c000000", // GSIV 0x9c
        "7900", // end tag
      ].join(""),
    );
    expect(decodeCmdqvCrs(crs)).toEqual({ base: 0x0c000000, length: 0x50000, gsiv: 0x9c, edge: true, activeHigh: true, exclusive: true });
  });

  it.each([
    ["an empty template", Uint8Array.of(0x79, 0)],
    ["a truncated QWord descriptor", Uint8Array.of(0x8a, 0x2b, 0x00, 0x00)],
    ["no interrupt", cmdqvCrs(device).subarray(0, 46)],
    ["a small resource other than the end tag", Uint8Array.of(0x22, 0x01, 0x00)],
  ])("rejects %s with a reason", (_what, bytes) => {
    expect(typeof decodeCmdqvCrs(bytes)).toBe("string");
  });

  it("Device(CV00) AML: ExtOp Device, two-byte PkgLength, _HID string, _UID One, _CCA One, _CRS buffer", () => {
    const aml = cmdqvDeviceAml(device);
    expect(hex(aml.subarray(0, 6))).toBe("5b82" + "4306" + "4356"); // DeviceOp, PkgLength 0x63 (2 bytes), "CV"
    expect(aml.length).toBe(2 + 0x63);
    expect(hex(aml.subarray(8, 23))).toBe("085f4849440d4e56444132303043" + "00"); // Name(_HID, "NVDA200C")
    expect(hex(aml.subarray(23, 29))).toBe("085f55494401"); // Name(_UID, One)
    expect(hex(aml.subarray(29, 35))).toBe("085f43434101"); // Name(_CCA, One)
    expect(hex(aml.subarray(35, 43))).toBe("085f435253113c0a"); // Name(_CRS, Buffer(PkgLength 0x3c) { size BytePrefix ...
    expect(aml[43]).toBe(57);
  });

  it("builds an SSDT whose header checks out", () => {
    const ssdt = buildCmdqvSsdt([device, qemuCmdqvAcpiDevice(1, 2, 0x0c100000, 0x9d)]);
    expect(acpiTableProblem(ssdt, "SSDT")).toBeUndefined();
  });

  it.skipIf(IASL_TOOL.command === undefined)("disassembles with ACPICA iasl -d without errors or warnings (skipped when iasl is absent)", () => {
    const dir = mkdtempSync(join(tmpdir(), "cmdqv-ssdt-"));
    try {
      const file = join(dir, "ssdt.aml");
      writeFileSync(file, buildCmdqvSsdt([device, { ...qemuCmdqvAcpiDevice(1, 300, 0x0c100000, 0x9d), name: "CV01" }]));
      const log = execFileSync(IASL, ["-d", file], { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
      expect(log).not.toMatch(/\b(Error|Warning)\b/);
      const dsl = readFileSync(join(dir, "ssdt.dsl"), "utf8");
      expect(dsl).toMatch(/Device \(CV00\)/);
      expect(dsl).toMatch(/Name \(_HID, "NVDA200C"\)/);
      expect(dsl).toMatch(/Name \(_UID, One\)/);
      expect(dsl).toMatch(/Name \(_UID, 0x012C\)/);
      expect(dsl).toMatch(/Name \(_CCA, One\)/);
      expect(dsl).toMatch(/QWordMemory \(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,/);
      expect(dsl).toMatch(/0x000000000C000000,\s*\/\/ Range Minimum/);
      expect(dsl).toMatch(/0x000000000C04FFFF,\s*\/\/ Range Maximum/);
      expect(dsl).toMatch(/0x0000000000050000,\s*\/\/ Length/);
      expect(dsl).toMatch(/Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s*\{\s*0x0000009C,/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
