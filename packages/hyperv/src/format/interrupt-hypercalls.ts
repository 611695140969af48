import { defineByteLayout, struct, u32, u64, type ByteLayout } from "./byte-layout.js";
import { deviceIdCodec } from "./device-id.js";
import { deviceInterruptTargetLayout } from "./device-interrupt-target.js";
import { interruptEntryCodec, interruptEntrySize, type HvArch } from "./interrupt-entry.js";

/**
 * Interrupt hypercalls HVCALL_MAP_DEVICE_INTERRUPT (0x7C), HVCALL_UNMAP_DEVICE_INTERRUPT (0x7D) and
 * HVCALL_RETARGET_INTERRUPT (0x7E) (spec arm-hyperv-virtio.md §5.2; Linux include/hyperv/hvhdk_mini.h and
 * hvgdk_mini.h; callers arch/x86/hyperv/irqdomain.c and drivers/pci/controller/pci-hyperv.c). These are merged
 * upstream, not provisional. Offsets after the interrupt entry depend on the architecture (16-byte x86 entry,
 * 24-byte arm64 entry).
 */

/** enum hv_interrupt_type (x86). */
export const HvInterruptType = {
  HV_X64_INTERRUPT_TYPE_FIXED: 0,
  HV_X64_INTERRUPT_TYPE_LOWESTPRIORITY: 1,
  HV_X64_INTERRUPT_TYPE_SMI: 2,
  HV_X64_INTERRUPT_TYPE_REMOTEREAD: 3,
  HV_X64_INTERRUPT_TYPE_NMI: 4,
  HV_X64_INTERRUPT_TYPE_INIT: 5,
  HV_X64_INTERRUPT_TYPE_SIPI: 6,
  HV_X64_INTERRUPT_TYPE_EXTINT: 7,
  HV_X64_INTERRUPT_TYPE_LOCALINT0: 8,
  HV_X64_INTERRUPT_TYPE_LOCALINT1: 9,
} as const;

/** enum hv_interrupt_trigger_mode. */
export const HvInterruptTriggerMode = {
  HV_INTERRUPT_TRIGGER_MODE_EDGE: 0,
  HV_INTERRUPT_TRIGGER_MODE_LEVEL: 1,
} as const;

/** struct hv_device_interrupt_descriptor: 32 bytes with the target's fixed part. */
export const deviceInterruptDescriptorLayout = defineByteLayout("hv_device_interrupt_descriptor", 32, [
  { name: "interrupt_type", offset: 0, codec: u32 },
  { name: "trigger_mode", offset: 4, codec: u32 },
  { name: "vector_count", offset: 8, codec: u32 },
  { name: "reserved", offset: 12, codec: u32, reserved: true },
  { name: "target", offset: 16, codec: struct(deviceInterruptTargetLayout) },
] as const);

function mapInput<A extends HvArch>(arch: A) {
  const entry = interruptEntrySize(arch);
  return defineByteLayout("hv_input_map_device_interrupt", 24 + entry + 32, [
    { name: "partition_id", offset: 0, codec: u64 },
    { name: "device_id", offset: 8, codec: deviceIdCodec },
    { name: "flags", offset: 16, codec: u32 },
    { name: "base_irt_idx", offset: 20, codec: u32 },
    { name: "logical_interrupt_entry", offset: 24, codec: interruptEntryCodec(arch) },
    { name: "interrupt_descriptor", offset: 24 + entry, codec: struct(deviceInterruptDescriptorLayout) },
  ] as const);
}

function mapOutput<A extends HvArch>(arch: A) {
  const entry = interruptEntrySize(arch);
  return defineByteLayout("hv_output_map_device_interrupt", entry + 40, [
    { name: "interrupt_entry", offset: 0, codec: interruptEntryCodec(arch) },
    { name: "ext_status_deprecated[0]", offset: entry, codec: u64 },
    { name: "ext_status_deprecated[1]", offset: entry + 8, codec: u64 },
    { name: "ext_status_deprecated[2]", offset: entry + 16, codec: u64 },
    { name: "ext_status_deprecated[3]", offset: entry + 24, codec: u64 },
    { name: "ext_status_deprecated[4]", offset: entry + 32, codec: u64 },
  ] as const);
}

function unmapInput<A extends HvArch>(arch: A) {
  const entry = interruptEntrySize(arch);
  return defineByteLayout("hv_input_unmap_device_interrupt", 16 + entry + 4, [
    { name: "partition_id", offset: 0, codec: u64 },
    { name: "device_id", offset: 8, codec: deviceIdCodec },
    { name: "interrupt_entry", offset: 16, codec: interruptEntryCodec(arch) },
    { name: "flags", offset: 16 + entry, codec: u32 },
  ] as const);
}

function retargetInput<A extends HvArch>(arch: A) {
  const entry = interruptEntrySize(arch);
  return defineByteLayout("hv_retarget_device_interrupt", 16 + entry + 8 + 16, [
    { name: "partition_id", offset: 0, codec: u64 },
    { name: "device_id", offset: 8, codec: deviceIdCodec },
    { name: "int_entry", offset: 16, codec: interruptEntryCodec(arch) },
    { name: "reserved2", offset: 16 + entry, codec: u64, reserved: true },
    { name: "int_target", offset: 16 + entry + 8, codec: struct(deviceInterruptTargetLayout) },
  ] as const);
}

/** HVCALL_MAP_DEVICE_INTERRUPT input (fixed part: 72 bytes x86, 80 arm64; the VP set continues in the variable header). */
export const mapDeviceInterruptInputLayouts = { x64: mapInput("x64"), arm64: mapInput("arm64") } as const;
/** HVCALL_MAP_DEVICE_INTERRUPT output: the interrupt entry to program, then five deprecated status words. */
export const mapDeviceInterruptOutputLayouts = { x64: mapOutput("x64"), arm64: mapOutput("arm64") } as const;
/** HVCALL_UNMAP_DEVICE_INTERRUPT input: 36 bytes x86, 44 arm64. */
export const unmapDeviceInterruptInputLayouts = { x64: unmapInput("x64"), arm64: unmapInput("arm64") } as const;
/** HVCALL_RETARGET_INTERRUPT input (fixed part: 56 bytes x86, 64 arm64; the VP set continues in the variable header). */
export const retargetInterruptInputLayouts = { x64: retargetInput("x64"), arm64: retargetInput("arm64") } as const;

/** Byte offset of the target inside each input, for callers that need it (the var header follows the fixed part). */
export function interruptTargetOffset(layout: ByteLayout): number {
  for (const f of layout.fields) {
    if (f.name === "interrupt_descriptor") return f.offset + 16;
    if (f.name === "int_target") return f.offset;
  }
  throw new Error(`${layout.name} has no interrupt target`);
}

