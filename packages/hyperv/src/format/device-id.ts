import { decodeLayout, defineLayout, encodeLayout, hasReservedBits, type Fields, type Layout } from "@viommu/core";
import type { ByteCodec, FlatFields } from "./byte-layout.js";

/**
 * HV_DEVICE_ID: the 64-bit device identity every device hypercall names (spec arm-hyperv-virtio.md §5.2; Linux
 * include/hyperv/hvhdk_mini.h `union hv_device_id`). Bits [63:62] select the view; the other bits of each view
 * not declared here are reserved (rsvdz).
 */
export const HvDeviceType = {
  HV_DEVICE_TYPE_LOGICAL: 0,
  HV_DEVICE_TYPE_PCI: 1,
  HV_DEVICE_TYPE_IOAPIC: 2,
  HV_DEVICE_TYPE_ACPI: 3,
} as const;

export const logicalDeviceIdLayout = defineLayout("HV_DEVICE_ID.logical", 64, [
  { name: "id", bit: 0, width: 62, big: true },
  { name: "device_type", bit: 62, width: 2 },
] as const);

/** PCI view: rid = bus:device.function, then segment, the shadow bus range and the phantom function bits. */
export const pciDeviceIdLayout = defineLayout("HV_DEVICE_ID.pci", 64, [
  { name: "function", bit: 0, width: 3 },
  { name: "device", bit: 3, width: 5 },
  { name: "bus", bit: 8, width: 8 },
  { name: "segment", bit: 16, width: 16 },
  { name: "subordinate_bus", bit: 32, width: 8 },
  { name: "secondary_bus", bit: 40, width: 8 },
  { name: "phantom_function_bits", bit: 48, width: 2 },
  { name: "source_shadow", bit: 50, width: 1 },
  { name: "device_type", bit: 62, width: 2 },
] as const);

export const ioapicDeviceIdLayout = defineLayout("HV_DEVICE_ID.ioapic", 64, [
  { name: "ioapic_id", bit: 0, width: 8 },
  { name: "device_type", bit: 62, width: 2 },
] as const);

export const acpiDeviceIdLayout = defineLayout("HV_DEVICE_ID.acpi", 64, [
  { name: "input_mapping_base", bit: 0, width: 32 },
  { name: "input_mapping_count", bit: 32, width: 30 },
  { name: "device_type", bit: 62, width: 2 },
] as const);

/** HV_SOURCE_SHADOW_* values of the PCI view's source_shadow bit. */
export const HV_SOURCE_SHADOW_NONE = 0;
export const HV_SOURCE_SHADOW_BRIDGE_BUS_RANGE = 1;

export type HvDeviceId =
  | { readonly kind: "LOGICAL"; readonly fields: Fields<typeof logicalDeviceIdLayout> }
  | { readonly kind: "PCI"; readonly fields: Fields<typeof pciDeviceIdLayout> }
  | { readonly kind: "IOAPIC"; readonly fields: Fields<typeof ioapicDeviceIdLayout> }
  | { readonly kind: "ACPI"; readonly fields: Fields<typeof acpiDeviceIdLayout> };

const layoutsByType: readonly Layout[] = [logicalDeviceIdLayout, pciDeviceIdLayout, ioapicDeviceIdLayout, acpiDeviceIdLayout];
const kinds = ["LOGICAL", "PCI", "IOAPIC", "ACPI"] as const;

function toRaw(value: bigint): Uint32Array {
  const v = value & ((1n << 64n) - 1n);
  return Uint32Array.of(Number(v & 0xffffffffn), Number(v >> 32n));
}

function fromRaw(raw: Uint32Array): bigint {
  return (BigInt(raw[1]!) << 32n) | BigInt(raw[0]!);
}

/** Decodes any 64-bit device id by its device_type; never throws. */
export function decodeDeviceId(value: bigint): HvDeviceId {
  const raw = toRaw(value);
  const type = raw[1]! >>> 30;
  return { kind: kinds[type]!, fields: decodeLayout(layoutsByType[type]!, raw) } as HvDeviceId;
}

/** Why a device id is malformed (reserved bits of its view set), or undefined. */
export function deviceIdProblem(value: bigint): string | undefined {
  const raw = toRaw(value);
  const layout = layoutsByType[raw[1]! >>> 30]!;
  return hasReservedBits(layout, raw) ? `${layout.name}: reserved bits set` : undefined;
}

export function logicalDeviceId(id: bigint | number): bigint {
  return fromRaw(encodeLayout(logicalDeviceIdLayout, { id: BigInt(id), device_type: HvDeviceType.HV_DEVICE_TYPE_LOGICAL }));
}

export function pciDeviceId(fields: Omit<Partial<Fields<typeof pciDeviceIdLayout>>, "device_type">): bigint {
  return fromRaw(encodeLayout(pciDeviceIdLayout, { ...fields, device_type: HvDeviceType.HV_DEVICE_TYPE_PCI }));
}

export function ioapicDeviceId(ioapicId: number): bigint {
  return fromRaw(encodeLayout(ioapicDeviceIdLayout, { ioapic_id: ioapicId, device_type: HvDeviceType.HV_DEVICE_TYPE_IOAPIC }));
}

export function acpiDeviceId(inputMappingBase: number, inputMappingCount: number): bigint {
  return fromRaw(
    encodeLayout(acpiDeviceIdLayout, {
      input_mapping_base: inputMappingBase,
      input_mapping_count: inputMappingCount,
      device_type: HvDeviceType.HV_DEVICE_TYPE_ACPI,
    }),
  );
}

/**
 * The device id Linux's vPCI driver (drivers/pci/controller/pci-hyperv.c) passes to HVCALL_RETARGET_INTERRUPT,
 * built from the VMBus device-instance GUID bytes b[] (in memory order) and the PCI function:
 * (b[5] << 24) | (b[4] << 16) | (b[7] << 8) | (b[6] & 0xF8) | function (spec §5.2).
 */
export function vpciDeviceId(instanceGuid: Uint8Array, pciFunction: number): bigint {
  if (instanceGuid.length !== 16) throw new RangeError(`a GUID has 16 bytes, got ${instanceGuid.length}`);
  if (!Number.isInteger(pciFunction) || pciFunction < 0 || pciFunction > 7) throw new RangeError(`PCI function ${pciFunction}`);
  const b = instanceGuid;
  return BigInt((((b[5]! << 24) | (b[4]! << 16) | (b[7]! << 8) | (b[6]! & 0xf8) | pciFunction) >>> 0));
}

/** Encodes a decoded device id back to its 64-bit value (the view's own fields; undeclared bits zero). */
export function encodeDeviceId(id: HvDeviceId): bigint {
  const layout = layoutsByType[kinds.indexOf(id.kind)]!;
  return fromRaw(encodeLayout(layout, id.fields as Partial<Fields<Layout>>));
}

/** An 8-byte hv_device_id member: decodes to its typed view, encodes from a raw value or a decoded view. */
export const deviceIdCodec: ByteCodec<HvDeviceId, bigint | HvDeviceId> = {
  size: 8,
  read(view, offset): HvDeviceId {
    return decodeDeviceId(view.getBigUint64(offset, true));
  },
  write(view, offset, value): void {
    const v = typeof value === "bigint" ? value : encodeDeviceId(value);
    if (v < 0n || v >= 1n << 64n) throw new RangeError(`device id ${v} does not fit 64 bits`);
    view.setBigUint64(offset, v, true);
  },
  flatten(value, prefix, out: FlatFields): void {
    out[`${prefix}.kind`] = value.kind;
    for (const [k, v] of Object.entries(value.fields)) out[`${prefix}.${k}`] = v;
  },
  problem(view, offset): string | undefined {
    return deviceIdProblem(view.getBigUint64(offset, true));
  },
};
