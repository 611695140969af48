import { amdViPlugin } from "@viommu/amd-vi/plugin";
import { smmuv3Plugin } from "@viommu/smmuv3/plugin";
import { vtdPlugin } from "@viommu/vtd/plugin";
import { expect, it } from "vitest";
import { runQemuConformance, type QemuVendor } from "../src/index.js";
import { describeWith, qemuArm, qemuX86, SEED } from "./support.js";

const plugins = [vtdPlugin, amdViPlugin, smmuv3Plugin];

/**
 * What QEMU 7.2 does with each case: pass, n/a, or fail with the catalogued difference that is first against it.
 * A new divergence, a case changing state or a catalogue entry that stops matching fails here.
 */
const expected: Record<QemuVendor, Record<string, string>> = {
  vtd: {
    "bring-up": "pass",
    "mapped-dma-lands": "pass",
    "unmapped-dma-blocked": "pass",
    "dma-fault-reported": "pass",
    "readonly-dma-write-blocked": "fail vtd-readonly-write-cached-no-fault",
    "unmap-invalidates": "pass",
    "devices-keep-their-domains": "pass",
    "fault-reporting-overflow": "pass",
    "interrupt-remapping-delivers": "n/a",
    "interrupt-remapping-fault-reported": "fail vtd-interrupt-fault-not-recorded",
  },
  "amd-vi": {
    "bring-up": "pass",
    "mapped-dma-lands": "pass",
    "unmapped-dma-blocked": "pass",
    "dma-fault-reported": "fail amdvi-no-event-for-missing-pte",
    "readonly-dma-write-blocked": "fail amdvi-no-event-for-leaf-permission",
    "unmap-invalidates": "fail amdvi-no-event-for-missing-pte",
    "devices-keep-their-domains": "fail amdvi-no-event-for-missing-pte",
    "fault-reporting-overflow": "fail amdvi-no-event-for-missing-pte",
    "interrupt-remapping-delivers": "n/a",
    "interrupt-remapping-fault-reported": "fail amdvi-no-event-for-interrupt",
  },
  smmuv3: {
    "bring-up": "pass",
    "mapped-dma-lands": "pass",
    "unmapped-dma-blocked": "pass",
    "dma-fault-reported": "fail smmuv3-event-per-access",
    "readonly-dma-write-blocked": "fail smmuv3-event-per-access",
    "unmap-invalidates": "fail smmuv3-event-per-access",
    "devices-keep-their-domains": "fail smmuv3-event-per-access",
    "fault-reporting-overflow": "fail smmuv3-evtq-full-as-abort",
    "interrupt-remapping-delivers": "n/a",
    "interrupt-remapping-fault-reported": "n/a",
  },
};

for (const [vendor, tool] of [["vtd", qemuX86], ["amd-vi", qemuX86], ["smmuv3", qemuArm]] as const) {
  describeWith(tool, `conformance on QEMU: ${vendor}`, () => {
    it("every case passes, fails by a catalogued difference, or is n/a with its reason; nothing is unexplained", async () => {
      const report = await runQemuConformance({ vendor, plugins, seed: SEED });
      const got = Object.fromEntries(
        report.results.map((r) => {
          if (r.status !== "fail") return [r.id, r.status];
          const first = r.divergences.find((d) => d.known === undefined || d.known.classification !== "open");
          return [r.id, `fail ${first?.known?.id ?? `UNEXPLAINED: ${r.detail}`}`];
        }),
      );
      expect(got).toEqual(expected[vendor]);
      expect(report.unexplained, report.results.map((r) => `${r.id}: ${r.detail}`).join("\n")).toBe(0);
      for (const r of report.results) if (r.status === "n/a") expect(r.detail).toBeTruthy();
    });
  });
}
