import type { VmmStats } from "@viommu/core";
import { writeStruct, type ByteInit, type ByteLayout } from "../format/byte-layout.js";
import { HvStatus, type HvStatusCode } from "../format/hv-status.js";
import { decodeHypercallInput } from "../format/hypercall-input.js";
import { encodeHypercallResult } from "../format/hypercall-result.js";
import { decodeHypercallInputPage, HV_HYP_PAGE_SIZE, hypercallByCode, hypercallGpaProblem, HvCallCode, type HypercallSpec } from "../format/hypercalls.js";
import type { CallContext, CallOutcome, DecodedCall } from "./call-context.js";
import * as domain from "./domain-hypercalls.js";
import * as irq from "./interrupt-hypercalls.js";

/**
 * Reps one call processes before returning with the reps completed so far (status SUCCESS): the hypervisor's time
 * slice. The caller re-issues the call from there, as Linux's hv_do_rep_hypercall() does.
 */
export const REPS_PER_CALL = 128;

type Handler = (c: CallContext, call: DecodedCall<never, never>) => CallOutcome;

const handlers: ReadonlyMap<number, Handler> = new Map<number, Handler>([
  [HvCallCode.HVCALL_GET_IOMMU_CAPABILITIES, domain.getIommuCapabilities as Handler],
  [HvCallCode.HVCALL_GET_LOGICAL_DEVICE_PROPERTY, domain.getLogicalDeviceProperty as Handler],
  [HvCallCode.HVCALL_CREATE_DEVICE_DOMAIN, domain.createDeviceDomain as Handler],
  [HvCallCode.HVCALL_DELETE_DEVICE_DOMAIN, domain.deleteDeviceDomain as Handler],
  [HvCallCode.HVCALL_CONFIGURE_DEVICE_DOMAIN, domain.configureDeviceDomain as Handler],
  [HvCallCode.HVCALL_ATTACH_DEVICE_DOMAIN, domain.attachDeviceDomain as Handler],
  [HvCallCode.HVCALL_DETACH_DEVICE_DOMAIN, domain.detachDeviceDomain as Handler],
  [HvCallCode.HVCALL_FLUSH_DEVICE_DOMAIN, domain.flushDeviceDomain as Handler],
  [HvCallCode.HVCALL_FLUSH_DEVICE_DOMAIN_LIST, domain.flushDeviceDomainList as Handler],
  [HvCallCode.HVCALL_MAP_DEVICE_GPA_PAGES, domain.mapDeviceGpaPages as Handler],
  [HvCallCode.HVCALL_UNMAP_DEVICE_GPA_PAGES, domain.unmapDeviceGpaPages as Handler],
  [HvCallCode.HVCALL_ATTACH_DEVICE, domain.attachDevice as Handler],
  [HvCallCode.HVCALL_DETACH_DEVICE, domain.detachDevice as Handler],
  [HvCallCode.HVCALL_MAP_DEVICE_INTERRUPT, irq.mapDeviceInterrupt as Handler],
  [HvCallCode.HVCALL_UNMAP_DEVICE_INTERRUPT, irq.unmapDeviceInterrupt as Handler],
  [HvCallCode.HVCALL_RETARGET_INTERRUPT, irq.retargetInterrupt as Handler],
]);

/** Calls that exist without a pvIOMMU (the interrupt hypercalls are the hypervisor's, pvIOMMU or not). */
const interruptCalls: ReadonlySet<number> = new Set([HvCallCode.HVCALL_MAP_DEVICE_INTERRUPT, HvCallCode.HVCALL_UNMAP_DEVICE_INTERRUPT, HvCallCode.HVCALL_RETARGET_INTERRUPT]);

/**
 * The hypervisor's entry for the pvIOMMU and interrupt hypercalls of one partition. Everything the guest passes
 * is hostile: the control word, the input GPA (8-byte aligned, inside the partition's RAM, read only up to the
 * end of its page), the input page (decoded by the format layer, which turns every malformed field into a
 * status), the output GPA (checked before any side effect). Every path ends in a result value; nothing throws
 * and nothing outside the partition's memory is read or written.
 *
 * Model choices where the TLFS is silent for these calls: a fast (register-based) call answers
 * INVALID_HYPERCALL_INPUT (these calls are memory-based, as Linux issues them); an input or output GPA outside
 * the partition's RAM answers INVALID_PARAMETER; a call arriving while the partition is frozen for a snapshot
 * answers INVALID_PARTITION_STATE.
 */
export class HypercallDispatcher {
  private readonly page = new Uint8Array(HV_HYP_PAGE_SIZE);
  private outputGpa = 0;
  private readonly outputProblem = (bytes: number): HvStatusCode | undefined => {
    const gpa = this.outputGpa;
    const aligned = hypercallGpaProblem(gpa);
    if (aligned !== undefined) return aligned;
    if ((gpa % HV_HYP_PAGE_SIZE) + bytes > HV_HYP_PAGE_SIZE) return HvStatus.HV_STATUS_INVALID_ALIGNMENT;
    return this.context.vm.memory.hostReadable(gpa, bytes) ? undefined : HvStatus.HV_STATUS_INVALID_PARAMETER;
  };
  private readonly output = <B extends ByteLayout>(layout: B, values: ByteInit<B>): HvStatusCode => {
    const problem = this.outputProblem(layout.size);
    if (problem !== undefined) return problem;
    this.context.vm.memory.writeBytes(this.outputGpa, writeStruct(layout, values));
    return HvStatus.HV_STATUS_SUCCESS;
  };

  constructor(
    private readonly context: CallContext,
    private readonly stats: VmmStats,
    private readonly isFrozen: () => boolean,
  ) {}

  /** One hypercall: the 64-bit result value (status, reps completed). */
  handle(control: bigint, inputGpa: number, outputGpa: number): bigint {
    this.stats.trapped++;
    const c = decodeHypercallInput(control);
    const spec = hypercallByCode(c.call_code);
    const handler = handlers.get(c.call_code);
    if (spec === undefined || handler === undefined) return result(HvStatus.HV_STATUS_INVALID_HYPERCALL_CODE);
    if (this.context.domains === undefined && !interruptCalls.has(c.call_code)) return result(HvStatus.HV_STATUS_INVALID_HYPERCALL_CODE);
    if (c.fast) return result(HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT);
    if (this.isFrozen()) return result(HvStatus.HV_STATUS_INVALID_PARTITION_STATE);
    const aligned = hypercallGpaProblem(inputGpa);
    if (aligned !== undefined) return result(aligned);
    const memory = this.context.vm.memory;
    const tail = HV_HYP_PAGE_SIZE - (inputGpa % HV_HYP_PAGE_SIZE);
    if (!memory.hostReadable(inputGpa, tail)) return result(HvStatus.HV_STATUS_INVALID_PARAMETER);
    const bytes = memory.readBytes(inputGpa, tail, this.page.subarray(0, tail));
    const decoded = decodeHypercallInputPage(spec as HypercallSpec, control, bytes);
    if (!decoded.ok) return result(decoded.status);
    this.outputGpa = outputGpa;
    const repStart = decoded.repStartIndex;
    const call: DecodedCall<never, never> = {
      input: decoded.input as never,
      varHeader: decoded.varHeader,
      repCount: decoded.repCount,
      repStart,
      repEnd: spec.rep ? Math.min(decoded.repCount, repStart + REPS_PER_CALL) : 0,
      reps: decoded.reps as never,
      outputProblem: this.outputProblem,
      output: this.output,
    };
    const outcome = handler(this.context, call);
    return result(outcome.status, spec.rep ? (outcome.done ?? repStart) : 0);
  }
}

function result(status: HvStatusCode, repsCompleted = 0): bigint {
  return encodeHypercallResult(status, repsCompleted);
}
