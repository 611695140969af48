/**
 * What a vendor plugin declares it can do. The conformance suite reads these: a case whose capability is
 * absent reports "n/a" with the vendor's reason, never a silent pass.
 */
export interface Capabilities {
  /** Guest-owned stage 1 over a host stage 2 (hardware nesting). */
  readonly nested: boolean;
  /** Emulated vIOMMU with shadowing (caching mode): the VMM maps guest translations into a host domain. */
  readonly shadow: boolean;
  readonly pasid: boolean;
  readonly interruptRemapping: boolean;
  /** Interrupt remapping with DMA translation off (guests above 255 vCPUs, confidential guests). */
  readonly irOnly: boolean;
  /** Guest-owned queues the hardware consumes directly (vQUEUE / HW queue). */
  readonly vqueue: boolean;
  /** Confidential-guest handling of shared structures (SEV-SNP). */
  readonly confidentialShared: boolean;
  readonly migration: boolean;
  /** A guest-visible command/invalidation queue (absent for hypercall-driven IOMMUs). */
  readonly commandQueue: boolean;
  /**
   * Guest-visible fault reporting with an overflow indication: an event log in guest memory, or fault
   * recording registers. Absent for IOMMUs that report faults only to the hypervisor.
   */
  readonly eventLog: boolean;
  /**
   * The event log lives in guest memory at a base and size the driver can reprogram (head and tail reset).
   * Optional to declare: absent means false.
   */
  readonly eventLogRebase?: boolean;
  /** Event interrupts that can reach the guest without the VMM injecting them. */
  readonly directEventInterrupts: boolean;
  /** An ACPI table describing the IOMMU (DMAR, IVRS, IORT). */
  readonly acpi: boolean;
  /**
   * Optional (absent means false). The host unit tracks DMA writes in its stage-2 (or only) table for live
   * migration: IOMMU_HWPT_ALLOC_DIRTY_TRACKING, SET_DIRTY_TRACKING and GET_DIRTY_BITMAP work on its domains.
   */
  readonly dirtyTracking?: boolean;
  /** Optional. A process's CPU page table bound to a device PASID (shared virtual addressing). */
  readonly sva?: boolean;
  /**
   * Optional. Recoverable I/O page faults: a PRI-capable device's fault reaches the guest as a page request and
   * the guest's response lets the device retry (page request queue, PPR log, PRI queue or stalls).
   */
  readonly pageRequests?: boolean;
  /** Optional. A passed-through device's remapped MSI reaches a running vCPU without the VMM (posting). */
  readonly postedInterrupts?: boolean;
  /**
   * Optional. Device DMA to a confidential guest's private page is blocked by the host's check of page
   * ownership (SEV-SNP's RMP) and reported as the hardware reports it.
   */
  readonly privateMemoryProtection?: boolean;
  /**
   * Optional. The emulated unit's stale-translation audit (`VmmDeviceOptions.audit`) and the reference driver's
   * `skipInvalidation` classes it catches.
   */
  readonly audit?: boolean;
  /** With `audit`: the invalidation classes the reference driver can skip and the audit catches. */
  readonly auditClasses?: readonly ("iotlb" | "context" | "interrupt")[];
  /** Leaf page sizes the formats produce, as log2. */
  readonly pageShifts: readonly number[];
  readonly inputBits: number;
  readonly outputBits: number;
  /** Why a capability is absent, by capability name: shown as the n/a reason. */
  readonly reasons?: Readonly<Partial<Record<CapabilityName, string>>>;
}

/** Every boolean capability, in the order tools list them. */
export const CAPABILITY_NAMES = [
  "nested",
  "shadow",
  "pasid",
  "interruptRemapping",
  "irOnly",
  "vqueue",
  "confidentialShared",
  "migration",
  "commandQueue",
  "eventLog",
  "eventLogRebase",
  "directEventInterrupts",
  "acpi",
  "dirtyTracking",
  "sva",
  "pageRequests",
  "postedInterrupts",
  "privateMemoryProtection",
  "audit",
] as const;

export type CapabilityName = (typeof CAPABILITY_NAMES)[number];

/**
 * What is wrong with a plugin's declaration: every capability it does not claim (false or left out) needs its
 * reason, which the conformance suite shows as the case's n/a. Empty when the declaration is complete.
 */
export function capabilityProblems(capabilities: Capabilities): string[] {
  const problems: string[] = [];
  for (const name of CAPABILITY_NAMES) {
    if (capabilities[name] === true) continue;
    const reason = capabilities.reasons?.[name];
    if (typeof reason !== "string" || reason.trim() === "") problems.push(`capability ${name} is ${capabilities[name] === false ? "declared absent" : "left out"} without a reason in capabilities.reasons`);
  }
  return problems;
}
