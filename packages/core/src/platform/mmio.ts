/** A guest-visible register block. 8-byte accesses are passed whole; values are bigint at this edge. */
export interface MmioHandler {
  read(offset: number, size: 4 | 8): bigint;
  write(offset: number, size: 4 | 8, value: bigint): void;
}

/** One region of the VM's physical address map. */
export interface MmioMapping {
  readonly base: number;
  readonly size: number;
  readonly handler: MmioHandler;
  /**
   * Mapped straight into the guest (a vQUEUE page the hardware serves): accesses cause no VM exit and
   * are not VMM interventions.
   */
  readonly direct: boolean;
  readonly name: string;
}
