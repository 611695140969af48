/**
 * What each published package's tarball holds, as `npm pack` would make it: LICENSE, a README, the built entry
 * points, and `main`/`types` for consumers still on `moduleResolution: node` (which ignores `exports`).
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repositoryRoot } from "./run-cli.js";

interface Workspace {
  readonly dir: string;
  readonly manifest: { name: string; private?: boolean; main?: string; types?: string };
}

const root = JSON.parse(readFileSync(join(repositoryRoot, "package.json"), "utf8")) as { workspaces: string[] };
// Workspace entries are directories or "dir/*" globs.
const dirs = root.workspaces.flatMap((w) => (w.endsWith("/*") ? readdirSync(join(repositoryRoot, w.slice(0, -2))).map((d) => `${w.slice(0, -2)}/${d}`) : [w]));
const published: Workspace[] = dirs
  .filter((dir) => existsSync(join(repositoryRoot, dir, "package.json")))
  .map((dir) => ({ dir, manifest: JSON.parse(readFileSync(join(repositoryRoot, dir, "package.json"), "utf8")) as Workspace["manifest"] }))
  .filter((w) => w.manifest.private !== true);

// Never skipped: `npm test` builds first, and a tarball missing its built entry points must fail here.
describe("every published package's tarball", () => {
  it("covers the workspaces that are not private", () => {
    expect(published.map((w) => w.manifest.name)).toEqual(expect.arrayContaining(["@viommu/core", "@viommu/cli", "@viommu/trace", "@viommu/qemu"]));
  });

  const packed = spawnSync("npm", ["pack", "--dry-run", "--json", ...published.flatMap((w) => ["--workspace", w.manifest.name])], { cwd: repositoryRoot, encoding: "utf8", env: { ...process.env, npm_config_update_notifier: "false" } });
  const listings = packed.status === 0 ? (JSON.parse(packed.stdout) as { name: string; files: { path: string }[] }[]) : [];

  for (const w of published) {
    it(`${w.manifest.name}: LICENSE, README.md, and main/types naming files it ships`, () => {
      expect(packed.status, packed.stderr).toBe(0);
      const files = new Set(listings.find((l) => l.name === w.manifest.name)?.files.map((f) => f.path));
      expect(files.has("LICENSE"), "LICENSE").toBe(true);
      expect(files.has("README.md"), "README.md").toBe(true);
      for (const field of ["main", "types"] as const) {
        const target = w.manifest[field];
        expect(target, field).toBeDefined();
        expect(files.has(target!.replace(/^\.\//, "")), `${field}: ${target}`).toBe(true);
      }
    });
  }
});
