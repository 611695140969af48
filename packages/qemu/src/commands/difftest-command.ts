import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { VendorPlugin } from "@viommu/core";
import { EXIT_FINDING, EXIT_OK, EXIT_USAGE, formatTrace, type CommandIo } from "@viommu/trace";
import { runDifftest, type DifftestCase } from "../difftest/difftest.js";
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
  readonly json?: boolean;
}

/**
 * Differential fuzzing of the model against QEMU. Exit 0 when every divergence was catalogued, 1 when a case found
 * something new (an unexplained divergence, QEMU failing or hanging, the model throwing: each written as a minimal
 * trace `trace replay --target qemu FILE` reproduces), 2 for a usage error.
 */
export async function difftest(io: CommandIo, args: DifftestArgs): Promise<number> {
  if (!QEMU_VENDORS.includes(args.vendor as QemuVendor)) {
    io.err(`viommu difftest: QEMU has no ${args.vendor} IOMMU here (vendors: ${QEMU_VENDORS.join(", ")})`);
    return EXIT_USAGE;
  }
  if (args.target !== undefined && args.target !== "qemu") {
    io.err(`viommu difftest: --target ${String(args.target)} is not a target difftest knows (qemu)`);
    return EXIT_USAGE;
  }
  const vendor = args.vendor as QemuVendor;
  const binary = args.qemu ?? qemuMachine(vendor)!.binary;
  if (findOnPath(binary) === undefined) {
    io.err(`viommu difftest: ${binary} is not on PATH (give it with --qemu; Debian packages qemu-system-x86 and qemu-system-arm)`);
    return EXIT_USAGE;
  }
  const seed = args.seed ?? 1;
  const cases = args.cases ?? 100;
  if (!Number.isSafeInteger(cases) || cases < 1) {
    io.err(`viommu difftest: --cases ${cases} is not a positive number`);
    return EXIT_USAGE;
  }
  const outDir = args.outDir ?? ".";
  let writeError: string | undefined;
  const result = await runDifftest({
    vendor,
    plugins: args.plugins,
    seed,
    cases,
    shrink: args.shrink,
    ...(args.qemu === undefined ? {} : { binary: args.qemu }),
    onCase: (c) => {
      if (io.progress && (c.index + 1) % 50 === 0) io.err(`  ${c.index + 1}/${cases} cases`);
    },
    onFinding: (c: DifftestCase) => {
      const file = join(outDir, `difftest-${vendor}-${seed}-${c.index}.jsonl`);
      try {
        writeFileSync(file, formatTrace(c.trace!));
        return file;
      } catch (e) {
        writeError = `cannot write ${file}: ${e instanceof Error ? e.message : String(e)}`;
        return undefined;
      }
    },
  });
  if (!result.ok) {
    io.err(`viommu difftest: ${result.error}`);
    return EXIT_USAGE;
  }
  if (writeError !== undefined) io.err(`viommu difftest: ${writeError}`);
  const r = result.report;
  if (args.json) {
    io.out(JSON.stringify({ ...r, findings: r.findings.map(({ trace, ...rest }) => ({ ...rest, ops: trace?.ops.length })) }));
    return r.findings.length > 0 ? EXIT_FINDING : EXIT_OK;
  }
  io.out(`difftest ${vendor} seed ${seed}: ${r.cases} cases on ${r.qemu} in ${(r.ms / 1000).toFixed(1)} s`);
  io.out(`  ${Object.entries(r.byStatus).map(([k, n]) => `${k} ${n}`).join(", ")}`);
  io.out(`  QEMU started ${r.qemuStarts} time${r.qemuStarts === 1 ? "" : "s"}; ${r.predictedFailures} case${r.predictedFailures === 1 ? "" : "s"} stopped before a catalogued hang; catalogue lookups ${(r.catalogueMs / 1000).toFixed(1)} s`);
  for (const [id, n] of Object.entries(r.byKnown).sort((a, b) => b[1] - a[1])) io.out(`  catalogued ${id}: ${n} cases`);
  for (const f of r.findings) {
    io.out(`FINDING case ${f.index} (${f.workload}, ${f.status}): ${f.detail ?? ""}${f.first ? ` ${f.first.op} expected ${f.first.expected} actual ${f.first.actual}` : ""}`);
    io.out(`  mutations: ${f.mutations.join("; ")}`);
    if (f.file !== undefined) io.out(`  minimal trace (${f.trace?.ops.length ?? 0} operations): ${f.file} — viommu trace replay ${f.file} --target qemu`);
  }
  return r.findings.length > 0 ? EXIT_FINDING : EXIT_OK;
}
