import type { DependencyContainer } from "tsyringe";
import { token } from "../di/token.js";
import { err, ok, type Result } from "../errors/errno.js";
import { InterruptSink } from "../irq/interrupts.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import type { OwnerId } from "../memory/host-memory.js";
import { exitNanoseconds, KVM_EXIT_COST, type ExitCost } from "../sim/exit-cost.js";
import type { MmioHandler, MmioMapping } from "./mmio.js";
import { pciAbsent, pciAccessValid, type PciConfigHandler } from "./pci.js";

/** Counts of VMM interventions: every trapped access or injection is one. */
export interface ExitCounters {
  mmio: number;
  hypercall: number;
  injections: number;
  /** Configuration-space accesses (ECAM or 0xCF8/0xCFC): each one traps to the VMM. */
  pciConfig: number;
}

/** A hypercall handler (the VMM's, for a hypercall-driven IOMMU). Returns the 64-bit result value. */
export type HypercallHandler = (input: bigint, inputGpa: number, outputGpa: number) => bigint;

/** The VM a per-VM child container belongs to. */
export const CurrentVm = token<VirtualMachine>("CurrentVm");

/**
 * One VM: its memory, vCPUs' interrupt controllers, physical address map of MMIO regions, and the exits
 * it takes. Guest drivers touch devices only through `mmioRead`/`mmioWrite`/`hypercall`, which is what
 * lets the models count VMM interventions.
 */
export class VirtualMachine {
  readonly interrupts: InterruptSink;
  readonly exits: ExitCounters = { mmio: 0, hypercall: 0, injections: 0, pciConfig: 0 };
  private readonly regions: MmioMapping[] = [];
  /** PCI functions the VMM emulates, by segment << 16 | requester id. */
  private readonly functions = new Map<number, PciConfigHandler>();
  private hypercallHandler: HypercallHandler | undefined;

  constructor(
    readonly id: OwnerId,
    readonly name: string,
    readonly memory: GuestMemory,
    readonly vcpus: number,
    readonly container: DependencyContainer,
    /** What each kind of exit costs the guest (`exitNanoseconds`); default: a measured KVM exit round trip. */
    readonly exitCost: ExitCost = KVM_EXIT_COST,
  ) {
    this.interrupts = new InterruptSink(vcpus);
  }

  /** The time the exits taken so far cost the guest under `exitCost`, in nanoseconds (the model charges, never waits). */
  get exitNanoseconds(): number {
    return exitNanoseconds(this.exits, this.exitCost);
  }

  /** Maps a register block at `base`; EEXIST when it overlaps another. */
  mapMmio(base: number, size: number, handler: MmioHandler, options: { direct?: boolean; name?: string } = {}): Result<MmioMapping> {
    if (this.regions.some((r) => base < r.base + r.size && r.base < base + size)) return err("EEXIST", `MMIO 0x${base.toString(16)} overlaps`);
    const mapping: MmioMapping = { base, size, handler, direct: options.direct ?? false, name: options.name ?? "mmio" };
    this.regions.push(mapping);
    return ok(mapping);
  }

  /** The register blocks mapped in this VM's physical address map, lowest base first. */
  mmioRegions(): readonly MmioMapping[] {
    return [...this.regions].sort((a, b) => a.base - b.base);
  }

  unmapMmio(mapping: MmioMapping): void {
    const at = this.regions.indexOf(mapping);
    if (at >= 0) this.regions.splice(at, 1);
  }

  private regionAt(address: number, size: number): MmioMapping | undefined {
    return this.regions.find((r) => address >= r.base && address + size <= r.base + r.size);
  }

  /** A guest read of a device register. Unclaimed addresses read all-ones (as an unclaimed bus does). */
  mmioRead(address: number, size: 4 | 8): bigint {
    const r = this.regionAt(address, size);
    if (r === undefined) return size === 8 ? 0xffff_ffff_ffff_ffffn : 0xffff_ffffn;
    if (!r.direct) this.exits.mmio++;
    return r.handler.read(address - r.base, size);
  }

  /** A guest write of a device register. Unclaimed addresses ignore the write. */
  mmioWrite(address: number, size: 4 | 8, value: bigint | number): void {
    const r = this.regionAt(address, size);
    if (r === undefined) return;
    if (!r.direct) this.exits.mmio++;
    r.handler.write(address - r.base, size, BigInt(value));
  }

  /** Places a PCI function's configuration space at `bdf` of `segment`; EEXIST when a function is there. */
  mapPciFunction(bdf: number, handler: PciConfigHandler, segment = 0): Result<{ unmap(): void }> {
    const key = segment * 0x10000 + bdf;
    if (!Number.isInteger(bdf) || bdf < 0 || bdf > 0xffff || !Number.isInteger(segment) || segment < 0 || segment > 0xffff) return err("EINVAL", `no PCI address ${segment}:${bdf}`);
    if (this.functions.has(key)) return err("EEXIST", `a PCI function is already at ${bdf.toString(16)}`);
    this.functions.set(key, handler);
    return ok({ unmap: () => void (this.functions.get(key) === handler && this.functions.delete(key)) });
  }

  /** A guest configuration read. Nothing there (or an access the mechanism cannot issue) reads all ones. */
  pciConfigRead(segment: number, bdf: number, offset: number, size: 1 | 2 | 4): number {
    this.exits.pciConfig++;
    const f = this.functions.get(segment * 0x10000 + bdf);
    if (f === undefined || !pciAccessValid(offset, size)) return pciAbsent(size);
    return f.read(offset, size) >>> 0;
  }

  /** A guest configuration write; to nothing, or malformed, it is dropped. */
  pciConfigWrite(segment: number, bdf: number, offset: number, size: 1 | 2 | 4, value: number): void {
    this.exits.pciConfig++;
    const f = this.functions.get(segment * 0x10000 + bdf);
    if (f === undefined || !pciAccessValid(offset, size)) return;
    f.write(offset, size, value >>> 0);
  }

  onHypercall(handler: HypercallHandler): void {
    this.hypercallHandler = handler;
  }

  /** A guest hypercall; with no handler installed the result is HV_STATUS_INVALID_HYPERCALL_CODE-like 2. */
  hypercall(input: bigint, inputGpa: number, outputGpa: number): bigint {
    this.exits.hypercall++;
    return this.hypercallHandler === undefined ? 2n : this.hypercallHandler(input, inputGpa, outputGpa);
  }

  /** The VMM injects an interrupt into a vCPU (one intervention). */
  inject(vector: number, destination: number, source: string): void {
    this.exits.injections++;
    this.interrupts.deliver(vector, destination, "vmm", source);
  }

  /** Total VMM interventions so far. */
  get interventions(): number {
    return this.exits.mmio + this.exits.hypercall + this.exits.injections + this.exits.pciConfig;
  }
}
