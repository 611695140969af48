import type { Result } from "../errors/errno.js";
import type { MsiMessage } from "../irq/interrupts.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import type { PermBits } from "../translate/access.js";
import type { VirtualMachine } from "../platform/vm.js";
import type { PageSource } from "../platform/guest-pages.js";
import type { SkippedInvalidation } from "./debug-tools.js";

/** An event the guest read from its IOMMU's log, decoded by the vendor driver into a neutral shape. */
export interface GuestEvent {
  readonly kind: "dma-fault" | "command-error" | "global-error" | "interrupt-fault" | "page-request" | "other";
  /** The architecture's own code (fault reason, event type, error code) and its spec name. */
  readonly code: number;
  readonly name: string;
  /** The guest-visible requester id the event names, when it names one. */
  readonly rid?: number;
  readonly address?: number;
  readonly write?: boolean;
  /** The PASID (SubstreamID) the event names, when it carries one. */
  readonly pasid?: number;
  /** A page request's group index (PRGI, or the stall tag) and whether it is the group's last request. */
  readonly group?: number;
  readonly last?: boolean;
  /** The raw record as 64-bit words, lowest first. */
  readonly raw: readonly string[];
}

export interface GuestInitOptions {
  /** DMA translation on (false: IR-only, DMA untranslated). */
  readonly translation: boolean;
  readonly interruptRemapping: boolean;
  /** x2APIC destinations (32-bit APIC ids) in interrupt remapping. */
  readonly x2apic?: boolean;
  /** Entries in the event log / fault queue the driver allocates, where the architecture lets it choose. */
  readonly eventLogEntries?: number;
  /** The vector and APIC id the driver programs for its event interrupt. */
  readonly eventVector?: number;
  readonly eventDestination?: number;
  /** Prefer one of the architecture's alternative table modes, by a name the vendor documents. */
  readonly variant?: string;
  /**
   * A deliberately broken driver: it never sends this class of invalidation (the bug the stale-translation
   * audit exists to catch). Absent in every real use.
   */
  readonly skipInvalidation?: SkippedInvalidation;
}

export type GuestDomainId = number;

/**
 * The reference guest driver behind a vendor-neutral face: it programs the vendor's device exactly as the
 * Linux driver does (its own structures in guest memory, its own command encodings), and the conformance
 * suite and demo drive every vendor through this face alone. Every method is synchronous: the model has no
 * concurrency between the guest and the VMM.
 */
export interface GuestIommuDriver {
  readonly vendor: string;
  /** Mandatory. Discovers the device and brings it up (tables, queues, event log, enables). */
  init(options: GuestInitOptions): Result<void>;
  /** Mandatory. A new translation domain (empty page table). */
  createDomain(): Result<GuestDomainId>;
  /** Mandatory. Points a device (guest requester id) at a domain and flushes what it cached. */
  attach(rid: number, domain: GuestDomainId): Result<void>;
  /** Mandatory. The device's DMA is blocked afterwards. */
  detach(rid: number): Result<void>;
  /** Mandatory. Maps [iova, iova + length) to guest memory at `gpa` with `perms` (Perm bits). */
  map(domain: GuestDomainId, iova: number, gpa: number, length: number, perms: PermBits): Result<void>;
  /** Mandatory. Unmaps and invalidates (as a strict-mode Linux driver does: unmap then flush). */
  unmap(domain: GuestDomainId, iova: number, length: number): Result<void>;
  /** Mandatory. Invalidates the domain's cached translations (a range, or everything) and waits for completion. */
  flush(domain: GuestDomainId, iova?: number, length?: number): Result<void>;
  /** Optional (capability `interruptRemapping`). Programs a remapping entry; returns the MSI the device must write. */
  mapInterrupt?(rid: number, vector: number, destination: number): Result<MsiMessage>;
  /** Optional, with `mapInterrupt`. Clears the entry (an MSI through it is then blocked) and invalidates. */
  unmapInterrupt?(rid: number, msi: MsiMessage): Result<void>;
  /** Mandatory. Consumes and decodes the events the IOMMU reported to the guest. */
  readEvents(): GuestEvent[];
  /** Optional (capability `eventLog`). Whether the log reported overflow; reading it acknowledges it. */
  takeOverflow?(): boolean;
  /** Optional (capability `eventLogRebase`). Reprograms the log at a new base with `entries` entries (head and tail reset). */
  resetEventLog?(entries: number): Result<void>;
  /** Optional (capability `commandQueue`). Submits a command the architecture defines as illegal, then waits. */
  submitIllegalCommand?(): Result<void>;

  /** Optional (capability `pasid`). Attaches `domain` to the device's PASID (SubstreamID) `pasid`. */
  attachPasid?(rid: number, pasid: number, domain: GuestDomainId): Result<void>;
  /** Optional (capability `pasid`). Detaches whatever is attached at the PASID. */
  detachPasid?(rid: number, pasid: number): Result<void>;
  /**
   * Optional (capability `sva`). A process address space: a CPU page table in guest memory in the format the
   * architecture's CPUs walk (x86-64 4-level, AArch64 stage 1), which the IOMMU can walk too.
   */
  createProcess?(): Result<GuestProcess>;
  /** Optional (capability `sva`). Binds the process's page table to the device's PASID (iommu_sva_bind_device). */
  bindProcess?(rid: number, pasid: number, process: GuestProcess): Result<void>;
  /** Optional (capability `sva`). Unbinds it: the PASID's translations are gone when this returns. */
  unbindProcess?(rid: number, pasid: number): Result<void>;
  /**
   * Optional (capability `sva`). The OS changed the process's mappings in [va, va + length): the invalidation it
   * sends for every device bound to the process (the MMU notifier's secondary-TLB invalidation).
   */
  invalidateProcess?(process: GuestProcess, va: number, length: number): Result<void>;
  /** Optional (capability `pageRequests`). Lets the device issue page requests (PRI enable, the request queue). */
  enablePageRequests?(rid: number): Result<void>;
  /** Optional (capability `pageRequests`). Answers a page-request event's group: success, or the failure code. */
  respondPageRequest?(request: GuestEvent, success: boolean): Result<void>;
}

/** A guest process's address space as the guest kernel keeps it (its CPU page table). */
export interface GuestProcess {
  /** The root of the CPU page table in guest memory (what CR3 or TTBR0 holds). */
  readonly root: number;
  /** The address-space id the OS gave it (PCID / ASID), where the architecture tags TLBs with one. */
  readonly asid: number;
  /** Maps user pages [va, va + length) to guest-physical `gpa` with `perms` (the CPU page table only). */
  map(va: number, gpa: number, length: number, perms: PermBits): Result<void>;
  /** Unmaps [va, va + length) from the CPU page table (callers then invalidate). */
  unmap(va: number, length: number): Result<void>;
}

/** What a guest driver is given: the VM it runs in (memory, MMIO, hypercalls) and a page allocator for its structures. */
export interface GuestContext {
  readonly vm: VirtualMachine;
  readonly memory: GuestMemory;
  /** The guest kernel's page allocator, for the driver's own structures. */
  readonly pages: PageSource;
  /** The ACPI tables the firmware (the VMM) published. */
  readonly acpi: readonly { readonly signature: string; readonly bytes: Uint8Array }[];
  /** Where the VMM put the device, for drivers without firmware tables. */
  readonly mmioBase: number;
}
