import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { VendorPlugin } from "@viommu/core";
import { EXIT_FINDING, EXIT_OK, EXIT_USAGE, formatTrace, type CommandIo } from "@viommu/trace";
import { mergeDifftestReports, runDifftest, subShard, type DifftestCase, type DifftestReport, type DifftestResult, type DifftestShard } from "../difftest/difftest.js";
import { QEMU_VENDORS, qemuMachine, type QemuVendor } from "../machines/qemu-machine.js";
import { findOnPath } from "../qtest/qemu-process.js";

/** `viommu difftest --vendor V --target qemu --seed S --cases N`. */
export interface DifftestArgs {
  /** `--vendor vtd|amd-vi|smmuv3`. */
  readonly vendor: string;
  /** `--target qemu`: the only target difftest compares the model with (default qemu). */
  readonly target?: "qemu";
  readonly plugins: readonly VendorPlugin[];
  /** `--seed S` (default 1): the run is a function of it. */
  readonly seed?: number;
  /** `--cases N` (default 100). */
  readonly cases?: number;
  /** `--qemu PATH`. */
  readonly qemu?: string;
  /** `--out DIR` (default the working directory): where each finding's minimal trace is written. */
  readonly outDir?: string;
  /** `--no-shrink`: write findings whole. */
  readonly shrink?: boolean;
  /** `--shard i/n`: only this slice of the cases. */
  readonly shard?: DifftestShard;
  readonly json?: boolean;
}

/**
 * Runs the slices of a campaign elsewhere (the command line's `--workers N`: worker threads, each with its own
 * QEMU) and returns their results in the order given.
 */
export type DifftestSliceRunner = (shards: readonly DifftestShard[]) => Promise<readonly DifftestSliceResult[]>;

/** A slice's result, with the first trace it could not write. */
export type DifftestSliceResult = DifftestResult & { readonly writeError?: string };

/** Why the arguments cannot run (a one-line message), or undefined. */
export function difftestUsageError(args: DifftestArgs): string | undefined {
  if (!QEMU_VENDORS.includes(args.vendor as QemuVendor)) return `QEMU has no ${args.vendor} IOMMU here (vendors: ${QEMU_VENDORS.join(", ")})`;
  if (args.target !== undefined && args.target !== "qemu") return `--target ${String(args.target)} is not a target difftest knows (qemu)`;
  const binary = args.qemu ?? qemuMachine(args.vendor as QemuVendor)!.binary;
  if (findOnPath(binary) === undefined) return `${binary} is not on PATH (give it with --qemu; Debian packages qemu-system-x86 and qemu-system-arm)`;
  const cases = args.cases ?? 100;
  if (!Number.isSafeInteger(cases) || cases < 1) return `--cases ${cases} is not a positive number`;
  return undefined;
}

/**
 * One slice of a campaign with its findings' minimal traces written to the output directory (named by seed and
 * case index, so slices never write the same file). A trace that cannot be written is named in `writeError`.
 */
export async function difftestSlice(args: DifftestArgs, shard: DifftestShard | undefined, onCase?: (c: DifftestCase) => void): Promise<DifftestSliceResult> {
  const vendor = args.vendor as QemuVendor;
  const seed = args.seed ?? 1;
  const outDir = args.outDir ?? ".";
  let writeError: string | undefined;
  const result = await runDifftest({
    vendor,
    plugins: args.plugins,
    seed,
    cases: args.cases ?? 100,
    shrink: args.shrink,
    ...(shard === undefined ? {} : { shard }),
    ...(args.qemu === undefined ? {} : { binary: args.qemu }),
    ...(onCase === undefined ? {} : { onCase }),
    onFinding: (c: DifftestCase) => {
      const file = join(outDir, `difftest-${vendor}-${seed}-${c.index}.jsonl`);
      try {
        writeFileSync(file, formatTrace(c.trace!));
        return file;
      } catch (e) {
        writeError ??= `cannot write ${file}: ${e instanceof Error ? e.message : String(e)}`;
        return undefined;
      }
    },
  });
  return writeError === undefined ? result : { ...result, writeError };
}

/**
 * Differential fuzzing of the model against QEMU. Exit 0 when every divergence was catalogued, 1 when a case found
 * something new (an unexplained divergence, QEMU failing or hanging, the model throwing: each written as a minimal
 * trace `trace replay --target qemu FILE` reproduces), 2 for a usage error.
 */
export async function difftest(io: CommandIo, args: DifftestArgs, slices?: { readonly workers: number; readonly run: DifftestSliceRunner }): Promise<number> {
  const usage = difftestUsageError(args);
  if (usage !== undefined) {
    io.err(`viommu difftest: ${usage}`);
    return EXIT_USAGE;
  }
  const t0 = Date.now();
  let parts: DifftestReport[];
  if (slices === undefined || slices.workers <= 1) {
    let done = 0;
    const result = await difftestSlice(args, args.shard, () => {
      if (io.progress && ++done % 50 === 0) io.err(`  ${done} cases`);
    });
    if (!result.ok) {
      io.err(`viommu difftest: ${result.error}`);
      return EXIT_USAGE;
    }
    if (result.writeError !== undefined) io.err(`viommu difftest: ${result.writeError}`);
    parts = [result.report];
  } else {
    const shards = Array.from({ length: slices.workers }, (_, j) => subShard(args.shard, j + 1, slices.workers));
    const results = await slices.run(shards);
    parts = [];
    for (const result of results) {
      if (!result.ok) {
        io.err(`viommu difftest: ${result.error}`);
        return EXIT_USAGE;
      }
      if (result.writeError !== undefined) io.err(`viommu difftest: ${result.writeError}`);
      parts.push(result.report);
    }
  }
  const vendor = args.vendor;
  const seed = args.seed ?? 1;
  const r = mergeDifftestReports(parts, Date.now() - t0, args.shard);
  if (args.json) {
    io.out(JSON.stringify({ ...r, findings: r.findings.map(({ trace, ...rest }) => ({ ...rest, ops: trace?.ops.length })) }));
    return r.findings.length > 0 ? EXIT_FINDING : EXIT_OK;
  }
  io.out(`difftest ${vendor} seed ${seed}${r.shard === undefined ? "" : ` shard ${r.shard}`}: ${r.cases} cases on ${r.qemu} in ${(r.ms / 1000).toFixed(1)} s`);
  io.out(`  ${Object.entries(r.byStatus).map(([k, n]) => `${k} ${n}`).join(", ")}`);
  io.out(`  QEMU started ${r.qemuStarts} time${r.qemuStarts === 1 ? "" : "s"}; ${r.predictedFailures} case${r.predictedFailures === 1 ? "" : "s"} stopped before a catalogued hang; catalogue lookups ${(r.catalogueMs / 1000).toFixed(1)} s`);
  for (const [id, n] of Object.entries(r.byKnown).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))) io.out(`  catalogued ${id}: ${n} cases`);
  for (const f of r.findings) {
    io.out(`FINDING case ${f.index} (${f.workload}, ${f.status}): ${f.detail ?? ""}${f.first ? ` ${f.first.op} expected ${f.first.expected} actual ${f.first.actual}` : ""}`);
    io.out(`  mutations: ${f.mutations.join("; ")}`);
    if (f.file !== undefined) io.out(`  minimal trace (${f.trace?.ops.length ?? 0} operations): ${f.file} — viommu trace replay ${f.file} --target qemu`);
  }
  return r.findings.length > 0 ? EXIT_FINDING : EXIT_OK;
}
