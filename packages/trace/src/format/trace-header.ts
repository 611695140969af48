import type { TraceOp } from "./trace-op.js";

export const TRACE_FORMAT = "viommu-trace";
export const TRACE_VERSION = 1;

/** A range of guest RAM (guest physical addresses). */
export interface RamRange {
  readonly base: number;
  readonly size: number;
}

/** An IOMMU register block in the guest physical address map. */
export interface IommuBlock {
  /** The architecture: a viommu vendor id ("vtd", "amd-vi", "smmuv3", …). */
  readonly vendor: string;
  readonly base: number;
  readonly size: number;
}

/** A DMA-capable device the trace uses, by the requester id the guest and the IOMMU see. */
export interface TraceDevice {
  readonly rid: number;
  /** PASID width the device supports (0: no PASID). */
  readonly pasidBits?: number;
}

/**
 * The machine a trace runs on: what a target must provide for the trace to mean what it meant when it was
 * recorded. A target may place a register block elsewhere; it then relocates accesses inside the block.
 */
export interface TraceMachine {
  readonly ram: readonly RamRange[];
  readonly iommus: readonly IommuBlock[];
  readonly devices: readonly TraceDevice[];
}

/**
 * How the recording model was configured, so a replay on the model builds the same system. Other producers
 * leave it out; a model replay then uses the defaults (nested translation, seed 1).
 */
export interface TraceModelConfig {
  readonly mode?: "nested" | "shadow" | "ir-only";
  readonly shadowBackend?: "type1" | "iommufd";
  readonly eventInterrupts?: "vmm" | "direct";
  readonly seed?: number;
  readonly vcpus?: number;
  /**
   * Whose DMA the devices are: passthrough devices behind the host's IOMMU (the default), or devices the VMM
   * emulates, translated by the emulated IOMMU itself (`EmulatedIommu.translateEmulated`) as QEMU translates its
   * own devices' DMA.
   */
  readonly dma?: "passthrough" | "emulated";
}

export interface TraceHeader {
  readonly format: typeof TRACE_FORMAT;
  readonly version: typeof TRACE_VERSION;
  readonly machine: TraceMachine;
  readonly model?: TraceModelConfig;
  /** What the trace does, for people. */
  readonly description?: string;
  /** Who recorded it ("viommu model vtd shadow", "my-emulator 0.3"). */
  readonly producer?: string;
}

/** A whole trace: its header and its operations in program order. */
export interface Trace {
  readonly header: TraceHeader;
  readonly ops: readonly TraceOp[];
}

/** The IOMMU block holding [addr, addr + size), if any. */
export function iommuBlockAt(machine: TraceMachine, addr: number, size: number): IommuBlock | undefined {
  return machine.iommus.find((b) => addr >= b.base && addr + size <= b.base + b.size);
}

/** Whether [addr, addr + len) lies inside one RAM range of the machine. */
export function inRam(machine: TraceMachine, addr: number, len: number): boolean {
  return machine.ram.some((r) => addr >= r.base && addr + len <= r.base + r.size);
}
