import { writeFileSync } from "node:fs";
import type { GuestInitOptions, TranslationMode, VendorPlugin } from "@viommu/core";
import { formatTrace } from "../format/trace-codec.js";
import { recordWorkload } from "../workloads/record-workload.js";
import { workloadById, workloads } from "../workloads/workloads.js";
import { EXIT_FINDING, EXIT_OK, EXIT_USAGE, type CommandIo } from "./command-io.js";

/** Recording defaults a replay target wants (QEMU's come from @viommu/qemu's `qemuRecordProfile`). */
export interface RecordProfile {
  readonly mode?: TranslationMode;
  readonly variant?: string;
  readonly ramBase?: number;
  readonly ramBytes?: number;
  readonly dma?: "passthrough" | "emulated";
}

/** `viommu trace record`. */
export interface TraceRecordArgs {
  /** `--vendor V`: the plugin whose reference driver and model are recorded. */
  readonly vendor: string;
  /** The installed plugins (the vendor, and its parent for an extension). */
  readonly plugins: readonly VendorPlugin[];
  /** `--workload W` (default bring-up): one of `workloads`. */
  readonly workload?: string;
  /** `--out FILE` (default: the trace on stdout). */
  readonly out?: string;
  /** `--mode nested|shadow|ir-only` (default the profile's, else nested). */
  readonly mode?: TranslationMode;
  /** `--variant V`: the driver's table variant (a vendor's name: legacy, scalable, 2level, v2 …). */
  readonly variant?: string;
  /** `--seed S` (default 1): the model's seed and the workload's data. */
  readonly seed?: number;
  /** `--ram-base A` and `--ram-size N` (default the profile's, else 1 GiB at 0). */
  readonly ramBase?: number;
  readonly ramBytes?: number;
  /** `--dma passthrough|emulated` (default the profile's, else passthrough): whose DMA the devices are. */
  readonly dma?: "passthrough" | "emulated";
  /** Defaults for a target (`--for qemu`); explicit options win. */
  readonly profile?: RecordProfile;
  /** `--json`: a JSON summary instead of text. */
  readonly json?: boolean;
}

const DEFAULT_RAM_BYTES = 2 ** 30;

/**
 * Records a workload on the model with the vendor's reference driver, the model's answers as expectations, and
 * writes the trace. Exit 0 when recorded, 1 when the model broke the workload's rule (the trace up to there is
 * still written), 2 for a usage error (unknown vendor or workload, a workload the vendor cannot run).
 */
export function traceRecord(io: CommandIo, args: TraceRecordArgs): number {
  const plugin = args.plugins.find((p) => p.id === args.vendor);
  if (plugin === undefined) {
    io.err(`viommu trace record: vendor "${args.vendor}" is not installed (installed: ${args.plugins.map((p) => p.id).join(", ") || "none"})`);
    return EXIT_USAGE;
  }
  const workloadId = args.workload ?? "bring-up";
  const workload = workloadById(workloadId);
  if (workload === undefined) {
    io.err(`viommu trace record: unknown workload "${workloadId}" (known: ${workloads.map((w) => w.id).join(", ")})`);
    return EXIT_USAGE;
  }
  const variant = args.variant ?? args.profile?.variant;
  const guest: Partial<GuestInitOptions> = variant === undefined ? {} : { variant };
  const seed = args.seed ?? 1;
  const mode = args.mode ?? args.profile?.mode ?? "nested";
  const recording = recordWorkload({
    plugin,
    plugins: args.plugins,
    workload,
    mode,
    seed,
    guest,
    dma: args.dma ?? args.profile?.dma,
    ram: { base: args.ramBase ?? args.profile?.ramBase ?? 0, size: args.ramBytes ?? args.profile?.ramBytes ?? DEFAULT_RAM_BYTES },
  });
  if (recording.status === "n/a") {
    io.err(`viommu trace record: ${workloadId} does not apply to ${plugin.id}: ${recording.reason}`);
    return EXIT_USAGE;
  }
  const trace = recording.trace;
  if (trace !== undefined) {
    const text = formatTrace(trace);
    if (args.out === undefined || args.out === "-") for (const line of text.trimEnd().split("\n")) io.out(line);
    else {
      try {
        writeFileSync(args.out, text);
      } catch (e) {
        io.err(`viommu trace record: cannot write ${args.out}: ${e instanceof Error ? e.message : String(e)}`);
        return EXIT_USAGE;
      }
    }
  }
  const toFile = args.out !== undefined && args.out !== "-";
  const summary = {
    vendor: plugin.id,
    workload: workloadId,
    mode,
    seed,
    status: recording.status,
    ops: trace?.ops.length ?? 0,
    ...(toFile ? { file: args.out } : {}),
    ...(recording.status === "failed" ? { reason: recording.reason } : {}),
    ...(recording.status === "recorded" && recording.leftovers.length > 0 ? { leftovers: recording.leftovers } : {}),
  };
  const report = (line: string): void => (toFile ? io.out(line) : io.err(line));
  if (args.json) report(JSON.stringify(summary));
  else if (recording.status === "failed") report(`${workloadId} on ${plugin.id} ${mode}: ${recording.reason}${trace === undefined ? "" : ` (${trace.ops.length} operations written)`}`);
  else report(`recorded ${summary.ops} operations of ${workloadId} on ${plugin.id} ${mode}${toFile ? ` into ${args.out}` : ""}`);
  return recording.status === "failed" ? EXIT_FINDING : EXIT_OK;
}
