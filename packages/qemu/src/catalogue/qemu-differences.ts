import type { Classification, DivergenceContext, Trace } from "@viommu/trace";
import type { QemuVendor } from "../machines/qemu-machine.js";
import { amdViCommandHangAt } from "./amdvi-command-hang.js";
import { amdViWalkLoops } from "./amdvi-walk-hang.js";
import { amdViDifferences } from "./amdvi-differences.js";
import type { QemuDifference } from "./difference.js";
import { smmuv3Differences } from "./smmuv3-differences.js";
import { vtdDifferences, vtdWaitDescriptors } from "./vtd-differences.js";

export type { QemuDifference } from "./difference.js";

/** Every known difference between the model and QEMU 7.2, for all three vendors. */
export const qemuDifferences: readonly QemuDifference[] = [...vtdDifferences, ...amdViDifferences, ...smmuv3Differences];

export function qemuDifferencesFor(vendor: string): QemuDifference[] {
  return qemuDifferences.filter((d) => d.vendor === vendor);
}

/** A known way QEMU fails (hangs, aborts) under a program, with who is wrong. */
export interface QemuFailure {
  readonly id: string;
  readonly vendor: QemuVendor;
  readonly classification: Classification;
  readonly summary: string;
  readonly specification: string;
  readonly qemu: string;
  /**
   * The operation of `trace` QEMU will not come back from, predicted from QEMU's own logic: difftest confirms the
   * prediction once per run on QEMU and then replays only what precedes it (a hang costs a deadline and a restart).
   */
  predict(trace: Trace): number | undefined;
  /** Whether this explains QEMU failing (`reason`) at operation `index` of `trace`. */
  matches(trace: Trace, reason: string, index?: number): boolean;
}

export const qemuFailures: readonly QemuFailure[] = [
  {
    id: "vtd-wait-sw-and-if-aborts",
    vendor: "vtd",
    classification: "target-deviates",
    summary: "An invalidation wait descriptor with both SW and IF set aborts QEMU 7.2 (an assertion: the VM is gone). Found by difftest (seed 1000, cases 647 and 963).",
    specification: "VT-d specification, 6.5.2.8 Invalidation Wait Descriptor: SW (status write) and IF (interrupt) are independent; both set asks for both. No guest input may stop the emulator.",
    qemu: "hw/i386/intel_iommu.c vtd_process_wait_desc(): the SW branch asserts that IF is clear.",
    // An abort is immediate (no deadline to spare), so there is nothing to predict.
    predict: () => undefined,
    matches: (trace, reason) => /vtd_process_wait_desc: Assertion/.test(reason) && vtdWaitDescriptors({ trace, index: trace.ops.length } as DivergenceContext).some((w) => (w.flags & 0x30) === 0x30),
  },
  {
    id: "amdvi-cmd-tail-beyond-buffer-hangs",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A guest write of a CommandBufferTail beyond the command buffer's length hangs QEMU 7.2 for good: the MMIO write never returns (so does a later Control or head write that restarts command processing with such a tail).",
    specification: "AMD IOMMU specification (pub. 48882), Command Buffer Tail Pointer Register: an offset into the buffer the Command Buffer Base Address Register sizes (ComLen); a value outside it is a guest error the IOMMU reports or ignores, not a reason to stop.",
    qemu: "hw/i386/amd_iommu.c amdvi_cmdbuf_run(), called from the tail, head and control writes: 'while (s->cmdbuf_head != s->cmdbuf_tail)' with the head wrapping at the buffer's length, so a tail beyond it is never reached.",
    predict: amdViCommandHangAt,
    matches: (trace, reason, index) => {
      if (!/hung/.test(reason)) return false;
      const at = amdViCommandHangAt(trace);
      return at !== undefined && (index === undefined || index === at);
    },
  },
  {
    id: "amdvi-page-walk-next-level-not-lower-hangs",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A DMA whose page walk meets a present entry with a NextLevel not below its own level (an entry naming its own table, say) hangs QEMU 7.2 for good: the walk never ends and the device's access never returns. Found by difftest (seed 4000, cases 550, 2008, 7179).",
    specification: "AMD IOMMU specification (pub. 48882), I/O page table entries: Next Level is the level of the table the entry points to, lower than the entry's own; a walk is bounded by the DTE's Mode. A table entry that breaks that is an invalid entry the IOMMU reports (IO_PAGE_FAULT), never a reason to stop.",
    qemu: "hw/i386/amd_iommu.c amdvi_page_walk(): 'while (level > 0)' takes each entry's NextLevel as the new level (get_pte_translation_mode()) without checking that it falls.",
    // A hang costs one deadline and a restart; cases are rare (3 in 10,000), so it is recognised, not predicted.
    predict: () => undefined,
    matches: (trace, reason, index) => /hung/.test(reason) && amdViWalkLoops(trace, index),
  },
];

/** The first catalogued failure `trace` will meet on QEMU, and where. */
export function predictedFailure(vendor: string, trace: Trace): { failure: QemuFailure; index: number } | undefined {
  let first: { failure: QemuFailure; index: number } | undefined;
  for (const failure of qemuFailures) {
    if (failure.vendor !== vendor) continue;
    const index = failure.predict(trace);
    if (index !== undefined && (first === undefined || index < first.index)) first = { failure, index };
  }
  return first;
}
