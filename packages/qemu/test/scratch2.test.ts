import { it } from "vitest";
import { writeFileSync } from "node:fs";
import { vtdPlugin } from "@viommu/vtd/plugin";
import { amdViPlugin } from "@viommu/amd-vi/plugin";
import { smmuv3Plugin } from "@viommu/smmuv3/plugin";
import { formatTrace, opText } from "@viommu/trace";
import { runDifftest } from "../src/index.js";
const v = (process.env.V ?? "vtd") as "vtd";
it("one", async () => {
  const only = Number(process.env.C);
  const r = await runDifftest({ vendor: v, plugins: [vtdPlugin, amdViPlugin, smmuv3Plugin], seed: 1, cases: only + 1, shrink: true,
    onFinding: (c) => { if (c.index !== only) return undefined; const f = `/tmp/qx/f-${v}-${c.index}.jsonl`; writeFileSync(f, formatTrace(c.trace!)); return f; } });
  if (!r.ok) throw new Error(r.error);
  const f = r.report.findings.find((x) => x.index === only);
  if (f) for (const [i, op] of f.trace!.ops.entries()) console.log(i + 2, opText(op).slice(0, 200));
}, 600000);
