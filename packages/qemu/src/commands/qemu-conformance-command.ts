import type { VendorPlugin } from "@viommu/core";
import { EXIT_FINDING, EXIT_OK, EXIT_USAGE, formatTrace, type CommandIo } from "@viommu/trace";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runQemuConformance, type QemuConformanceReport } from "../conformance/qemu-conformance.js";
import { QEMU_VENDORS, qemuMachine, type QemuVendor } from "../machines/qemu-machine.js";
import { findOnPath } from "../qtest/qemu-process.js";

/** `viommu conformance --target qemu`. */
export interface QemuConformanceArgs {
  /** `--vendor vtd|amd-vi|smmuv3` (several, or all three when absent). */
  readonly vendors?: readonly string[];
  /** The installed plugins. */
  readonly plugins: readonly VendorPlugin[];
  /** `--qemu PATH`: the system emulator (default qemu-system-x86_64 or qemu-system-aarch64 on PATH, by vendor). */
  readonly qemu?: string;
  /** `--seed S` (default 1). */
  readonly seed?: number;
  /** `--case ID` (repeatable): only these cases. */
  readonly only?: readonly string[];
  /** `--traces DIR`: write the trace of every failing case there (`<vendor>-<case>.jsonl`), for `trace replay`. */
  readonly tracesDir?: string;
  readonly json?: boolean;
}

/**
 * Runs the trace-expressible conformance cases on QEMU for each vendor and prints a matrix. Exit 0 when every
 * failure is a catalogued difference (QEMU 7.2 fails some cases by its own deviations; the matrix says which),
 * 1 when a divergence the catalogue does not explain or a QEMU failure appeared, 2 for a usage error (unknown
 * vendor, vendor not installed, QEMU not found).
 */
export async function qemuConformance(io: CommandIo, args: QemuConformanceArgs): Promise<number> {
  const vendors = args.vendors ?? QEMU_VENDORS;
  const unknown = vendors.filter((v) => !QEMU_VENDORS.includes(v as QemuVendor));
  if (unknown.length > 0) {
    io.err(`viommu conformance: QEMU has no ${unknown.join(", ")} IOMMU here (vendors: ${QEMU_VENDORS.join(", ")})`);
    return EXIT_USAGE;
  }
  const missing = vendors.filter((v) => !args.plugins.some((p) => p.id === v));
  if (missing.length > 0) {
    io.err(`viommu conformance: vendor ${missing.join(", ")} is not installed`);
    return EXIT_USAGE;
  }
  for (const vendor of vendors as QemuVendor[]) {
    const binary = args.qemu ?? qemuMachine(vendor)!.binary;
    if (findOnPath(binary) === undefined) {
      io.err(`viommu conformance: ${binary} is not on PATH (give it with --qemu; Debian packages qemu-system-x86 and qemu-system-arm)`);
      return EXIT_USAGE;
    }
  }
  const reports: QemuConformanceReport[] = [];
  for (const vendor of vendors as QemuVendor[]) {
    if (io.progress) io.err(`conformance on QEMU: ${vendor} …`);
    const report = await runQemuConformance({
      vendor,
      plugins: args.plugins,
      seed: args.seed,
      only: args.only,
      ...(args.qemu === undefined ? {} : { binary: args.qemu }),
      onResult: (r) => {
        if (io.progress) io.err(`  ${r.status.padEnd(4)} ${r.id}`);
      },
    });
    reports.push(report);
    if (args.tracesDir !== undefined) {
      for (const r of report.results) {
        if (r.status !== "fail" || r.trace === undefined) continue;
        const file = join(args.tracesDir, `${vendor}-${r.id}.jsonl`);
        try {
          writeFileSync(file, formatTrace(r.trace));
        } catch (e) {
          io.err(`viommu conformance: cannot write ${file}: ${e instanceof Error ? e.message : String(e)}`);
          return EXIT_USAGE;
        }
      }
    }
  }
  const unexplained = reports.some((r) => r.unexplained > 0);
  if (args.json) {
    io.out(JSON.stringify({ target: "qemu", seed: args.seed ?? 1, vendors: reports.map((r) => ({ ...r, results: r.results.map(({ trace: _t, ...rest }) => rest) })) }));
    return unexplained ? EXIT_FINDING : EXIT_OK;
  }
  const ids = [...new Set(reports.flatMap((r) => r.results.map((c) => c.id)))];
  const header = ["case", ...reports.map((r) => r.vendor)];
  const rows = ids.map((id) => [id, ...reports.map((r) => cell(r, id))]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  io.out(line(header));
  io.out(line(widths.map((w) => "-".repeat(w))));
  for (const row of rows) io.out(line(row));
  io.out("");
  for (const r of reports) {
    io.out(`${r.vendor} on ${r.qemu}: ${r.passed} passed, ${r.failed} failed, ${r.notApplicable} n/a${r.unexplained > 0 ? `, ${r.unexplained} NOT IN THE CATALOGUE` : ""}`);
    for (const c of r.results) if (c.status !== "pass") io.out(`  ${c.status === "fail" ? "FAIL" : "n/a "} ${c.id}: ${c.detail ?? ""}`);
  }
  return unexplained ? EXIT_FINDING : EXIT_OK;
}

function cell(report: QemuConformanceReport, id: string): string {
  const r = report.results.find((x) => x.id === id);
  if (r === undefined) return "-";
  if (r.status !== "fail") return r.status;
  if (r.unexplained > 0) return "FAIL (new)";
  const first = r.divergences.find((d) => d.known !== undefined && d.known.classification !== "open");
  return first === undefined ? "FAIL" : `FAIL (${first.known!.classification === "target-deviates" ? "QEMU" : "model"}: ${first.known!.id})`;
}
