import { EFR_SNPSUP_BIT } from "./extended-feature-register.js";

/**
 * SEV / SEV-SNP facts as data (spec x86.md B10).
 *
 * Guest side (B10.1; patch series "iommu/amd: Add AMD IOMMU emulation support for SEV-SNP guest kernel",
 * Suravee Suthikulpanit, 2024-04-30, ALLOC_MODE_GUEST_MEM_DECRYPT / ALLOC_MODE_4K; not found merged in the
 * torvalds/linux snapshots read): an SEV-SNP guest driving an emulated AMD IOMMU places the structures the
 * VMM must read or write in shared (decrypted, C-bit clear) memory, and programs their guest-physical
 * addresses without the C-bit. The series forces the guest's default DMA domain to identity, so only
 * interrupt remapping is emulated and no DMA page tables are shared.
 */
export interface SnpGuestStructure {
  /** Which structure. */
  readonly structure: "device-table" | "command-buffer" | "completion-wait-semaphore" | "event-log" | "interrupt-remapping-table" | "ppr-log" | "ga-log";
  /** Allocated in shared (C-bit clear) memory so the VMM can access it. */
  readonly shared: boolean;
  /** Allocated as 4 KiB pages (ALLOC_MODE_4K), as SNP's RMP needs for IOMMU-written pages. */
  readonly fourKiBPages: boolean;
  /** Whether the series addresses the structure at all. */
  readonly addressed: boolean;
}

export const snpGuestStructures: readonly SnpGuestStructure[] = [
  { structure: "device-table", shared: true, fourKiBPages: false, addressed: true },
  { structure: "command-buffer", shared: true, fourKiBPages: false, addressed: true },
  { structure: "completion-wait-semaphore", shared: true, fourKiBPages: true, addressed: true },
  { structure: "event-log", shared: true, fourKiBPages: true, addressed: true },
  { structure: "interrupt-remapping-table", shared: true, fourKiBPages: false, addressed: true },
  { structure: "ppr-log", shared: false, fourKiBPages: true, addressed: true },
  { structure: "ga-log", shared: false, fourKiBPages: false, addressed: false },
];

/** The structures an SNP guest's vIOMMU must find in shared memory. */
export function snpSharedStructures(): readonly SnpGuestStructure["structure"][] {
  return snpGuestStructures.filter((s) => s.shared).map((s) => s.structure);
}

/** The EFR bit that reports SEV-SNP support (Linux FEATURE_SNP; Xen still calls bit 63 reserved). */
export const SNP_EFR_BIT = EFR_SNPSUP_BIT;

/**
 * Host side (B10.2; Linux init.c / iommu.c with EFR.SNPSup): rules a model of an SNP host IOMMU keeps.
 */
export const snpHostRules = {
  /** Exclusion base/limit become the completion-wait write-back range; Linux writes base = limit = the semaphore page. */
  exclusionRegistersAreCompletionStore: true,
  /** Event log, PPR log and completion-wait semaphore are 4 KiB pages (Linux set_memory_4k / iommu_alloc_4k_pages). */
  fourKiBPageStructures: ["event-log", "ppr-log", "completion-wait-semaphore"] as const,
  /** A DTE with TV = 1 needs a non-zero DomainID. */
  translationValidNeedsDomainId: true,
  /** Without EFR2 "page mode 0" support, v1 tables with DTE Mode ≠ 0 are required: no pass-through, no v2. */
  requiresV1Translation: true,
  /** vAPIC (GAMEn) stays off unless EFR2.SNPAVICSup = 1; then Linux sets Control.SNPAVICEn. */
  vapicNeedsSnpAvicSup: true,
} as const;

/** Clears the memory-encryption (C-) bit at `cBit` from an address read from a structure an SME/SEV side wrote. */
export function stripCBit(address: number, cBit: number): number {
  const bit = 2 ** cBit;
  return Math.floor(address / bit) % 2 === 1 ? address - bit : address;
}
