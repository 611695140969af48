/**
 * The operations of a trace: what a guest and its devices do that an IOMMU can see, in program order. Every read
 * and every DMA may carry the answer the recording target gave (`expect`); a replay compares its own answer with
 * it. TRACE-FORMAT.md documents the JSON-lines encoding of each.
 *
 * Addresses are numbers (every address this implementation handles is below 2^53, as core's are); register and
 * configuration values are bigint so a 64-bit register round-trips exactly.
 */

/** An access width in bytes. */
export type AccessSize = 1 | 2 | 4 | 8;

/** A guest CPU writes guest RAM. */
export interface MemWriteOp {
  readonly op: "mem-write";
  readonly addr: number;
  readonly data: Uint8Array;
}

/** A guest CPU writes `len` copies of one byte (a zeroed page, a cleared table entry). */
export interface MemFillOp {
  readonly op: "mem-fill";
  readonly addr: number;
  readonly len: number;
  readonly byte: number;
}

/** A guest CPU reads guest RAM (a completion status, an event record, its own tables). */
export interface MemReadOp {
  readonly op: "mem-read";
  readonly addr: number;
  readonly len: number;
  readonly expect?: Uint8Array;
}

/** A confidential guest changes a range's sharing state (SEV-SNP page state change). */
export interface MemShareOp {
  readonly op: "mem-share";
  readonly addr: number;
  readonly len: number;
  readonly shared: boolean;
}

/** A guest CPU writes a device register. */
export interface MmioWriteOp {
  readonly op: "mmio-write";
  readonly addr: number;
  readonly size: AccessSize;
  readonly value: bigint;
}

/** A guest CPU reads a device register. */
export interface MmioReadOp {
  readonly op: "mmio-read";
  readonly addr: number;
  readonly size: AccessSize;
  readonly expect?: bigint;
}

/** A guest CPU writes PCI configuration space of the function at requester id `rid` (bus << 8 | dev << 3 | fn). */
export interface PciWriteOp {
  readonly op: "pci-write";
  readonly rid: number;
  readonly offset: number;
  readonly size: 1 | 2 | 4;
  readonly value: bigint;
}

export interface PciReadOp {
  readonly op: "pci-read";
  readonly rid: number;
  readonly offset: number;
  readonly size: 1 | 2 | 4;
  readonly expect?: bigint;
}

/** What a DMA did: it completed (a read with the bytes it read), or the IOMMU blocked it. */
export type DmaAnswer = { readonly ok: true; readonly data?: Uint8Array } | { readonly ok: false };

/** A device reads `len` bytes at `iova` (IOMMU input address), with a PASID or without one. */
export interface DmaReadOp {
  readonly op: "dma";
  readonly dir: "read";
  readonly rid: number;
  readonly pasid?: number;
  readonly iova: number;
  readonly len: number;
  readonly expect?: DmaAnswer;
}

/** A device writes `data` at `iova`. */
export interface DmaWriteOp {
  readonly op: "dma";
  readonly dir: "write";
  readonly rid: number;
  readonly pasid?: number;
  readonly iova: number;
  readonly data: Uint8Array;
  readonly expect?: DmaAnswer;
}

export type DmaOp = DmaReadOp | DmaWriteOp;

/** A device signals the MSI its driver programmed (an MSI write from requester `rid`). */
export interface MsiOp {
  readonly op: "msi";
  readonly rid: number;
  readonly address: number;
  readonly data: number;
}

/** An interrupt a vCPU received. */
export interface InterruptSeen {
  readonly vector: number;
  readonly destination: number;
}

/** The interrupts vCPUs received since the previous `interrupts` operation (or the start), in order. */
export interface InterruptsOp {
  readonly op: "interrupts";
  readonly expect?: readonly InterruptSeen[];
}

/** Time passes (the guest waits): timers run and the VMM's event loop catches up. */
export interface AdvanceOp {
  readonly op: "advance";
  readonly ns: number;
}

/** A hypercall (a hypercall-driven IOMMU): the 64-bit input value, the input and output pages, the result. */
export interface HypercallOp {
  readonly op: "hypercall";
  readonly input: bigint;
  readonly inputGpa: number;
  readonly outputGpa: number;
  readonly expect?: bigint;
}

/** A label for readers and tools (a phase of the program); targets do nothing. */
export interface MarkOp {
  readonly op: "mark";
  readonly label: string;
}

export type TraceOp =
  | MemWriteOp
  | MemFillOp
  | MemReadOp
  | MemShareOp
  | MmioWriteOp
  | MmioReadOp
  | PciWriteOp
  | PciReadOp
  | DmaOp
  | MsiOp
  | InterruptsOp
  | AdvanceOp
  | HypercallOp
  | MarkOp;

export type TraceOpName = TraceOp["op"];

/** Operations that carry an answer a replay compares. */
export function expectsAnswer(op: TraceOp): boolean {
  switch (op.op) {
    case "mem-read":
    case "mmio-read":
    case "pci-read":
    case "dma":
    case "interrupts":
    case "hypercall":
      return op.expect !== undefined;
    default:
      return false;
  }
}
