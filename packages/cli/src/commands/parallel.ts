import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type { VendorPlugin } from "@viommu/core";
import { UsageError } from "../cli/errors.js";
import { runAnyUnit, type UnitResult, type WorkUnit } from "./shard-work.js";

/** `--shard i/n`: this process runs the i-th of n interleaved slices of the work (1 ≤ i ≤ n). */
export interface Shard {
  readonly index: number;
  readonly count: number;
}

export function parseShard(text: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = m === null ? NaN : Number(m[1]);
  const count = m === null ? NaN : Number(m[2]);
  if (!(count >= 1 && index >= 1 && index <= count && count <= 1_000_000)) throw new UsageError(`--shard: "${text}" is not i/n with 1 <= i <= n (the first of four is 1/4)`);
  return { index, count };
}

export function parseWorkers(text: string): number {
  const n = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!(n >= 1 && n <= 256)) throw new UsageError(`--workers: "${text}" is not a number of threads from 1 to 256`);
  return n;
}

export interface PoolOptions {
  readonly workers: number;
  /** The command's --plugin directories: each worker loads the same plugins. */
  readonly pluginDirs: readonly string[];
  /** Plugins already loaded here (used when the work runs in this thread). */
  readonly installed: readonly VendorPlugin[];
  readonly onDone?: (index: number, result: UnitResult) => void;
}

const workerScript = new URL("./shard-worker.js", import.meta.url);

/** Whether worker threads can run here (the compiled worker exists: not when running from TypeScript sources). */
export function workersAvailable(): boolean {
  return workerScript.protocol === "file:" && existsSync(fileURLToPath(workerScript));
}

/**
 * Runs every unit and returns the results in the units' order, whatever the number of workers or the order
 * they finish in: the merged report is the same for any N. With one worker (or no compiled worker script) the
 * units run in this thread.
 */
export async function runUnits(units: readonly WorkUnit[], options: PoolOptions): Promise<UnitResult[]> {
  const results: (UnitResult | undefined)[] = new Array(units.length).fill(undefined);
  const threads = Math.min(options.workers, units.length);
  if (threads <= 1 || !workersAvailable()) {
    for (const [i, unit] of units.entries()) {
      results[i] = await runAnyUnit(unit, options.installed);
      options.onDone?.(i, results[i]!);
    }
    return results as UnitResult[];
  }
  let next = 0;
  await new Promise<void>((resolve, reject) => {
    let running = threads;
    let failed = false;
    const pool: Worker[] = [];
    const stopAll = (): void => {
      for (const w of pool) void w.terminate();
    };
    for (let t = 0; t < threads; t++) {
      const worker = new Worker(workerScript, { workerData: { pluginDirs: [...options.pluginDirs] } });
      pool.push(worker);
      const feed = (): void => {
        if (next < units.length) {
          const index = next++;
          worker.postMessage({ index, unit: units[index] });
        } else worker.postMessage("stop");
      };
      worker.on("message", (m: "ready" | { index: number; result?: UnitResult; error?: string }) => {
        if (m === "ready") return feed();
        if (m.error !== undefined) {
          failed = true;
          stopAll();
          return reject(new Error(`worker: unit ${m.index}: ${m.error}`));
        }
        results[m.index] = m.result;
        options.onDone?.(m.index, m.result!);
        feed();
      });
      worker.on("error", (e) => {
        if (failed) return;
        failed = true;
        stopAll();
        reject(e);
      });
      worker.on("exit", () => {
        if (--running === 0 && !failed) resolve();
      });
    }
  });
  const missing = results.findIndex((r) => r === undefined);
  if (missing >= 0) throw new Error(`worker pool: unit ${missing} never reported`);
  return results as UnitResult[];
}
