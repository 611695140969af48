import type { VirtualMachine } from "@viommu/core";
import type { ByteFields, ByteInit, ByteLayout } from "../format/byte-layout.js";
import type { HvStatusCode } from "../format/hv-status.js";
import type { DeviceDomains } from "./device-domains.js";
import type { InterruptTable } from "./interrupt-table.js";
import type { PartitionDevices } from "./partition-devices.js";

/** What a hypercall handler sees of the partition it serves. */
export interface CallContext {
  readonly vm: VirtualMachine;
  /** The partition's own id (HV_PARTITION_ID_SELF also names it). */
  readonly partitionId: bigint;
  readonly devices: PartitionDevices;
  /** Device domains; undefined when the partition has no pvIOMMU (IR-only). */
  readonly domains: DeviceDomains | undefined;
  readonly interrupts: InterruptTable;
  /** The hv_output_get_iommu_capabilities the hypervisor answers, from the host unit. */
  readonly capabilities: Uint8Array | undefined;
}

/** Writes a call's output page; the status when the output GPA cannot take it. */
export type OutputWriter = <B extends ByteLayout>(layout: B, values: ByteInit<B>) => HvStatusCode;

/** One validated call as its handler gets it. */
export interface DecodedCall<In = Record<string, unknown>, Rep = Record<string, unknown>> {
  readonly input: In;
  readonly varHeader: readonly bigint[];
  readonly repCount: number;
  /** First rep to process and the rep after the last one this call processes (a time slice of the list). */
  readonly repStart: number;
  readonly repEnd: number;
  readonly reps: readonly Rep[];
  /** Checks, before any side effect, that `bytes` of output fit the output GPA. */
  outputProblem(bytes: number): HvStatusCode | undefined;
  readonly output: OutputWriter;
}

/** A handler's answer: the status and, for rep calls, the reps done (absolute, from rep 0). */
export interface CallOutcome {
  readonly status: HvStatusCode;
  readonly done?: number;
}

export type { ByteFields };
