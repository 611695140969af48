import type { VirtualMachine } from "@viommu/core";
import { registerByName } from "../format/register-map.js";

/** How many times a driver re-reads an acknowledgement or completion before giving up (the model is synchronous). */
export const POLL_LIMIT = 64;

/**
 * The guest's view of the SMMU's register pages: 32-bit and 64-bit accesses by register name, through the VM's
 * MMIO map (each access is a trap into the VMM).
 */
export class SmmuMmio {
  constructor(
    private readonly vm: VirtualMachine,
    readonly base: number,
  ) {}

  private offset(name: string): number {
    const r = registerByName(name);
    if (r === undefined) throw new Error(`no SMMU register ${name}`);
    return r.offset;
  }

  read32(name: string): number {
    return Number(this.vm.mmioRead(this.base + this.offset(name), 4) & 0xffff_ffffn);
  }

  write32(name: string, value: number): void {
    this.vm.mmioWrite(this.base + this.offset(name), 4, BigInt(value >>> 0));
  }

  read64(name: string): bigint {
    return this.vm.mmioRead(this.base + this.offset(name), 8);
  }

  write64(name: string, value: bigint | number): void {
    this.vm.mmioWrite(this.base + this.offset(name), 8, BigInt(value));
  }

  /** Writes `name` and waits for `ackName` to mirror it (CR0/CR0ACK, IRQ_CTRL/IRQ_CTRLACK). */
  writeAcked(name: string, ackName: string, value: number): boolean {
    this.write32(name, value);
    for (let i = 0; i < POLL_LIMIT; i++) if (this.read32(ackName) === value >>> 0) return true;
    return false;
  }
}
