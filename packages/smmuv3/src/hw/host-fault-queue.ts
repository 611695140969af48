import type { OwnerId } from "@viommu/core";

/** A transaction of a VM's device that faulted in a table the host owns (a shadow, a stage-2 domain). */
export interface HostFault {
  readonly requesterId: number;
  readonly pasid: number;
  readonly iova: number;
  readonly access: number;
}

/** Faults kept per VM until its VMM reads them; more are counted lost. */
const KEPT = 256;
const NONE = { faults: [], lost: 0 } as const;

/**
 * The host driver's faults on tables it owns for a VM's devices (Linux reports them to the iommufd user through
 * the domain's fault handler; here the VMM reads them on its poll), per VM, bounded, reading empties.
 */
export class HostFaultQueue {
  private readonly byOwner = new Map<OwnerId, { faults: HostFault[]; lost: number }>();

  push(owner: OwnerId, fault: HostFault): void {
    let queue = this.byOwner.get(owner);
    if (queue === undefined) {
      queue = { faults: [], lost: 0 };
      this.byOwner.set(owner, queue);
    }
    if (queue.faults.length < KEPT) queue.faults.push(fault);
    else queue.lost++;
  }

  /** `owner`'s faults, oldest first, and how many were dropped unread. */
  read(owner: OwnerId): { readonly faults: readonly HostFault[]; readonly lost: number } {
    const queue = this.byOwner.get(owner);
    if (queue === undefined) return NONE;
    this.byOwner.delete(owner);
    return queue;
  }
}
