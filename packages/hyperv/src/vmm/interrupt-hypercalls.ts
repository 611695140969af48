import type { MsiMessage } from "@viommu/core";
import type { ByteFields } from "../format/byte-layout.js";
import type { HvDeviceId } from "../format/device-id.js";
import { targetProcessors, type deviceInterruptTargetLayout } from "../format/device-interrupt-target.js";
import { HvStatus, type HvStatusCode } from "../format/hv-status.js";
import { HV_PARTITION_ID_SELF } from "../format/hypercalls.js";
import { HvInterruptSource, type HvInterruptEntry } from "../format/interrupt-entry.js";
import {
  HvInterruptTriggerMode,
  HvInterruptType,
  mapDeviceInterruptOutputLayouts,
  type mapDeviceInterruptInputLayouts,
  type retargetInterruptInputLayouts,
  type unmapDeviceInterruptInputLayouts,
} from "../format/interrupt-hypercalls.js";
import type { CallContext, CallOutcome, DecodedCall } from "./call-context.js";
import type { InterruptTarget } from "./interrupt-table.js";
import { ridOfDeviceId } from "./partition-devices.js";

/**
 * Handlers of HVCALL_MAP_DEVICE_INTERRUPT, HVCALL_UNMAP_DEVICE_INTERRUPT and HVCALL_RETARGET_INTERRUPT for a
 * guest partition's device MSIs. Devices are named by logical id or PCI id; IO-APIC ids are refused
 * (INVALID_PARAMETER): a guest's IO-APIC is emulated and Linux maps IO-APIC pins by hypercall only in the root
 * partition. The model maps one vector per call (vector_count 1, as Linux's callers do).
 */

type Target = ByteFields<typeof deviceInterruptTargetLayout>;
const status = (s: HvStatusCode): CallOutcome => ({ status: s });
const mapOutput = mapDeviceInterruptOutputLayouts.x64;

function partitionProblem(c: CallContext, id: bigint): HvStatusCode | undefined {
  return id === HV_PARTITION_ID_SELF || id === c.partitionId ? undefined : HvStatus.HV_STATUS_INVALID_PARTITION_ID;
}

/** The requester id of a device the guest names (logical or PCI id), or undefined for any other id. */
function ridOf(id: HvDeviceId): number | undefined {
  return ridOfDeviceId(id);
}

/**
 * The guest vector and VPs a target names: vp_mask (VPs 0–63), or with PROCESSOR_SET the VP set continued in
 * the variable header. Every VP must exist (INVALID_VP_INDEX), the set must not be empty and the vector must be
 * one a fixed interrupt can use (16–255).
 */
function targetOf(c: CallContext, t: Target, varHeader: readonly bigint[], level: boolean): InterruptTarget | HvStatusCode {
  if (t.vector < 0x10 || t.vector > 0xff) return HvStatus.HV_STATUS_INVALID_PARAMETER;
  const processorSet = t.flags.processor_set;
  const vps = targetProcessors(processorSet, processorSet ? t.vp_set.format : t.vp_mask, varHeader, c.vm.vcpus - 1);
  if (vps.length === 0) return HvStatus.HV_STATUS_INVALID_PARAMETER;
  if (vps.some((vp) => vp >= c.vm.vcpus)) return HvStatus.HV_STATUS_INVALID_VP_INDEX;
  return { vector: t.vector, vps, multicast: t.flags.multicast === 1, level };
}

/** The MSI an interrupt entry of the input carries (compatibility layout, as the hypervisor handed it out). */
function messageOf(entry: HvInterruptEntry<"x64">): MsiMessage | undefined {
  const m = entry.msi_entry;
  if (entry.source !== HvInterruptSource.HV_INTERRUPT_SOURCE_MSI || m === undefined) return undefined;
  const a = m.address;
  const d = m.data;
  const address = ((a.msi_base << 20) | (a.destination_id << 12) | (a.redirection_hint << 3) | (a.destination_mode << 2)) >>> 0;
  const data = d.vector | (d.delivery_mode << 8) | (d.level_assert << 14) | (d.trigger_mode << 15);
  return { address, data };
}

export function mapDeviceInterrupt(c: CallContext, call: DecodedCall<ByteFields<(typeof mapDeviceInterruptInputLayouts)["x64"]>>): CallOutcome {
  const input = call.input;
  const p = partitionProblem(c, input.partition_id);
  if (p !== undefined) return status(p);
  const rid = ridOf(input.device_id);
  if (rid === undefined) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  const desc = input.interrupt_descriptor;
  const type = desc.interrupt_type;
  if (type !== HvInterruptType.HV_X64_INTERRUPT_TYPE_FIXED && type !== HvInterruptType.HV_X64_INTERRUPT_TYPE_LOWESTPRIORITY) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  if (desc.trigger_mode !== HvInterruptTriggerMode.HV_INTERRUPT_TRIGGER_MODE_EDGE && desc.trigger_mode !== HvInterruptTriggerMode.HV_INTERRUPT_TRIGGER_MODE_LEVEL) {
    return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  }
  if (desc.vector_count !== 1) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  const target = targetOf(c, desc.target, call.varHeader, desc.trigger_mode === HvInterruptTriggerMode.HV_INTERRUPT_TRIGGER_MODE_LEVEL);
  if (typeof target === "number") return status(target);
  const out = call.outputProblem(mapOutput.size);
  if (out !== undefined) return status(out);
  const msi = c.interrupts.map(rid, target);
  if (msi === undefined) return status(HvStatus.HV_STATUS_NO_RESOURCES);
  return status(
    call.output(mapOutput, {
      interrupt_entry: {
        source: HvInterruptSource.HV_INTERRUPT_SOURCE_MSI,
        msi_entry: {
          address: { destination_id: (msi.address >>> 12) & 0xff, msi_base: msi.address >>> 20 },
          data: { vector: msi.data & 0xff, level_assert: (msi.data >>> 14) & 1, trigger_mode: (msi.data >>> 15) & 1 },
        },
      },
    }),
  );
}

export function unmapDeviceInterrupt(c: CallContext, call: DecodedCall<ByteFields<(typeof unmapDeviceInterruptInputLayouts)["x64"]>>): CallOutcome {
  const input = call.input;
  const p = partitionProblem(c, input.partition_id);
  if (p !== undefined) return status(p);
  const rid = ridOf(input.device_id);
  const msi = messageOf(input.interrupt_entry);
  if (rid === undefined || msi === undefined) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  const slot = c.interrupts.find(rid, msi);
  if (slot === undefined) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  c.interrupts.unmap(slot);
  return status(HvStatus.HV_STATUS_SUCCESS);
}

export function retargetInterrupt(c: CallContext, call: DecodedCall<ByteFields<(typeof retargetInterruptInputLayouts)["x64"]>>): CallOutcome {
  const input = call.input;
  const p = partitionProblem(c, input.partition_id);
  if (p !== undefined) return status(p);
  const rid = ridOf(input.device_id);
  const msi = messageOf(input.int_entry);
  if (rid === undefined || msi === undefined) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  const slot = c.interrupts.find(rid, msi);
  if (slot === undefined) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  const target = targetOf(c, input.int_target, call.varHeader, ((msi.data >>> 15) & 1) === 1);
  if (typeof target === "number") return status(target);
  c.interrupts.retarget(slot, target);
  return status(HvStatus.HV_STATUS_SUCCESS);
}
