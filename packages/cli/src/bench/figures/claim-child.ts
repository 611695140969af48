import { measureClaim } from "./claim.js";

/** Run by `viommu bench` in a fresh process, so the resident set it reports is this VM's alone. */
try {
  process.send?.({ ok: true, value: measureClaim() });
} catch (e) {
  process.send?.({ ok: false, error: e instanceof Error ? e.message : String(e) });
}
