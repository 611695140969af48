import type { VirtualMachine } from "@viommu/core";
import type { PciConfigAccess } from "../format/pci-config-header.js";

/**
 * How the guest reaches PCI configuration space: dword accesses on segment 0 of the VM's bus (ECAM or
 * 0xCF8/0xCFC), each one a VM exit; a function that is not there reads all ones.
 */
export function vmPciConfigAccess(vm: VirtualMachine): PciConfigAccess {
  return {
    read32: (bdf, offset) => vm.pciConfigRead(0, bdf, offset, 4),
    write32: (bdf, offset, value) => vm.pciConfigWrite(0, bdf, offset, 4, value),
  };
}
