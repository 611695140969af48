import type { VendorPlugin } from "@viommu/core";
import { runDemo, type DemoReport } from "../demo.js";
import type { Io } from "../io.js";

/** `viommu demo`: the main job on every selected vendor, a report each. Exit 1 when a step failed. */
export function demoCommand(io: Io, plugins: readonly VendorPlugin[], installed: readonly VendorPlugin[], seed: number, json: boolean): number {
  const reports: DemoReport[] = [];
  for (const plugin of plugins) {
    if (io.progress) io.err(`demo: ${plugin.id} …`);
    reports.push(runDemo(plugin, installed, seed));
  }
  if (json) {
    io.out(JSON.stringify({ seed, vendors: reports }));
    return reports.every((r) => r.ok) ? 0 : 1;
  }
  for (const r of reports) {
    io.out(`== ${r.vendor}: ${r.name} — ${r.ok ? "ok" : "FAILED"}`);
    for (const s of r.steps) io.out(`  ${s.ok ? "ok  " : "FAIL"} ${s.step.padEnd(18)} ${s.detail}`);
    io.out(`       VMM interventions: ${r.vmmInterventions}`);
  }
  return reports.every((r) => r.ok) ? 0 : 1;
}
