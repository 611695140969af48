/**
 * A backend author outside this repository: `viommu new-backend` makes a standalone package in a temporary
 * directory, which installs the packed tarballs of core, conformance, the command line with its trace and QEMU
 * packages, and the template (as a user would from a registry), builds, runs its own tests, is found by `viommu` where it is developed, passes
 * the conformance suite, and is refused at load time when a capability has no reason.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { builtMain, repositoryRoot, viommu } from "./run-cli.js";

function run(command: string, args: readonly string[], cwd: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(command, [...args], { cwd, encoding: "utf8", timeout: 600_000, env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0", npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false" } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const npm = process.platform === "win32" ? "npm.cmd" : "npm";

describe.skipIf(!existsSync(builtMain))("a backend made from the template, outside the repository", () => {
  let dir = "";
  let backend = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "viommu-backend-"));
    const packed = run(npm, ["pack", "--pack-destination", dir, "--workspace", "@viommu/core", "--workspace", "@viommu/conformance", "--workspace", "@viommu/example-mock", "--workspace", "@viommu/trace", "--workspace", "@viommu/qemu", "--workspace", "@viommu/cli"], repositoryRoot);
    if (packed.status !== 0) throw new Error(`npm pack failed: ${packed.stderr}`);
    const created = viommu(["new-backend", join(dir, "acme-iommu"), "--id", "acme", "--name", "ACME IOMMU"]);
    if (created.status !== 0) throw new Error(`new-backend failed: ${created.stderr}`);
    backend = join(dir, "acme-iommu");
    const tarballs = readdirSync(dir).filter((f) => f.endsWith(".tgz")).map((f) => join(dir, f));
    const installed = run(npm, ["install", "--no-audit", "--no-fund", ...tarballs], backend);
    if (installed.status !== 0) throw new Error(`npm install failed: ${installed.stderr}`);
  }, 900_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("is a standalone package: its own tsconfig and tests, nothing pointing back at this repository", () => {
    for (const f of ["package.json", "tsconfig.json", "tsconfig.test.json", "vitest.config.ts", "README.md", "src/plugin.ts"]) expect(existsSync(join(backend, f)), f).toBe(true);
    for (const f of ["tsconfig.json", "tsconfig.test.json", "package.json"]) expect(readFileSync(join(backend, f), "utf8")).not.toMatch(/\.\.\/\.\.\//);
    expect(readFileSync(join(backend, "src/plugin.ts"), "utf8")).toMatch(/id: "acme"/);
  });

  it("builds and passes its own tests, which name the plugin they contain, not the template's", () => {
    const r = run(npm, ["test"], backend);
    expect(r.status, r.stdout.slice(-3000) + r.stderr.slice(-3000)).toBe(0);
    expect(r.stdout).toMatch(/Tests\s+\d+ passed/);
  }, 900_000);

  it("is found by viommu where it is developed and passes the conformance suite, by default and with --plugin", () => {
    const plugins = run("npx", ["viommu", "plugins", "--json"], backend);
    expect(plugins.status, plugins.stderr).toBe(0);
    const listed = JSON.parse(plugins.stdout) as { plugins: { id: string; kind: string }[]; collisions: string[] };
    expect(listed.plugins.find((p) => p.id === "acme")).toMatchObject({ kind: "vendor" });
    // The template's type numbers are the mock's: both are installed here, and viommu says so.
    expect(listed.collisions.some((c) => /acme/.test(c) && /mock/.test(c))).toBe(true);
    for (const args of [["conformance", "--json"], ["conformance", "--plugin", ".", "--json"]]) {
      const r = run("npx", ["viommu", ...args], backend);
      expect(r.status, r.stderr).toBe(0);
      const report = JSON.parse(r.stdout) as { vendors: { vendor: string; failed: number; passed: number }[] };
      expect(report.vendors.map((v) => v.vendor)).toEqual(["acme"]);
      expect(report.vendors[0]!.failed).toBe(0);
      expect(report.vendors[0]!.passed).toBeGreaterThan(20);
    }
  }, 900_000);

  it("is refused at load time, naming the capability, when a capability it lacks has no reason", () => {
    const file = join(backend, "src/plugin.ts");
    const source = readFileSync(file, "utf8");
    const withoutReason = source.replace(/\n\s*sva: "[^"]*",/, "");
    expect(withoutReason).not.toBe(source);
    writeFileSync(file, withoutReason);
    expect(run(npm, ["run", "build"], backend).status).toBe(0);
    const r = run("npx", ["viommu", "conformance", "--plugin", "."], backend);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/--plugin \.: plugin acme: capability sva is declared absent without a reason/);
    writeFileSync(file, source);
  }, 300_000);
});
