import { describe, expect, it } from "vitest";
import { mkdirSync, mkdtempSync, realpathSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createRequire } from "node:module";
import { discoverPlugins, Platform } from "@viommu/core";
import smmuv3 from "@viommu/smmuv3/plugin";
import { dmaThroughVendor } from "../src/index.js";

const require = createRequire(import.meta.url);
const packageDir = (name: string): string => realpathSync(dirname(require.resolve(`${name}/package.json`)));

describe("core plus one vendor", () => {
  it("discovery finds exactly the vendor installed next to core, by its package.json", () => {
    const project = mkdtempSync(join(tmpdir(), "viommu-selective-"));
    mkdirSync(join(project, "node_modules", "@viommu"), { recursive: true });
    symlinkSync(packageDir("@viommu/core"), join(project, "node_modules", "@viommu", "core"));
    symlinkSync(packageDir("@viommu/smmuv3"), join(project, "node_modules", "@viommu", "smmuv3"));
    const found = discoverPlugins([project]);
    expect(found.map((f) => f.packageName)).toEqual(["@viommu/smmuv3"]);
    expect(found[0]!.manifest).toEqual({ plugin: "./plugin", kind: "vendor" });
  });

  it("a platform with only that vendor registered works end to end", () => {
    const platform = new Platform({ plugins: [smmuv3] });
    expect(platform.plugins().map((p) => p.id)).toEqual(["smmuv3"]);
    expect(platform.createUnit("vtd")).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
    platform.dispose();
    expect([...dmaThroughVendor(smmuv3)]).toEqual([0xde, 0xad, 0xbe, 0xef]);
  });
});
