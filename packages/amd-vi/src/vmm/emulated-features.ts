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
 */
export function emulatedFeatures(mode: TranslationMode, twoKInterrupts: boolean): EmulatedFeatures {
  const hostTranslation = mode === "shadow";
  const guestTranslation = mode !== "ir-only";
  const efr = u64FromRaw(
    encodeEfr({
      PrefSup: 1,
      PPRSup: 1,
      XTSup: 1,
      GTSup: guestTranslation ? 1 : 0,
      IASup: 1,
      GASup: 1,
      HATS: hostTranslation ? 2 : HATS_HOST_TRANSLATION_DISABLED,
      GATS: 0,
      GLXSup: 0,
      PASmax: guestTranslation ? 8 : 0,
      MsiCapMmioSup: 1,
      GIoSup: guestTranslation ? 1 : 0,
    }),
  );
  const efr2 = u64FromRaw(encodeEfr2({ NumIntRemapSup: twoKInterrupts ? 1 : 0 }));
  return { efr, efr2, hatDis: !hostTranslation, guestTranslation };
}
