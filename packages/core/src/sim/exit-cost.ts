/**
 * What a VM exit costs the guest, so that figures of a trapped path (every doorbell an MMIO exit to the VMM) can
 * be compared with a guest-owned path (no exit) as hardware would see them. The model runs both in one process
 * where an "exit" is a function call; it counts exits (`VirtualMachine.exits`) and charges each kind its cost
 * here (`VirtualMachine.exitNanoseconds`), which a figure adds to the time it measured, or not.
 *
 * Default source: C. Dall, S.-W. Li, J. T. Lim, J. Nieh, G. Koloventzos, "ARM Virtualization: Performance and
 * Architectural Implications", ISCA 2016, Table III (microbenchmarks, cycles): KVM on ARM (APM X-Gene, 2.4 GHz)
 * takes 7,370 cycles for a trapped access to an emulated device register handled in the kernel (their
 * "interrupt controller trap": exit, decode, emulate, return) and 6,500 cycles for a hypercall round trip.
 * At 2.4 GHz that is 3.07 µs and 2.71 µs. A register emulated in a user-space VMM (QEMU's SMMUv3 command queue
 * doorbell) costs more than the kernel-handled trap, so the default is a lower bound for such exits.
 */
export interface ExitCost {
  /** A trapped MMIO access (read or write of an emulated register). */
  readonly mmioNs: number;
  /** A hypercall. */
  readonly hypercallNs: number;
  /** A trapped PCI configuration access (ECAM is MMIO; 0xCF8/0xCFC port I/O costs about the same). */
  readonly pciConfigNs: number;
  /** The VMM injecting an interrupt (not a guest exit: free by default). */
  readonly injectionNs: number;
}

/** The cited default (see above). */
export const KVM_EXIT_COST: ExitCost = Object.freeze({ mmioNs: 3070, hypercallNs: 2710, pciConfigNs: 3070, injectionNs: 0 });

/** Exits cost nothing: the model's own time alone. */
export const NO_EXIT_COST: ExitCost = Object.freeze({ mmioNs: 0, hypercallNs: 0, pciConfigNs: 0, injectionNs: 0 });

/** Exit counts by kind (the shape of `VirtualMachine.exits`). */
export interface ExitCounts {
  readonly mmio: number;
  readonly hypercall: number;
  readonly injections: number;
  readonly pciConfig: number;
}

/** The time `counts` exits cost under `cost`, in nanoseconds. */
export function exitNanoseconds(counts: ExitCounts, cost: ExitCost): number {
  return counts.mmio * cost.mmioNs + counts.hypercall * cost.hypercallNs + counts.pciConfig * cost.pciConfigNs + counts.injections * cost.injectionNs;
}

/** Checks a configured cost: every field a finite, non-negative number of nanoseconds. */
export function exitCostProblem(cost: ExitCost): string | undefined {
  for (const field of ["mmioNs", "hypercallNs", "pciConfigNs", "injectionNs"] as const) {
    const v = cost[field];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) return `exit cost ${field} is ${String(v)}, not a non-negative number of nanoseconds`;
  }
  return undefined;
}
