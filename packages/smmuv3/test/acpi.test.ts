import { iasl as findIasl } from "../../../test-support/external-tools.js";
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { acpiTableProblem } from "@viommu/core";
import { decodeIort, iortMapId } from "../src/format/iort.js";
import { smmuv3Plugin } from "../src/plugin.js";
import { smmuBed } from "./support.js";

/** ACPICA's iasl on PATH (CI requires it; locally its absence skips these checks). */
const haveIasl = findIasl().command !== undefined;

function disassemble(bytes: Uint8Array): { status: number | null; log: string; dsl: string } {
  const dir = mkdtempSync(join(tmpdir(), "smmuv3-iort-"));
  try {
    writeFileSync(join(dir, "iort.aml"), bytes);
    const r = spawnSync("iasl", ["-d", "iort.aml"], { cwd: dir, encoding: "utf8" });
    const dsl = join(dir, "iort.dsl");
    return { status: r.status, log: `${r.stdout}\n${r.stderr}`, dsl: existsSync(dsl) ? readFileSync(dsl, "utf8") : "" };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("the IORT the VMM publishes (viommu acpi --vendor smmuv3)", () => {
  const bytes = smmuv3Plugin.acpi!.generate();

  it("is a well-formed IORT: ITS group, SMMUv3 at QEMU virt's base with its GSIVs, a root complex routed through it", () => {
    expect(acpiTableProblem(bytes, "IORT")).toBeUndefined();
    const t = decodeIort(bytes);
    if (!t.ok) throw new Error(t.problem);
    const [its, smmu, rc] = t.table.nodes;
    expect(its).toMatchObject({ type: "its-group", itsIdentifiers: [0] });
    expect(smmu).toMatchObject({ type: "smmuv3", baseAddress: 0x0905_0000n, flags: 1, model: 0, eventGsiv: 0x6a, priGsiv: 0x6b, syncGsiv: 0x6c, gerrGsiv: 0x6d });
    expect(rc).toMatchObject({ type: "root-complex", pciSegment: 0 });
    // Every RequesterID is its own StreamID, and every StreamID its own ITS DeviceID (count − 1 convention).
    expect([0, 0x28, 0xffff].map((rid) => iortMapId(rc!.mappings![0]!, rid))).toEqual([0, 0x28, 0xffff]);
    expect(iortMapId(rc!.mappings![0]!, 0x1_0000)).toBeUndefined();
    expect(rc!.mappings![0]!.outputNode).toBe(1);
    expect(smmu!.mappings![0]!.outputNode).toBe(0);
  });

  it("describes each emulated SMMU at its own MMIO base, which the guest driver finds through it", () => {
    const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10, instance: 0 }, { rid: 0x300, guestRid: 0x20, instance: 1 }], instances: 2 }] });
    const bases = s.v.iommus.map((i) => {
      const t = decodeIort(i.acpiTables!()[0]!.bytes);
      return t.ok ? t.table.nodes.find((n) => n.type === "smmuv3") : undefined;
    });
    expect(bases.map((n) => (n?.type === "smmuv3" ? Number(n.baseAddress) : 0))).toEqual(s.v.iommus.map((i) => i.mmioBase));
    expect(new Set(s.v.iommus.map((i) => i.mmioBase)).size).toBe(2);
  });

  const title = haveIasl ? "disassembles with ACPICA's iasl -d without errors or warnings" : "iasl -d cross-check SKIPPED: iasl is not installed (Debian package acpica-tools)";
  it.skipIf(!haveIasl)(title, () => {
    const r = disassemble(bytes);
    expect(r.status, r.log).toBe(0);
    expect(r.log).not.toMatch(/error|warning/i);
    expect(r.dsl).toContain("[IO Remapping Table]");
    expect(r.dsl).not.toMatch(/\*\*\*\*|error|warning|unknown|invalid/i);
    expect(r.dsl).toMatch(/Base Address : 0000000009050000/);
  });
});
