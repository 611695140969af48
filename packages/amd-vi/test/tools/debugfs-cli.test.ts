import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { oneLine, viommu } from "../../../cli/test/run-cli.js";

/** The sample files (written from drivers/iommu/amd/debugfs.c's formats; see test/format/debugfs.test.ts). */
const fixtures = join(import.meta.dirname, "../fixtures/debugfs");
/** The built plugin the CLI loads (npm test builds first). */
const builtImporter = join(import.meta.dirname, "../../dist/format/debugfs.js");

describe("viommu import --vendor amd-vi (the built command)", () => {
  it("the built plugin carries the importer", () => {
    expect(existsSync(builtImporter)).toBe(true);
  });

  it("decodes the device table entry, the IRTEs and the command buffer of a debugfs copy", () => {
    const r = viommu(["import", "--vendor", "amd-vi", join(fixtures, "devtbl"), join(fixtures, "irqtbl"), join(fixtures, "cmdbuf")]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const lines = r.stdout.split("\n");
    const dte = lines.findIndex((l) => l.startsWith("DTE 0000:00:02.0  0x6cc0000000000003 0x00000800fc010002 0x20000000fe010013 0x0000000000000000"));
    expect(dte).toBeGreaterThanOrEqual(0);
    expect(lines[dte + 1]).toMatch(/ DomainID=2 .* IV=1 IntTabLen=9 .*InterruptTableRootPointer=0xfe010000 .*IntCtl=2 .*GCR3TableRootPointer=0xfe00b000 IOMMU=iommu0$/);
    expect(r.stdout).toContain("IRTE (128-bit, remapped) 0000:00:02.0 IRT[1]  0x0000000000000501 0x0000000000000042\n");
    expect(r.stdout).toMatch(/INVALIDATE_IOMMU_PAGES 7  0x3000000200000000 0x0000000000101006\n {4}.*Range=0x101000-0x101fff Pending=false\n/);
  });

  it("reads stdin under --as, prints what it decoded, names a bad line on stderr and exits 1", () => {
    const r = viommu(["import", "--vendor", "amd-vi", "--as", "irqtbl", "--json", "-"], "DeviceId 0000:00:02.0\nIRT[0000] 00410301\nIRT[0001] 0042\n");
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('-: irqtbl:3: not an IRTE line (IRT[%04d] %016llx %016llx, or IRT[%04d] %08x): "IRT[0001] 0042"\n');
    expect(JSON.parse(r.stdout)).toEqual({ file: "-", line: 2, structure: "IRTE (32-bit)", index: "0000:00:02.0 IRT[0]", raw: ["0x00410301"], fields: { RemapEn: 1, SupIOPF: 0, IntType: 0, RqEoi: 0, DM: 0, GuestMode: 0, Destination: 3, Vector: 0x41 } });
  });

  it("a file that is none of the kernel's is one line naming it", () => {
    const r = viommu(["import", "--vendor", "amd-vi", join(fixtures, "README.md")]);
    expect(r.status).not.toBe(0);
    expect(oneLine(r.stderr)).toBe(true);
    expect(r.stderr).toMatch(/README\.md: not a amd-vi debugfs file \(it reads mmio, capability, cmdbuf, devid, devtbl, irqtbl;/);
  });
});
