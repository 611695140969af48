import { spawnSync } from "node:child_process";

/**
 * External programs some tests cross-check against (ACPICA's iasl, QEMU). Found on PATH, never at a fixed
 * location. Locally a missing tool skips those tests with a printed reason; in CI (`VIOMMU_REQUIRE_TOOLS=1`,
 * set by .ci/run after installing them) a missing tool fails the run instead of hiding the cross-check.
 */
export interface ExternalTool {
  readonly name: string;
  /** The command as found on PATH, or undefined. */
  readonly command: string | undefined;
  /** The version line the tool printed. */
  readonly version: string;
  /** Why tests using it are skipped (undefined when it is present). */
  readonly skipReason: string | undefined;
}

const found = new Map<string, ExternalTool>();

/** Looks `command` up on PATH, running it with `versionArgs`; throws when it is missing and CI requires it. */
export function externalTool(command: string, versionArgs: readonly string[], debianPackage: string): ExternalTool {
  const known = found.get(command);
  if (known !== undefined) return known;
  const which = spawnSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" });
  const path = which.status === 0 ? which.stdout.trim() : undefined;
  let version = "";
  if (path !== undefined) {
    const v = spawnSync(path, [...versionArgs], { encoding: "utf8" });
    version = `${v.stdout}${v.stderr}`.split("\n").find((l) => l.trim() !== "")?.trim() ?? "";
  }
  const skipReason = path === undefined ? `${command} is not on PATH (Debian package ${debianPackage})` : undefined;
  if (skipReason !== undefined && process.env.VIOMMU_REQUIRE_TOOLS === "1") throw new Error(`${skipReason}, and VIOMMU_REQUIRE_TOOLS=1 requires it`);
  const tool: ExternalTool = { name: command, command: path, version, skipReason };
  found.set(command, tool);
  return tool;
}

/** ACPICA's disassembler. */
export function iasl(): ExternalTool {
  return externalTool("iasl", ["-v"], "acpica-tools");
}
