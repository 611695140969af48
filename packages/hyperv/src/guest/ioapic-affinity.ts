/** APIC ids an IO-APIC redirection entry can name: its destination field has 8 bits. */
export const IOAPIC_MAX_APIC_ID = 255;

/**
 * Why an IO-APIC interrupt may not target `destination`, or undefined when it may. Linux's hyperv-iommu (the
 * stub interrupt-remapping domain that lets a guest run x2APIC with more than 255 vCPUs) builds its IO-APIC
 * affinity mask from the CPUs whose APIC id is below 256 and refuses any other affinity (-EINVAL); the model's
 * vCPU index is its APIC id. Device MSIs are not limited: they are remapped by hypercall to any VP.
 */
export function ioapicAffinityProblem(destination: number, vcpus: number): string | undefined {
  if (!Number.isInteger(destination) || destination < 0 || destination >= vcpus) return `no vCPU ${destination}`;
  if (destination > IOAPIC_MAX_APIC_ID) return `APIC id ${destination} is beyond an IO-APIC entry's 8-bit destination`;
  return undefined;
}
