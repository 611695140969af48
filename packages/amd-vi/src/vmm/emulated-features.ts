import type { TranslationMode } from "@viommu/core";
import { encodeEfr, encodeEfr2, HATS_HOST_TRANSLATION_DISABLED } from "../format/extended-feature-register.js";
import { u64FromRaw } from "../format/layout-tools.js";

/** What the emulated IOMMU advertises, per translation mode. */
export interface EmulatedFeatures {
  readonly efr: bigint;
  readonly efr2: bigint;
  /** IVHD 11h/40h Attributes.HATDis: host (v1) translation not offered. */
  readonly hatDis: boolean;
  readonly guestTranslation: boolean;
}

/**
 * The EFR the guest sees. Nested: host translation is the host's (HATS = 3 and IVHD HATDis, as QEMU reports
 * with dma-translation off), guest (v2) translation is offered with GIoV, so a Linux guest picks v2 tables
 * ("iommu/amd: Add HATDis feature support"). Shadow: v1 and v2 both offered. IR-only: neither, so Linux runs
 * with no DMA translation and interrupt remapping only. Always: PPR log, x2APIC (XTSup), 128-bit IRTEs
 * (GASup), INVALIDATE_IOMMU_ALL, prefetch, and the MSI capability mirrored in MMIO.
 *
 * PASIDs: nested mode passes the guest's whole GCR3 table to the host, so it offers what the host unit walks:
 * `pasidBits` wide PASIDs (PASmax = bits − 1) with the GCR3 levels they need (GLXSup: 9 PASID bits per level).
 * The default is the specification's 20 bits; Linux drives at most 16 (amd_iommu_types.h PASID_MASK, and
 * init.c BUG_ONs when max_pasids has bits above it), so a VMM that runs real Linux guests must offer 16. Shadow
 * mode mirrors only PASID 0's table (PASmax = 0: max_pasids = 1, no PASID beyond it).
 */
export function emulatedFeatures(mode: TranslationMode, twoKInterrupts: boolean, pasidBits = 20, xtsup = true): EmulatedFeatures {
  const hostTranslation = mode === "shadow";
  const guestTranslation = mode !== "ir-only";
  const pasids = mode === "nested" ? Math.max(1, Math.min(20, Math.floor(pasidBits))) : 1;
  const efr = u64FromRaw(
    encodeEfr({
      PrefSup: 1,
      PPRSup: 1,
      XTSup: xtsup ? 1 : 0,
      GTSup: guestTranslation ? 1 : 0,
      IASup: 1,
      GASup: 1,
      HATS: hostTranslation ? 2 : HATS_HOST_TRANSLATION_DISABLED,
      GATS: 0,
      GLXSup: pasids > 18 ? 2 : pasids > 9 ? 1 : 0,
      PASmax: pasids - 1,
      MsiCapMmioSup: 1,
      GIoSup: guestTranslation ? 1 : 0,
    }),
  );
  const efr2 = u64FromRaw(encodeEfr2({ NumIntRemapSup: twoKInterrupts ? 1 : 0 }));
  return { efr, efr2, hatDis: !hostTranslation, guestTranslation };
}
