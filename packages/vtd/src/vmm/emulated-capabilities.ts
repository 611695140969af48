import type { TranslationMode } from "@viommu/core";
import { encodeCap, sagawFor, SLLPS_1G, SLLPS_2M } from "../format/cap.js";
import { encodeEcap } from "../format/ecap.js";
import { vtdDeviceConfig, type VtdDeviceConfig } from "./device-properties.js";

/** Host address width of the emulated unit (QEMU `aw-bits=48`): the DMAR HAW and CAP.MGAW + 1. */
export const EMULATED_HAW = 48;
/** Version 3.0: the first with scalable mode. */
export const EMULATED_VERSION = 0x30;
/** Fault-recording registers at 0x220 (QEMU's place), eight of them, so overflow needs eight pending faults. */
export const EMULATED_FRO = 0x22;
export const EMULATED_FAULT_RECORDS = 8;
/** IVA/IOTLB registers at 0xF0/0xF8 (QEMU's place). */
export const EMULATED_IRO = 0xf;
/** Largest address mask of a page-selective invalidation (2^18 pages = 1 GiB). */
export const EMULATED_MAMV = 18;
export const EMULATED_MHMV = 0xf;
/** The register page: one 4 KiB page (DRHD Size 0). */
export const EMULATED_REGISTER_BYTES = 0x1000;

/** The CAP and ECAP the emulated unit advertises to its guest. */
export interface EmulatedRegisters {
  readonly cap: Uint32Array;
  readonly ecap: Uint32Array;
}

/**
 * What the VMM's unit offers. Caching mode (CAP.CM) whenever DMA is translated, so the guest announces every
 * map and the VMM sees not-present → present changes (shadowing needs it; nesting tolerates it, as QEMU keeps
 * it for passthrough devices). Scalable mode offers first-level tables only (like QEMU `x-flts=on`): the one
 * format hardware can nest over the host's second level, and the one a scalable-mode guest is shadowed from.
 * Legacy mode offers second-level tables (3 and 4 levels). With nesting, PASID-granular requests (ECAP.PASID,
 * 20-bit PASIDs: PSS = 19): the VMM attaches each guest PASID's first-level table at that PASID of the host
 * device; a shadowing VMM would need an address space per PASID, so it offers none (the guest then binds only
 * RID_PASID). No nesting offered to the guest, no posted interrupts to the guest (the host posts), no snoop
 * control.
 */
export function emulatedRegisters(mode: TranslationMode, config: VtdDeviceConfig = defaultConfig(mode)): EmulatedRegisters {
  const cap = encodeCap({
    ND: 6,
    CM: config.cachingMode ? 1 : 0,
    // vtd_cap_init: SAGAW 39-bit at aw-bits >= 39, 48-bit at >= 48.
    SAGAW: sagawFor(config.awBits >= 48 ? [3, 4] : [3]),
    MGAW: config.awBits - 1,
    FRO: EMULATED_FRO,
    SLLPS: SLLPS_2M | SLLPS_1G,
    PSI: 1,
    NFR: EMULATED_FAULT_RECORDS - 1,
    MAMV: EMULATED_MAMV,
    FL1GP: config.scalable && config.fs1gp ? 1 : 0,
    DRD: config.dmaDrain ? 1 : 0,
    DWD: config.dmaDrain ? 1 : 0,
  });
  const ecap = encodeEcap({
    QI: 1,
    DT: config.deviceIotlb ? 1 : 0,
    IR: config.intremap ? 1 : 0,
    EIM: config.eim ? 1 : 0,
    PT: config.pt ? 1 : 0,
    SC: config.snoopControl ? 1 : 0,
    IRO: EMULATED_IRO,
    MHMV: EMULATED_MHMV,
    PRS: config.scalable ? 1 : 0,
    PSS: config.pasid ? 19 : 0,
    PASID: config.pasid ? 1 : 0,
    SMTS: config.scalable ? 1 : 0,
    FLTS: config.scalable ? 1 : 0,
  });
  return { cap, ecap };
}

/** The unit without properties. */
function defaultConfig(mode: TranslationMode): VtdDeviceConfig {
  const config = vtdDeviceConfig(mode);
  if (!config.ok) throw new Error(config.error.message);
  return config.value;
}
