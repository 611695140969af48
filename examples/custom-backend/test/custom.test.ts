import { describe, expect, it } from "vitest";
import { runConformance } from "@viommu/conformance";
import { customPlugin } from "../src/index.js";

describe("a custom backend built on the mock", () => {
  it("passes every applicable conformance case and reports its missing capabilities as n/a with reasons", () => {
    const report = runConformance(customPlugin, { seed: Number(process.env.VIOMMU_SEED ?? 3) });
    expect(report.results.filter((r) => r.status === "fail")).toEqual([]);
    const na = report.results.filter((r) => r.status === "n/a");
    // The mock's own n/a cases, and those of the two capabilities this backend gives up.
    const mine = ["cross-vm-isolation-shadow", "shadow-interrupt-remap-keeps-translation", "shadow-mode-translation", "shadow-type1-entry-limit", "vqueue-invalidation-without-exits"];
    expect(na.map((r) => r.id).sort()).toEqual([...mine, "device-interrupt-posted", "event-interrupt-direct", "page-request-resolved", "pasid-attach-separates", "sva-shares-process-addresses"].sort());
    expect(na.filter((r) => mine.includes(r.id)).every((r) => /this backend/.test(r.detail ?? ""))).toBe(true);
  });
});
