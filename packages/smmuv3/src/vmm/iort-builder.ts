import { encodeIort, IortSmmuV3Flags, IortSmmuV3Model, type IortTable } from "../format/iort.js";

/** QEMU virt's SMMUv3: MMIO at 0x09050000 (two 64 KiB pages), wired interrupts from SPI 74 (GSIV 0x6a). */
export const DEFAULT_SMMU_BASE = 0x0905_0000;
export const SMMU_MMIO_BYTES = 0x2_0000;
export const DEFAULT_EVENT_GSIV = 0x6a;

/** The wired interrupts of one SMMU: QEMU's order event, PRI, sync, GERROR (spec §1.3). */
export interface SmmuGsivs {
  readonly event: number;
  readonly pri: number;
  readonly sync: number;
  readonly gerror: number;
}

export function smmuGsivs(instance: number): SmmuGsivs {
  const event = DEFAULT_EVENT_GSIV + instance * 4;
  return { event, pri: event + 1, sync: event + 2, gerror: event + 3 };
}

export interface IortTopology {
  readonly smmuBase: number;
  readonly gsivs: SmmuGsivs;
  /** PCI segment of the root complex behind the SMMU. */
  readonly pciSegment?: number;
}

/**
 * The IORT a VMM publishes for one SMMUv3 (Arm DEN 0049; spec §3), shaped like QEMU's virt table: an ITS group,
 * the SMMUv3 node (COHACC override, generic model, its GSIVs, its StreamIDs 0..0xFFFF mapped to ITS DeviceIDs
 * for MSIs) and a revision-3 PCI root complex whose RequesterIDs 0..0xFFFF are the SMMU's StreamIDs. "Number
 * of IDs" is written the specification's way, count − 1 (QEMU mixes conventions, spec §9.6).
 */
export function buildIort(topology: IortTopology): Uint8Array {
  const table: IortTable = {
    revision: 3,
    nodes: [
      { type: "its-group", itsIdentifiers: [0] },
      {
        type: "smmuv3",
        baseAddress: BigInt(topology.smmuBase),
        flags: IortSmmuV3Flags.CohaccOverride,
        model: IortSmmuV3Model.Generic,
        eventGsiv: topology.gsivs.event,
        priGsiv: topology.gsivs.pri,
        gerrGsiv: topology.gsivs.gerror,
        syncGsiv: topology.gsivs.sync,
        mappings: [{ inputBase: 0, idCount: 0xffff, outputBase: 0, outputNode: 0 }],
      },
      {
        type: "root-complex",
        memoryAccess: { cacheCoherency: 1, allocationHints: 0, memoryAccessFlags: 3 },
        atsAttribute: 0,
        pciSegment: topology.pciSegment ?? 0,
        memoryAddressSizeLimit: 64,
        mappings: [{ inputBase: 0, idCount: 0xffff, outputBase: 0, outputNode: 1 }],
      },
    ],
  };
  return encodeIort(table);
}
