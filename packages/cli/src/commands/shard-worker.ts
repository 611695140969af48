import { parentPort, workerData } from "node:worker_threads";
import { installedPlugins } from "../installed.js";
import { runAnyUnit, type WorkUnit } from "./shard-work.js";

/**
 * A worker thread of `--workers N`: loads the same plugins as the command (its --plugin directories, the
 * current directory), then runs each unit it is sent and posts the result back under the unit's index.
 */
const { pluginDirs } = workerData as { pluginDirs: string[] };
const installed = (await installedPlugins(pluginDirs)).plugins.map((p) => p.plugin);
parentPort!.on("message", async (message: { index: number; unit: WorkUnit } | "stop") => {
  if (message === "stop") {
    parentPort!.close();
    return;
  }
  try {
    parentPort!.postMessage({ index: message.index, result: await runAnyUnit(message.unit, installed) });
  } catch (e) {
    parentPort!.postMessage({ index: message.index, error: e instanceof Error ? e.message : String(e) });
  }
});
parentPort!.postMessage("ready");
