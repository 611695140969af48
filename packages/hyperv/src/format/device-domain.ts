import { decodeLayout, defineLayout, encodeLayout, type Fields } from "@viommu/core";
import { bits, defineByteLayout, padding, u64 } from "./byte-layout.js";

/**
 * Device domains of the Hyper-V pvIOMMU hypercalls (spec arm-hyperv-virtio.md §5.4). These hypercalls are
 * PROVISIONAL: they come from two public, not-yet-merged Linux patch series (Yu Zhang et al. "Hyper-V guest
 * pvIOMMU", Mukesh Rathor "PCI passthru for Hyper-V root / L1VH"), not from a published TLFS edition, so codes
 * and layouts may still change. Layouts follow the series' include/hyperv/hvhdk_mini.h additions.
 */

/** HV_DEVICE_DOMAIN_TYPE_*: series (b) defines all three; series (a) only S1. */
export const HvDeviceDomainType = {
  HV_DEVICE_DOMAIN_TYPE_S2: 0,
  HV_DEVICE_DOMAIN_TYPE_S1: 1,
  HV_DEVICE_DOMAIN_TYPE_SOC: 2,
} as const;

/** The default (identity) domain id and the NULL domain id (series (b) calls them S2_DEFAULT / S2_NULL). */
export const HV_DEVICE_DOMAIN_ID_DEFAULT = 0;
export const HV_DEVICE_DOMAIN_ID_NULL = 0xffffffff;
/** The ids a guest allocates its own domains from (pvIOMMU driver: DEFAULT + 1 .. NULL − 1). */
export const HV_DEVICE_DOMAIN_ID_FIRST = HV_DEVICE_DOMAIN_ID_DEFAULT + 1;
export const HV_DEVICE_DOMAIN_ID_LAST = HV_DEVICE_DOMAIN_ID_NULL - 1;

/** union hv_device_domain_id: type [3:0], reserved [31:4], id [63:32]. */
export const deviceDomainIdLayout = defineLayout("hv_device_domain_id", 64, [
  { name: "type", bit: 0, width: 4 },
  { name: "id", bit: 32, width: 32 },
] as const);

export type DeviceDomainId = Fields<typeof deviceDomainIdLayout>;

export function encodeDeviceDomainId(id: Partial<DeviceDomainId>): bigint {
  const raw = encodeLayout(deviceDomainIdLayout, id);
  return (BigInt(raw[1]!) << 32n) | BigInt(raw[0]!);
}

export function decodeDeviceDomainId(value: bigint): DeviceDomainId {
  const v = value & ((1n << 64n) - 1n);
  return decodeLayout(deviceDomainIdLayout, Uint32Array.of(Number(v & 0xffffffffn), Number(v >> 32n)));
}

/** union hv_input_vtl (one byte, Linux hvgdk_mini.h): target_vtl [3:0], use_target_vtl 4, reserved_z [7:5]. */
export const inputVtlLayout = defineLayout("hv_input_vtl", 32, [
  { name: "target_vtl", bit: 0, width: 4 },
  { name: "use_target_vtl", bit: 4, width: 1 },
] as const);

/** struct hv_input_device_domain (24 bytes): names one device domain of one partition. */
export const inputDeviceDomainLayout = defineByteLayout("hv_input_device_domain", 24, [
  { name: "partition_id", offset: 0, codec: u64 },
  { name: "owner_vtl", offset: 8, codec: bits(inputVtlLayout, 1) },
  { name: "padding", offset: 9, codec: padding(7), reserved: true },
  { name: "domain_id", offset: 16, codec: bits(deviceDomainIdLayout, 8) },
] as const);
