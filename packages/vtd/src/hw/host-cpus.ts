/** What a physical CPU does with an interrupt vector delivered to it. */
export type CpuVectorHandler = (vector: number) => void;

/**
 * The host's physical CPUs as a unit's notification events reach them: an interrupt with vector NV to the CPU
 * whose x2APIC id is NDST (VT-d §5.2.3: posting ends with a notification event when ON was clear and
 * notifications are not suppressed). A CPU's handler is what runs there: a vCPU in guest mode processes the
 * posted-interrupt notification vector itself (no VM exit), the host takes any other. A notification to a CPU
 * nobody added goes nowhere, as an IPI to an absent APIC id does.
 */
export class HostCpus {
  private readonly cpus = new Map<number, CpuVectorHandler>();
  private next = 0;

  /** A new CPU running `handler`; returns its x2APIC id. */
  add(handler: CpuVectorHandler): number {
    const id = this.next++;
    this.cpus.set(id, handler);
    return id;
  }

  remove(id: number): void {
    this.cpus.delete(id);
  }

  /** Delivers `vector` to CPU `apicId`; false when there is no such CPU. */
  interrupt(apicId: number, vector: number): boolean {
    const cpu = this.cpus.get(apicId);
    if (cpu === undefined) return false;
    cpu(vector);
    return true;
  }
}
