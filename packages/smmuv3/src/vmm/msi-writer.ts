import type { VirtualMachine } from "@viommu/core";
import { gicrSetlpirCpu } from "../format/gic-doorbell.js";

/** Where an MSI write went. */
export type MsiOutcome = "interrupt" | "memory" | "abort";

/**
 * Performs one MSI write of the emulated SMMU (an event, GERROR or CMD_SYNC MSI: a 32-bit write of `data` to
 * `address`). A write to a CPU's GICR_SETLPIR makes `data` pending on that CPU (an injection by the VMM); a
 * write into guest RAM is a memory write (Linux's MSIPOLL completion); anything else aborts, which the caller
 * reports as the matching GERROR.MSI_*_ABT_ERR.
 */
export function writeSmmuMsi(vm: VirtualMachine, address: number, data: number, source: string): MsiOutcome {
  const cpu = gicrSetlpirCpu(address);
  if (cpu !== undefined) {
    if (cpu >= vm.vcpus) return "abort";
    vm.inject(data >>> 0, cpu, source);
    return "interrupt";
  }
  if (address % 4 === 0 && vm.memory.hostReadable(address, 4)) {
    vm.memory.write32(address, data >>> 0);
    return "memory";
  }
  return "abort";
}
