import { iasl as findIasl } from "../../../../test-support/external-tools.js";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { decodeIvrs } from "../../src/format/ivrs.js";
import { emulatedFeatures } from "../../src/vmm/emulated-features.js";
import { buildIvrs } from "../../src/vmm/ivrs-builder.js";
import { amdViAcpiTool } from "../../src/tools/acpi-tool.js";

/** ACPICA's iasl on PATH (CI requires it; locally its absence skips these checks). */
const iasl = findIasl().command;

function ivrs(mode: "nested" | "shadow" | "ir-only"): Uint8Array {
  return buildIvrs({ mmioBase: 0xfed80000, iommuDeviceId: 0x0002, features: emulatedFeatures(mode, false), extraDeviceIds: [0x10, 0x1234] });
}

describe("IVRS the VMM publishes", () => {
  it("lists IVHD 10h and 11h with the same device entries, the IOAPIC, and HATDis only when host translation is off", () => {
    for (const mode of ["nested", "shadow", "ir-only"] as const) {
      const d = decodeIvrs(ivrs(mode));
      expect(d.ok).toBe(true);
      if (!d.ok) return;
      const ivhds = d.table.blocks.filter((b) => b.kind === "IVHD");
      expect(ivhds.map((b) => b.type)).toEqual([0x10, 0x11]);
      const [h10, h11] = ivhds as [Extract<(typeof ivhds)[number], { kind: "IVHD" }>, Extract<(typeof ivhds)[number], { kind: "IVHD" }>];
      expect(h10.entries).toEqual(h11.entries);
      expect(h11.entries.some((e) => e.kind === "SPECIAL" && e.sourceDeviceId === 0xa0)).toBe(true);
      expect(h11.entries.some((e) => e.kind === "SELECT" && e.deviceId === 0x1234)).toBe(true);
      expect(h11.features & 1).toBe(mode === "shadow" ? 0 : 1);
      expect(h11.baseAddress).toBe(0xfed80000n);
    }
  });

  it("viommu acpi generates an IVRS with IVHD 10h and 11h only (iasl cannot parse 40h)", () => {
    const d = decodeIvrs(amdViAcpiTool.generate());
    expect(d.ok && d.table.blocks.map((b) => b.type)).toEqual([0x10, 0x11]);
    expect(amdViAcpiTool.signature).toBe("IVRS");
  });

  it.skipIf(iasl === undefined)("disassembles with iasl -d without errors", () => {
    const dir = mkdtempSync(join(tmpdir(), "amdvi-ivrs-"));
    const file = join(dir, "ivrs.dat");
    writeFileSync(file, amdViAcpiTool.generate());
    const output = execFileSync(iasl!, ["-d", file], { cwd: dir, encoding: "utf8" });
    const dsl = readFileSync(join(dir, "ivrs.dsl"), "utf8");
    rmSync(dir, { recursive: true, force: true });
    expect(output).not.toMatch(/error/i);
    expect(dsl).toContain("I/O Virtualization Reporting Structure");
    expect(dsl).not.toMatch(/\*\*\*\* Unknown|Invalid/);
  });
});
