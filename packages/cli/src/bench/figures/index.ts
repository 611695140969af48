import { existsSync } from "node:fs";
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { AnyFigureSpec, FigureResult, OneShotSpec } from "../harness.js";
import { BenchRefused } from "../harness.js";
import { claimFigures, measureClaim, type ClaimMeasurement } from "./claim.js";
import { hitCollections } from "./collections.js";
import { dmaRead, dmaWrite } from "./dma.js";
import { asidInvalidateInternal, iotlbLookupInternal, rangeInvalidate } from "./invalidation.js";
import { nestedMissTranslate, nestedWalkerInternal, nestedWalkerLayoutInternal } from "./nested-miss.js";
import { iotlbHitDevice, iotlbHitTranslate } from "./translate-hit.js";
import { iotlbBytesInternal } from "./bytes-per-entry.js";

/** Runs the claim in a fresh process when the compiled child exists (its RSS is then the VM's alone). */
function claimInChild(): Promise<ClaimMeasurement> | undefined {
  const child = new URL("./claim-child.js", import.meta.url);
  if (child.protocol !== "file:" || !existsSync(fileURLToPath(child))) return undefined;
  return new Promise((resolve, reject) => {
    const p = fork(fileURLToPath(child), [], { execArgv: ["--expose-gc"], stdio: ["ignore", "ignore", "inherit", "ipc"] });
    let answered = false;
    p.on("message", (m: { ok: boolean; value?: ClaimMeasurement; error?: string }) => {
      answered = true;
      if (m.ok) resolve(m.value!);
      else reject(new BenchRefused("claim-1tib", m.error ?? "failed"));
    });
    p.on("exit", (code) => {
      if (!answered) reject(new BenchRefused("claim-1tib", `the measuring process exited with ${code}`));
    });
  });
}

const claim: OneShotSpec = {
  name: "claim-1tib",
  yields: ["claim-1tib-setup-ms", "claim-1tib-1gib-pages-setup-ms", "claim-1tib-touch-64mib-rss-growth-mib"],
  async oneShot(): Promise<FigureResult[]> {
    const child = claimInChild();
    if (child !== undefined) return claimFigures(await child, "measured in a fresh process");
    try {
      return claimFigures(measureClaim(), "measured in this process (RSS includes what ran before)");
    } catch (e) {
      throw new BenchRefused("claim-1tib", e instanceof Error ? e.message : String(e));
    }
  },
};

/** Every core figure, in print order. Names are stable: `--json` and `--compare` rely on them. */
export const coreFigures: readonly AnyFigureSpec[] = [
  iotlbHitTranslate,
  iotlbHitDevice,
  hitCollections,
  nestedMissTranslate,
  dmaRead,
  dmaWrite,
  rangeInvalidate,
  claim,
  iotlbLookupInternal,
  nestedWalkerInternal,
  nestedWalkerLayoutInternal,
  asidInvalidateInternal,
  iotlbBytesInternal,
];
