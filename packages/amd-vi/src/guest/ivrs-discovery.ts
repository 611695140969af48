import { decodeIvrs, IvrsBlockType, type IvhdBlock } from "../format/ivrs.js";
import { IvhdSpecialVariety } from "../format/ivhd-device-entry.js";

/** What the guest driver learns about its IOMMU from firmware (Linux init.c, early_amd_iommu_init). */
export interface DiscoveredIommu {
  readonly base: number;
  /** The IOMMU function's own DeviceID (its BDF) and where its IOMMU capability sits in configuration space. */
  readonly deviceId: number;
  readonly capabilityOffset: number;
  /** The IVHD type Linux settled on (the highest type ≤ 0x40 listed for the first IOMMU's DeviceID). */
  readonly ivhdType: number;
  /** IVHD flags (HtTunEn, PassPW, ResPassPW, Isoc are copied into Control). */
  readonly flags: number;
  /** IVHD 11h/40h EFR image, or undefined for 10h. */
  readonly efr: bigint | undefined;
  readonly efr2: bigint | undefined;
  /** IVHD 10h Feature Reporting. */
  readonly featureReporting: number | undefined;
  /** IVHD 11h/40h Attributes bit 0: host (v1) translation not supported. */
  readonly hatDis: boolean;
  /** The highest DeviceID the IVHD covers (sizes the device table). */
  readonly lastBdf: number;
  /** The southbridge IOAPIC's DeviceID (Linux disables remapping without one). */
  readonly ioapicDeviceId: number | undefined;
}

function lastBdfOf(block: IvhdBlock): number {
  let last = 0;
  for (const e of block.entries) {
    if (e.kind === "UNKNOWN") continue;
    // IVHD_DEV_ALL covers every DeviceID.
    if (e.kind === "ALL") last = 0xffff;
    last = Math.max(last, e.deviceId);
    if (e.kind === "ALIAS_SELECT" || e.kind === "ALIAS_START_OF_RANGE" || e.kind === "SPECIAL") last = Math.max(last, e.sourceDeviceId);
  }
  return last;
}

/**
 * Finds the IOMMU in the IVRS table the VMM published, as Linux does; without a usable IVRS the driver falls
 * back to the register block the VMM named (the model's stand-in for PCI discovery), assuming 256 DeviceIDs.
 */
export function discoverIommu(tables: readonly { readonly signature: string; readonly bytes: Uint8Array }[], fallbackBase: number): DiscoveredIommu {
  // Without IVRS: the first AMD IOMMU's usual place, 00:00.2 with its capability at 0x40.
  const fallback: DiscoveredIommu = { base: fallbackBase, deviceId: 0x0002, capabilityOffset: 0x40, ivhdType: 0, flags: 0, efr: undefined, efr2: undefined, featureReporting: undefined, hatDis: false, lastBdf: 0xff, ioapicDeviceId: undefined };
  const table = tables.find((t) => t.signature === "IVRS");
  if (table === undefined) return fallback;
  const decoded = decodeIvrs(table.bytes);
  if (!decoded.ok) return fallback;
  const ivhds = decoded.table.blocks.filter((b): b is IvhdBlock => b.kind === "IVHD");
  const first = ivhds[0];
  if (first === undefined) return fallback;
  const type = Math.max(...ivhds.filter((b) => b.deviceId === first.deviceId && b.type <= IvrsBlockType.IVHD_40).map((b) => b.type));
  const chosen = ivhds.find((b) => b.type === type && b.deviceId === first.deviceId)!;
  const special = chosen.entries.find((e) => e.kind === "SPECIAL" && e.variety === IvhdSpecialVariety.IOAPIC);
  return {
    base: Number(chosen.baseAddress),
    deviceId: chosen.deviceId,
    capabilityOffset: chosen.capabilityOffset,
    ivhdType: type,
    flags: chosen.flags,
    efr: chosen.efr,
    efr2: chosen.efr2,
    featureReporting: type === IvrsBlockType.IVHD_10 ? chosen.features : undefined,
    hatDis: type !== IvrsBlockType.IVHD_10 && (chosen.features & 1) === 1,
    lastBdf: lastBdfOf(chosen),
    ioapicDeviceId: special !== undefined && special.kind === "SPECIAL" ? special.sourceDeviceId : undefined,
  };
}
