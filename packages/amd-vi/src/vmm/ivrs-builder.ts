import { encodeIvrs, IvrsBlockType, type IvhdBlock } from "../format/ivrs.js";
import { IvhdSpecialVariety, type IvhdDeviceEntry } from "../format/ivhd-device-entry.js";
import { AMDVI_CAPABILITY_OFFSET } from "../format/pci-capability.js";
import type { EmulatedFeatures } from "./emulated-features.js";

/** The topology one emulated IOMMU's IVRS describes. */
export interface IvrsTopology {
  readonly mmioBase: number;
  /** The IOMMU's own BDF. */
  readonly iommuDeviceId: number;
  readonly features: EmulatedFeatures;
  /** DeviceIDs beyond bus 0 that need their own SELECT entries (bus 0 is covered by a range). */
  readonly extraDeviceIds?: readonly number[];
  /** Which IVHD types to list (default 10h and 11h: iasl cannot disassemble 40h). */
  readonly ivhdTypes?: readonly (0x10 | 0x11 | 0x40)[];
  /** IVHD flags (default IVHD_FLAGS; device-iotlb=off clears IotlbSup). */
  readonly ivhdFlags?: number;
  /** Whether the IOAPIC SPECIAL entry is listed (interrupt remapping offered; default true). */
  readonly ioapic?: boolean;
}

/** IVHD flags QEMU writes: HtTunEn, IotlbSup, PrefSup, PPRSup (0xD1). The capability header agrees (pci-function.ts). */
export const IVHD_FLAGS = 0xd1;
/** The southbridge IOAPIC at 00:14.0 with IOAPIC id 0, as QEMU lists it (Linux needs it to enable remapping). */
const IOAPIC_DEVICE_ID = 0x00a0;
/** The address sizes IVinfo reports, and the IOMMU capability's Miscellaneous Information 0 repeats. */
export const ADDRESS_SIZES = { gvaSize: 2, paSize: 48, vaSize: 64 } as const;
/** IVinfo: EFRSup, GVAsize 2 (48-bit), PAsize 48, VAsize 64. */
const IV_INFO = 1 | (ADDRESS_SIZES.gvaSize << 5) | (ADDRESS_SIZES.paSize << 8) | (ADDRESS_SIZES.vaSize << 15);

/**
 * The IVRS a VMM publishes for one emulated AMD IOMMU, shaped like newer QEMU's: one IVHD per type with the
 * same device entries (Linux keeps only the highest type it supports), bus 0 as a START/END range, extra
 * SELECT entries, and the IOAPIC SPECIAL entry. IVHD 10h reports XTSup, GTSup and GASup in Feature
 * Reporting; 11h carries HATDis and the EFR/EFR2 images.
 */
export function buildIvrs(topology: IvrsTopology): Uint8Array {
  const entries: IvhdDeviceEntry[] = [
    { kind: "START_OF_RANGE", deviceId: 0x0000, dteSetting: 0 },
    { kind: "END_OF_RANGE", deviceId: 0x00ff, dteSetting: 0 },
    ...(topology.extraDeviceIds ?? []).filter((id) => id > 0xff).map((deviceId): IvhdDeviceEntry => ({ kind: "SELECT", deviceId, dteSetting: 0 })),
  ];
  if (topology.ioapic ?? true) entries.push({ kind: "SPECIAL", deviceId: 0, dteSetting: 0, handle: 0, sourceDeviceId: IOAPIC_DEVICE_ID, variety: IvhdSpecialVariety.IOAPIC });
  const f = topology.features;
  const efr = f.efr;
  const featureReporting = Number(efr & 4n ? 1 : 0) | (f.guestTranslation ? 1 << 2 : 0) | Number(efr & 0x80n ? 1 << 6 : 0);
  const blocks: IvhdBlock[] = (topology.ivhdTypes ?? [IvrsBlockType.IVHD_10, IvrsBlockType.IVHD_11]).map((type) => ({
    kind: "IVHD",
    type,
    flags: topology.ivhdFlags ?? IVHD_FLAGS,
    deviceId: topology.iommuDeviceId,
    capabilityOffset: AMDVI_CAPABILITY_OFFSET,
    baseAddress: BigInt(topology.mmioBase),
    pciSegment: 0,
    info: 0,
    features: type === IvrsBlockType.IVHD_10 ? featureReporting : f.hatDis ? 1 : 0,
    efr: type === IvrsBlockType.IVHD_10 ? undefined : efr,
    efr2: type === IvrsBlockType.IVHD_10 ? undefined : f.efr2,
    entries,
  }));
  return encodeIvrs({ ivInfo: IV_INFO, blocks });
}
