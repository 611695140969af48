import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { QmpClient } from "./qmp-client.js";
import { QtestClient } from "./qtest-client.js";

/** QEMU could not be started, or stopped before the qtest connection was made. */
export class QemuStartError extends Error {}

export interface QemuLaunch {
  /** The system emulator: a path, or a name looked up on PATH. */
  readonly binary: string;
  /** Machine, devices and options; `-qtest`, `-qtest-log` and (with `firmware`) `-bios` are added here. */
  readonly args: readonly string[];
  /** A firmware image, written to a private file and given with -bios. */
  readonly firmware?: Uint8Array;
  /** How long QEMU may take to connect (default 20 s: TCG start-up on a loaded 2-core machine). */
  readonly startTimeoutMs?: number;
  /** Also open a QMP connection (for system_reset between runs). */
  readonly qmp?: boolean;
}

/** The most of QEMU's stderr kept for a report. */
const STDERR_KEEP = 64 * 1024;

/** Every QEMU this process started and has not reaped yet. */
const live = new Set<QemuProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // The last line of defence: whatever path the host process takes to exit, no QEMU it started survives it.
  process.once("exit", () => {
    for (const p of live) p.killNow();
  });
}

/** How many QEMU processes this process has started and not yet reaped (tests assert 0 after each). */
export function liveQemuCount(): number {
  return live.size;
}

/** Stops every QEMU this process started (a test's afterEach, a command's cleanup). */
export async function stopAllQemu(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop()));
}

/** The path of `name` on PATH (or `name` itself when it contains a slash and exists); undefined when absent. */
export function findOnPath(name: string): string | undefined {
  if (name.includes("/")) return existsSync(name) ? name : undefined;
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** The first line `binary --version` prints ("QEMU emulator version 7.2.22 (…)"), or undefined. */
export function qemuVersion(binary: string): string | undefined {
  const r = spawnSync(binary, ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (r.status !== 0) return undefined;
  return r.stdout.split("\n").find((l) => l.trim() !== "")?.trim();
}

/** setpriv(1) can give the child a parent-death signal: QEMU then dies with us even if we are killed outright. */
const setpriv = findOnPath("setpriv");

/**
 * One QEMU process under qtest control. Started with a private directory holding its qtest socket (QEMU connects
 * to us, as libqtest arranges it) and its firmware; always reaped: `stop()` kills it and waits, a process-exit
 * hook kills whatever is left, and where setpriv is installed the child gets SIGKILL when its parent dies.
 */
export class QemuProcess {
  private reaped = false;
  /** The QMP connection, when started with `qmp`. */
  qmp: QmpClient | undefined;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly qtest: QtestClient,
    readonly command: readonly string[],
    exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
    stderrSoFar: () => string,
  ) {
    this.exited = exited;
    this.stderrOf = stderrSoFar;
  }

  private readonly stderrOf: () => string;

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** What QEMU wrote to stderr (the last 64 KiB). */
  get stderr(): string {
    return this.stderrOf();
  }

  /** Whether the process has exited. */
  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  static async start(launch: QemuLaunch): Promise<QemuProcess> {
    const binary = findOnPath(launch.binary);
    if (binary === undefined) throw new QemuStartError(`${launch.binary} is not on PATH`);
    const dir = mkdtempSync(join(tmpdir(), "viommu-qemu-"));
    const socketPath = join(dir, "qtest.sock");
    const args = [...launch.args];
    if (launch.firmware !== undefined) {
      const bios = join(dir, "firmware.bin");
      writeFileSync(bios, launch.firmware);
      args.push("-bios", bios);
    }
    args.push("-qtest", `unix:${socketPath}`, "-qtest-log", "none");
    const qmpPath = join(dir, "qmp.sock");
    if (launch.qmp) args.push("-qmp", `unix:${qmpPath},server=on,wait=off`);
    const server: Server = createServer();
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(socketPath, () => resolve());
      });
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw new QemuStartError(`cannot listen on ${socketPath}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const command = setpriv === undefined ? [binary, ...args] : [setpriv, "--pdeathsig", "KILL", "--", binary, ...args];
    const child = spawn(command[0]!, command.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (s: string) => {
      stderr = (stderr + s).slice(-STDERR_KEEP);
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once("exit", (code, signal) => resolve({ code, signal }));
      child.once("error", () => resolve({ code: null, signal: null }));
    });
    // Registered before anything can fail, so even a failed start is reaped.
    const placeholder = { killNow: () => child.kill("SIGKILL") } as unknown as QemuProcess;
    live.add(placeholder);
    installExitHook();
    const timeoutMs = launch.startTimeoutMs ?? 20_000;
    let timer: NodeJS.Timeout | undefined;
    const connected = await Promise.race([
      new Promise<Socket>((resolve) => server.once("connection", resolve)),
      exited.then(() => "exited" as const),
      new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    server.close();
    live.delete(placeholder);
    if (connected === "exited" || connected === "timeout") {
      child.kill("SIGKILL");
      await exited;
      rmSync(dir, { recursive: true, force: true });
      const why = connected === "timeout" ? `did not connect within ${timeoutMs} ms` : "exited before connecting";
      throw new QemuStartError(`${binary} ${why}: ${stderr.trim().split("\n").slice(-5).join(" | ") || "(no output)"}\ncommand: ${command.join(" ")}`);
    }
    const process = new QemuProcess(child, dir, new QtestClient(connected), command, exited, () => stderr);
    live.add(process);
    void exited.then(() => process.reap());
    if (launch.qmp) {
      try {
        process.qmp = await QmpClient.connect(qmpPath);
      } catch (e) {
        await process.stop();
        throw new QemuStartError(`QMP did not answer: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return process;
  }

  /** Synchronous SIGKILL (the exit hook's path: no waiting is possible there). */
  killNow(): void {
    if (this.alive) this.child.kill("SIGKILL");
    this.reap();
  }

  private reap(): void {
    if (this.reaped) return;
    this.reaped = true;
    live.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Closes the qtest connection, kills QEMU and waits for it to be gone. Safe to call twice. */
  async stop(): Promise<void> {
    this.qtest.close();
    this.qmp?.close();
    if (this.alive) this.child.kill("SIGKILL");
    await this.exited;
    this.reap();
  }
}
