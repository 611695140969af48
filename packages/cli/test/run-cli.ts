import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

export const repositoryRoot = join(import.meta.dirname, "../../..");
export const builtMain = join(import.meta.dirname, "../dist/main.js");
const shim = join(import.meta.dirname, "../bin/viommu.js");

/** The built command as a user runs it: a separate process, from the repository root. */
export function viommu(args: readonly string[], input?: string | Uint8Array): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [shim, ...args], { cwd: repositoryRoot, encoding: "utf8", input, maxBuffer: 256 * 2 ** 20 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** One line on stderr, no stack trace. */
export function oneLine(stderr: string): boolean {
  const lines = stderr.trim().split("\n");
  return lines.length === 1 && !/\n\s+at /.test(stderr) && lines[0]!.startsWith("viommu: error:");
}

/**
 * Runs the built command with `lines` fed to its stdin one by one, reading one answer line per input line,
 * and reads the process's peak resident set (VmHWM) while it still waits for more input.
 */
export async function conversation(args: readonly string[], lines: readonly string[]): Promise<{ answers: string[]; peakRssKiB: number; status: number | null; stderr: string }> {
  const child = spawn(process.execPath, [shim, ...args], { cwd: repositoryRoot, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const out = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const answers: string[] = [];
  for (const line of lines) {
    child.stdin.write(`${line}\n`);
    const next = await out.next();
    if (next.done === true) break;
    answers.push(next.value);
  }
  const status = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"));
  child.stdin.end();
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  return { answers, peakRssKiB: status === null ? Number.NaN : Number(status[1]), status: code, stderr };
}
