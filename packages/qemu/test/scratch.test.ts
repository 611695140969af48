import { it } from "vitest";
import { vtdPlugin } from "@viommu/vtd/plugin";
import { amdViPlugin } from "@viommu/amd-vi/plugin";
import { smmuv3Plugin } from "@viommu/smmuv3/plugin";
import { runDifftest } from "../src/index.js";
const v = (process.env.V ?? "vtd") as "vtd";
it("difftest " + v, async () => {
  const r = await runDifftest({ vendor: v, plugins: [vtdPlugin, amdViPlugin, smmuv3Plugin], seed: Number(process.env.S ?? 1), cases: Number(process.env.N ?? 20), onCase: (c) => console.log(c.index, c.workload, c.status, c.known.join(","), c.detail ?? "", c.first ? `${c.first.op} exp ${c.first.expected.slice(0,40)} act ${c.first.actual.slice(0,40)}` : "", c.trace ? `minimal ${c.trace.ops.length}` : "", "|", c.mutations.join("; ")) });
  if (!r.ok) throw new Error(r.error);
  console.log(JSON.stringify({ ...r.report, findings: r.report.findings.length }));
}, 600000);
