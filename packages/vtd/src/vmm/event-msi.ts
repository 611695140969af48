import type { VirtualMachine } from "@viommu/core";

/**
 * Sends one of the unit's own event interrupts (fault, invalidation completion, page request). These MSIs are
 * not remapped: the address is a compatibility-format 0xFEEx_xxxx with the APIC id in bits [19:12] and, in
 * x2APIC mode, the upper APIC id bits [31:8] in the upper address register (Linux `dmar_msi_compose_msg`).
 * An address outside the interrupt window goes nowhere, as a stray memory write would.
 */
export function sendEventMsi(vm: VirtualMachine, address: number, upper: number, data: number, source: string): boolean {
  if (address >>> 20 !== 0xfee) return false;
  const destination = (((address >>> 12) & 0xff) | (upper & 0xffff_ff00)) >>> 0;
  vm.inject(data & 0xff, destination, source);
  return true;
}
