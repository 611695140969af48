import { decodeLayout, encodeLayout, type TranslationMode } from "@viommu/core";
import { idr0Layout, idr1Layout, idr3Layout, idr5Layout, IdrStallModel, IdrTtEndian, IdrTtf } from "../format/id-registers.js";
import { IDR4_MODEL_MAP_NOTIFY } from "../format/model-registers.js";
import type { HwInfoArmSmmuv3 } from "../format/uapi.js";

/** The emulated SMMU's identification: IDR0..5, IIDR, AIDR by register name. */
export type EmulatedIds = Readonly<Record<string, number>>;

/** IPA size of the host's stage 2 (48 bits): the guest's output addresses cannot be wider. */
const IPA_OAS_CODE = 5;
/** StreamIDs the VMM shows (PCI requester ids): no wider than the host's either. */
const SIDSIZE_MAX = 16;
/** The queue sizes the VMM lets the guest choose up to (it reads them from guest memory itself). */
const QUEUE_LOG2_MAX = 19;

/** What the guest is offered when the host reports nothing (shadow mode without hw_info, the walk tool's default). */
const DEFAULT_HOST: HwInfoArmSmmuv3 = {
  flags: 0,
  reserved: 0,
  idr: [
    encodeLayout(idr0Layout, { S1P: 1, TTF: IdrTtf.AArch64, COHACC: 1, ATS: 1, ASID16: 1, CD2L: 1, TTENDIAN: 2, STALL_MODEL: 1, TERM_MODEL: 1, ST_LEVEL: 1 })[0]!,
    encodeLayout(idr1Layout, { SIDSIZE: 16, SSIDSIZE: 20 })[0]!,
    0,
    encodeLayout(idr3Layout, { HAD: 1, RIL: 1, BBML: 2 })[0]!,
    0,
    encodeLayout(idr5Layout, { OAS: 5, GRAN4K: 1, GRAN16K: 1, GRAN64K: 1 })[0]!,
  ],
  iidr: 0x43b,
  aidr: 0x02,
};

/**
 * The ID registers of the SMMU the VMM shows its guest (QEMU's accelerated SMMUv3 does the same, and refuses a
 * host that lacks what it shows: hw/arm/smmuv3-accel.c, smmuv3_accel_check_hw_compatible): a stage-1-only SMMU,
 * since the host owns stage 2, that claims nothing the host unit lacks. From the host's hw_info: stage 1 and
 * AArch64 tables (only if the host has them), coherency, ATS, 16-bit ASIDs, 2-level CD tables, SubstreamID width,
 * StreamID width (at most 16), RIL, HAD, BBML, the granules, an OAS no wider than the host's nor than the stage-2
 * IPA, IIDR/AIDR. The VMM's own: little-endian tables only (it walks the guest's tables itself too), MSIs and SEV
 * (it signals them), 2-level stream tables (it reads the stream table), terminate-only stalls with TERM_MODEL,
 * queue sizes. In nested mode, where the host's hardware serves the guest's CD tables and its page requests reach
 * the VMM through a fault queue: PRI (with ATS, a PRI queue up to the host's size) when the host has it, and the
 * stall model when the host can both stall and terminate (the VMM relays stall events and CMD_RESUME), else
 * terminate-only with TERM_MODEL (IHI0070 §3.12.2.3: a hypervisor reports the stall model as unsupported unless it
 * virtualizes it). Never offered: stage 2, HYP, HTTU, ATOS, VMID16, BTM. In shadow mode, where the VMM mirrors the
 * untagged address space only, no SubstreamIDs, PRI or stalls; IDR4 asks for map notifications
 * (`IDR4_MODEL_MAP_NOTIFY`).
 */
export function emulatedIds(host: HwInfoArmSmmuv3 | undefined, mode: TranslationMode): EmulatedIds {
  const h = host ?? DEFAULT_HOST;
  const h0 = decodeLayout(idr0Layout, Uint32Array.of(h.idr[0] ?? 0));
  const h1 = decodeLayout(idr1Layout, Uint32Array.of(h.idr[1] ?? 0));
  const h3 = decodeLayout(idr3Layout, Uint32Array.of(h.idr[3] ?? 0));
  const h5 = decodeLayout(idr5Layout, Uint32Array.of(h.idr[5] ?? 0));
  const aarch64 = (h0.TTF & IdrTtf.AArch64) !== 0;
  const nested = mode === "nested" && host !== undefined;
  const pri = nested && h0.PRI === 1 && h0.ATS === 1;
  const stalls = nested && h0.STALL_MODEL === IdrStallModel.StallAndTerminate;
  const littleEndian = h0.TTENDIAN !== IdrTtEndian.BigOnly;
  const idr0 = encodeLayout(idr0Layout, {
    S1P: h0.S1P === 1 && aarch64 && littleEndian ? 1 : 0,
    TTF: aarch64 ? IdrTtf.AArch64 : 0,
    COHACC: h0.COHACC,
    ATS: h0.ATS,
    ASID16: h0.ASID16,
    MSI: 1,
    SEV: 1,
    CD2L: h0.CD2L,
    PRI: pri ? 1 : 0,
    TTENDIAN: IdrTtEndian.LittleOnly,
    STALL_MODEL: stalls ? IdrStallModel.StallAndTerminate : IdrStallModel.TerminateOnly,
    TERM_MODEL: 1,
    ST_LEVEL: 1,
  })[0]!;
  const idr1 = encodeLayout(idr1Layout, {
    SIDSIZE: Math.min(SIDSIZE_MAX, h1.SIDSIZE),
    SSIDSIZE: mode === "shadow" ? 0 : h1.SSIDSIZE,
    PRIQS: pri ? Math.min(QUEUE_LOG2_MAX, h1.PRIQS) : 0,
    EVENTQS: QUEUE_LOG2_MAX,
    CMDQS: QUEUE_LOG2_MAX,
  })[0]!;
  const idr3 = encodeLayout(idr3Layout, { HAD: h3.HAD, RIL: h3.RIL, BBML: h3.BBML })[0]!;
  const idr5 = encodeLayout(idr5Layout, { OAS: Math.min(h5.OAS, IPA_OAS_CODE), GRAN4K: h5.GRAN4K, GRAN16K: h5.GRAN16K, GRAN64K: h5.GRAN64K })[0]!;
  return {
    IDR0: idr0,
    IDR1: idr1,
    IDR2: 0,
    IDR3: idr3,
    IDR4: mode === "shadow" ? IDR4_MODEL_MAP_NOTIFY : 0,
    IDR5: idr5,
    IIDR: h.iidr,
    AIDR: h.aidr,
  };
}
