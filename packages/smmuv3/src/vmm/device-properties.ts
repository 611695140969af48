import { decodeLayout, encodeLayout, PROPERTY_ON_OFF, type DeviceProperty, type TranslationMode } from "@viommu/core";
import { idr0Layout, idr1Layout, idr3Layout, idr5Layout } from "../format/id-registers.js";
import type { EmulatedIds } from "./emulated-idr.js";

/** IDR5.OAS encodings of the sizes QEMU's `oas` takes (IHI0070 §6.3.6: 0b100 44 bits, 0b101 48 bits). */
const OAS_CODE: Readonly<Record<string, number>> = { "44": 4, "48": 5 };
/** IHI0070 §6.3.2: SSIDSIZE is at most 20. */
const SSIDSIZE_MAX = 20;

/**
 * The emulated SMMUv3's properties under QEMU's names (hw/arm/smmuv3.c `smmuv3_properties`). QEMU 7.2's smmuv3 has
 * none of its own (smmu-common.c gives it `bus_num` and `primary-bus` only); QEMU 8.1 added `stage`, and the
 * accelerated SMMUv3 series (hw/arm/smmuv3-accel.c, `accel=on`) added `ril`, `ats`, `oas` and then `ssidsize`,
 * each overriding an ID register the way `smmuv3_accel_idr_override` does. This VMM always backs the guest's SMMU
 * with the host's (QEMU's accel=on), so a property absent leaves what the host offers (`emulatedIds`), which is
 * the default given here; QEMU's own defaults (ats off, oas 44, ssidsize 0) are named in each description. A value
 * the host cannot honour is refused when the device is created (`propertyHostProblem`), as QEMU refuses a host that
 * is not compatible.
 */
export const smmuv3Properties: readonly DeviceProperty[] = [
  {
    name: "stage",
    description: "translation stages offered to the guest (QEMU 8.1+: \"1\" IDR0.S1P, \"2\" IDR0.S2P, \"nested\" both); only \"1\" here: the host's stage 2 is the guest's RAM mapping, never the guest's to program",
    values: ["1", "2", "nested"],
    defaultValue: "1",
    check: (v) => (v === "1" ? undefined : "the emulated SMMU offers stage 1 only: stage 2 is the host's nesting parent (QEMU's accel=on accepts only stage=1 too)"),
  },
  {
    name: "ril",
    description: "range invalidation, IDR3.RIL (QEMU default on; off clears it, so the guest issues per-page TLBIs)",
    values: PROPERTY_ON_OFF,
    defaultValue: "on",
  },
  {
    name: "ats",
    description: "Address Translation Services, IDR0.ATS (QEMU default off; here the host's ATS by default); off also withdraws PRI, which needs ATS",
    values: PROPERTY_ON_OFF,
    defaultValue: "on",
  },
  {
    name: "oas",
    description: "output address size in bits, IDR5.OAS (QEMU: 44 or 48, default 44; here the host's, at most 48, by default)",
    values: ["44", "48"],
    defaultValue: "48",
  },
  {
    name: "ssidsize",
    description: "SubstreamID bits, IDR1.SSIDSIZE, 0 to 20 (QEMU default 0: no SubstreamIDs; here the host's by default)",
    defaultValue: "20",
    check: (v) => (/^\d+$/.test(v) && Number(v) <= SSIDSIZE_MAX ? undefined : `must be an integer from 0 to ${SSIDSIZE_MAX}`),
  },
];

/**
 * Why the host cannot give the guest what the properties ask (QEMU's smmuv3_accel_check_hw_compatible refuses the
 * same way), or undefined: ATS or a wider OAS or SSIDSIZE than the host's IDs (`host`, what the guest would be
 * offered without properties) allow; SubstreamIDs in shadow mode, which mirrors the untagged address space only.
 */
export function propertyHostProblem(host: EmulatedIds, properties: Readonly<Record<string, string>> | undefined, mode: TranslationMode): string | undefined {
  if (properties === undefined) return undefined;
  const h0 = decodeLayout(idr0Layout, Uint32Array.of(host.IDR0!));
  const h1 = decodeLayout(idr1Layout, Uint32Array.of(host.IDR1!));
  const h5 = decodeLayout(idr5Layout, Uint32Array.of(host.IDR5!));
  if (properties.ats === "on" && h0.ATS !== 1) return "ats=on: the host SMMU has no ATS (IDR0.ATS 0)";
  const oas = properties.oas;
  if (oas !== undefined && OAS_CODE[oas] !== undefined && OAS_CODE[oas]! > h5.OAS) return `oas=${oas}: the host SMMU's output (and the stage-2 IPA) is narrower (IDR5.OAS ${h5.OAS})`;
  const ssid = properties.ssidsize;
  if (ssid !== undefined && Number(ssid) > 0 && mode === "shadow") return `ssidsize=${ssid}: shadow mode mirrors the untagged address space only, no SubstreamIDs`;
  if (ssid !== undefined && Number(ssid) > h1.SSIDSIZE) return `ssidsize=${ssid}: the host SMMU has ${h1.SSIDSIZE} SubstreamID bits`;
  return undefined;
}

/** The ID registers with the properties applied (after `propertyHostProblem` accepted them). */
export function withProperties(ids: EmulatedIds, properties: Readonly<Record<string, string>> | undefined): EmulatedIds {
  if (properties === undefined) return ids;
  const idr0 = decodeLayout(idr0Layout, Uint32Array.of(ids.IDR0!));
  const idr1 = decodeLayout(idr1Layout, Uint32Array.of(ids.IDR1!));
  const idr3 = decodeLayout(idr3Layout, Uint32Array.of(ids.IDR3!));
  const idr5 = decodeLayout(idr5Layout, Uint32Array.of(ids.IDR5!));
  if (properties.ril !== undefined) idr3.RIL = properties.ril === "on" ? 1 : 0;
  if (properties.ats === "on") idr0.ATS = 1;
  if (properties.ats === "off") {
    // PRI is part of ATS (IHI0070 §3.9: page requests arrive as ATS translation failures); without it, no PRI queue.
    idr0.ATS = 0;
    idr0.PRI = 0;
    idr1.PRIQS = 0;
  }
  if (properties.oas !== undefined && OAS_CODE[properties.oas] !== undefined) idr5.OAS = OAS_CODE[properties.oas]!;
  if (properties.ssidsize !== undefined) idr1.SSIDSIZE = Number(properties.ssidsize);
  return {
    ...ids,
    IDR0: encodeLayout(idr0Layout, idr0)[0]!,
    IDR1: encodeLayout(idr1Layout, idr1)[0]!,
    IDR3: encodeLayout(idr3Layout, idr3)[0]!,
    IDR5: encodeLayout(idr5Layout, idr5)[0]!,
  };
}
