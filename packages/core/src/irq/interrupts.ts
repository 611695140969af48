/**
 * Interrupt remapping, vendor-neutral: an MSI write (address, data) from a device comes in; either a
 * remapped interrupt (vector, destination, mode) comes out, or a blocked-interrupt fault with the
 * architecture's own reason code.
 */
export interface MsiMessage {
  /** The MSI address the device wrote (0xFEExxxxx on x86, a doorbell address on ARM). */
  readonly address: number;
  readonly data: number;
}

export interface RemappedInterrupt {
  readonly vector: number;
  /** APIC id (x2APIC ids are 32-bit) or, on ARM, the target's id. */
  readonly destination: number;
  readonly destinationMode: "physical" | "logical";
  /** Delivery mode as the architecture encodes it (0 = fixed on x86). */
  readonly deliveryMode: number;
  readonly trigger: "edge" | "level";
  /** Posted to a vCPU's posted-interrupt descriptor rather than delivered through the host. */
  readonly posted?: { readonly descriptor: number; readonly urgent: boolean };
}

export interface InterruptFault {
  /** The architecture's fault reason or event code. */
  readonly code: number;
  readonly name: string;
  /** The remapping table index involved, when there is one. */
  readonly index?: number;
}

export type InterruptResult = { readonly ok: true; readonly irq: RemappedInterrupt } | { readonly ok: false; readonly fault: InterruptFault };

/** A vendor's interrupt remapping unit, as seen by the device side. */
export interface InterruptRemapper {
  /** Remaps an MSI from requester `sourceId`. Never throws, whatever the guest wrote into its tables. */
  remap(sourceId: number, msi: MsiMessage): InterruptResult;
}

/** An interrupt a vCPU received, with how it got there. */
export interface DeliveredInterrupt {
  readonly vector: number;
  readonly destination: number;
  /** Delivered by the VMM injecting it (a VM exit on the way) or straight to the vCPU (posted / passthrough). */
  readonly path: "vmm" | "direct";
  readonly source: string;
}

/**
 * The VM's interrupt controllers as the models see them: records what was delivered to which vCPU, and by
 * which path, so tests can assert vectors and count VMM interventions.
 */
export class InterruptSink {
  readonly delivered: DeliveredInterrupt[] = [];

  constructor(readonly vcpus: number) {}

  deliver(vector: number, destination: number, path: DeliveredInterrupt["path"], source: string): void {
    this.delivered.push({ vector, destination, path, source });
  }

  /** Delivered interrupts from `source` (all when omitted), consuming them. */
  take(source?: string): DeliveredInterrupt[] {
    const taken: DeliveredInterrupt[] = [];
    for (let i = 0; i < this.delivered.length; ) {
      if (source === undefined || this.delivered[i]!.source === source) taken.push(...this.delivered.splice(i, 1));
      else i++;
    }
    return taken;
  }
}
