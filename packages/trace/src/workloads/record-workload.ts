import type { Trace } from "../format/trace-header.js";
import { RecordingSession, type RecordOptions } from "../record/recording-session.js";
import { WorkloadFailure, type Workload } from "./workload.js";

/**
 * Requester ids the workloads give their devices, in order: bus 0, function 0, slots 4 to 19. Every machine a
 * trace is meant for has them free (slot 0 is a host bridge, low slots may hold an IOMMU's own function, 31 an
 * LPC bridge).
 */
export const DEFAULT_RIDS: readonly number[] = Array.from({ length: 16 }, (_, i) => (4 + i) << 3);

/** Where workloads put their data pages: 16 MiB into guest RAM. */
export const DATA_OFFSET = 16 * 2 ** 20;

export interface WorkloadRecordOptions extends Omit<RecordOptions, "rids"> {
  readonly workload: Workload;
  /** Requester ids to take the workload's devices from (default DEFAULT_RIDS). */
  readonly rids?: readonly number[];
}

export type WorkloadRecording =
  | { readonly status: "recorded"; readonly trace: Trace; readonly leftovers: readonly string[] }
  /** The vendor lacks a capability the workload needs. */
  | { readonly status: "n/a"; readonly reason: string }
  /** The model broke the workload's rule (a model defect), or could not be set up; the trace up to there. */
  | { readonly status: "failed"; readonly reason: string; readonly trace?: Trace };

/** Records `workload` on the model: the system, the driver's bring-up, the program, with the model's answers. */
export function recordWorkload(options: WorkloadRecordOptions): WorkloadRecording {
  const { workload, plugin } = options;
  const missing = workload.requires.filter((cap) => !plugin.capabilities[cap]);
  if (missing.length > 0) return { status: "n/a", reason: missing.map((cap) => `${cap}: ${plugin.capabilities.reasons?.[cap] ?? "not supported"}`).join("; ") };
  const pool = options.rids ?? DEFAULT_RIDS;
  if (pool.length < workload.devices) return { status: "failed", reason: `${workload.id} needs ${workload.devices} devices; ${pool.length} requester ids were given` };
  const rids = pool.slice(0, workload.devices);
  const started = RecordingSession.start({
    ...options,
    rids,
    guest: { ...options.guest, ...workload.guest },
    description: options.description ?? `${workload.id}: ${workload.rule}`,
  });
  if (!started.ok) return { status: "failed", reason: `setting the model up: ${started.error.errno} ${started.error.message}` };
  const session = started.value;
  try {
    session.mark(workload.id);
    workload.run({ session, rids, dataBase: options.ram.base + DATA_OFFSET, seed: options.seed ?? 1 });
  } catch (e) {
    const trace = session.finish().trace;
    if (e instanceof WorkloadFailure) return { status: "failed", reason: `the model broke the rule: ${e.message}`, trace };
    return { status: "failed", reason: `exception escaped: ${e instanceof Error ? `${e.message}\n${e.stack ?? ""}` : String(e)}`, trace };
  }
  const { trace, leftovers } = session.finish();
  return { status: "recorded", trace, leftovers };
}
