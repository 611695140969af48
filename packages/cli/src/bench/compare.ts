import type { FigureResult } from "./harness.js";

/** A saved `viommu bench --json` run: its figures by name. */
export function readSavedRun(text: string, source: string): Map<string, FigureResult> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`${source}: not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  const figures = (doc as { figures?: unknown }).figures;
  if (!Array.isArray(figures)) throw new Error(`${source}: no "figures" array (is it the output of viommu bench --json?)`);
  const out = new Map<string, FigureResult>();
  for (const f of figures) {
    if (typeof f === "object" && f !== null && typeof (f as FigureResult).name === "string" && typeof (f as FigureResult).value === "number") out.set((f as FigureResult).name, f as FigureResult);
  }
  return out;
}

/** The change from `before` to `now`, as a signed percentage ("+12.5%"), or "" when either is missing or zero. */
export function change(before: number | undefined, now: number | undefined): string {
  if (before === undefined || now === undefined || before === 0 || !Number.isFinite(before) || !Number.isFinite(now)) return "";
  const pct = ((now - before) / Math.abs(before)) * 100;
  return `${pct >= 0 ? "+" : ""}${pct.toFixed(1)}%`;
}

/** One row per figure of this run: the saved value and ratio, and the change of each. */
export function compareRows(now: readonly FigureResult[], saved: Map<string, FigureResult>): string[][] {
  return now.map((f) => {
    const b = saved.get(f.name);
    return [f.name, b === undefined ? "(new)" : String(b.value), String(f.value), change(b?.value, f.value), b?.ratio === undefined ? "" : String(b.ratio), f.ratio === undefined ? "" : String(f.ratio), change(b?.ratio, f.ratio)];
  });
}
