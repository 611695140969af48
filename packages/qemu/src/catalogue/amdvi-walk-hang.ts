import type { Trace } from "@viommu/trace";
import { qemuAmdWalk } from "./amdvi-qemu-walk.js";

/**
 * Whether QEMU 7.2's amd-iommu walks for ever for the DMA at `index` of `trace` (every DMA when `index` is
 * undefined): amdvi_page_walk() takes each entry's Next Level as the new level without requiring it to be lower,
 * so a present entry whose Next Level does not fall (one that names its own table, or a table whose entry climbs
 * back) never ends. The walk is followed as QEMU's (see qemuAmdWalk).
 */
export function amdViWalkLoops(trace: Trace, index?: number): boolean {
  const loops = (at: number): boolean => {
    const op = trace.ops[at]!;
    return op.op === "dma" && qemuAmdWalk(trace, at, op.rid, op.iova, op.dir === "write").kind === "loops";
  };
  if (index !== undefined) return loops(index);
  return trace.ops.some((_, i) => loops(i));
}
