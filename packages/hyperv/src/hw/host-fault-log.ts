import { walkFaultNames, type WalkFault } from "@viommu/core";

/** A DMA fault as the hypervisor records it: Hyper-V reports none of them to the guest. */
export interface HypervHostFault {
  readonly requesterId: number;
  readonly iova: number;
  readonly write: boolean;
  readonly fault: WalkFault;
  readonly reason: string;
  readonly stage: 1 | 2;
  /** The device domain the device was in (undefined: a stage-2-only or no domain). */
  readonly domainId: number | undefined;
}

/**
 * The hypervisor's fault log: the newest `capacity` faults and a count of the older ones dropped, so a device
 * that faults forever cannot grow the host's memory without bound.
 */
export class HostFaultLog {
  private readonly entries: HypervHostFault[] = [];
  dropped = 0;

  constructor(readonly capacity = 1024) {}

  record(fault: HypervHostFault): void {
    if (this.entries.length >= this.capacity) {
      this.entries.shift();
      this.dropped++;
    }
    this.entries.push(fault);
  }

  /** The recorded faults, oldest first. */
  list(): readonly HypervHostFault[] {
    return this.entries;
  }

  static reasonOf(fault: WalkFault): string {
    return walkFaultNames[fault];
  }
}
