import type { OwnerId } from "@viommu/core";
import type { VtdHostFaultBatch, VtdHostFaultReport } from "../format/host-fault-report.js";

/** Reports kept per VM before the VMM reads them, so a VM that never reads cannot grow the host's memory. */
export const HOST_FAULT_QUEUE_DEPTH = 256;
/** Faults the host keeps in its own log (what `dmar_fault` would print), newest last. */
export const HOST_FAULT_LOG_DEPTH = 1024;

interface OwnerQueue {
  readonly reports: VtdHostFaultReport[];
  lost: number;
}

/**
 * The host driver's side of primary fault logging: every fault goes to the host log (bounded, oldest
 * dropped), and faults of VM-owned devices are also queued for that VM's VMM (bounded; a full queue counts
 * what it drops, so the VMM can report overflow to its guest rather than lose faults silently).
 */
export class HostFaultLog {
  readonly host: VtdHostFaultReport[] = [];
  private readonly queues = new Map<OwnerId, OwnerQueue>();

  record(owner: OwnerId | undefined, report: VtdHostFaultReport): void {
    if (this.host.length >= HOST_FAULT_LOG_DEPTH) this.host.shift();
    this.host.push(report);
    if (owner === undefined) return;
    let q = this.queues.get(owner);
    if (q === undefined) {
      q = { reports: [], lost: 0 };
      this.queues.set(owner, q);
    }
    if (q.reports.length >= HOST_FAULT_QUEUE_DEPTH) q.lost++;
    else q.reports.push(report);
  }

  read(owner: OwnerId, max: number): VtdHostFaultBatch {
    const q = this.queues.get(owner);
    if (q === undefined) return { reports: [], lost: 0 };
    const reports = q.reports.splice(0, Math.max(0, Math.floor(max)));
    const lost = q.lost;
    q.lost = 0;
    if (q.reports.length === 0) this.queues.delete(owner);
    return { reports, lost };
  }
}
