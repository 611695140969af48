import type { Trace, TraceOp } from "@viommu/trace";

/**
 * Delta debugging (Zeller's ddmin) over a program's operations: removes chunks while `reproduces` still sees the
 * same finding, halving the chunk size when no chunk can go, until single operations cannot be removed or the
 * budget of runs is spent. Returns the smallest reproducing trace found (undefined when none smaller was).
 */
export async function shrink(ops: readonly TraceOp[], reproduces: (candidate: readonly TraceOp[]) => Promise<Trace | undefined>, budget: number): Promise<Trace | undefined> {
  let current = ops.slice();
  let best: Trace | undefined;
  let runs = 0;
  let chunks = 2;
  while (current.length >= 2 && runs < budget) {
    const size = Math.ceil(current.length / chunks);
    let removed = false;
    for (let start = 0; start < current.length && runs < budget; start += size) {
      const candidate = [...current.slice(0, start), ...current.slice(start + size)];
      if (candidate.length === 0) continue;
      runs++;
      const trace = await reproduces(candidate);
      if (trace !== undefined) {
        current = candidate;
        best = trace;
        chunks = Math.max(chunks - 1, 2);
        removed = true;
        break;
      }
    }
    if (!removed) {
      if (size <= 1) break;
      chunks = Math.min(chunks * 2, current.length);
    }
  }
  return best;
}
