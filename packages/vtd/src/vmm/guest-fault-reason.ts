import { Perm, WalkFault, type WalkResult } from "@viommu/core";
import { VtdFaultReason } from "../format/fault-reasons.js";

/**
 * The fault reason a VT-d unit reports for a failed walk of a guest's table, by translation kind. Legacy
 * second-level walks use QEMU's and Linux's legacy codes: an entry with R = W = 0 is a missing right (0x5 for
 * a write, 0x6 for a read), reserved bits 0xC, an input beyond the width 0x4; a table outside memory is 0x3
 * at the top level (reached through the context entry's SLPTPTR: the context entry is programmed invalidly,
 * LCT.4) and 0x7 below it (reached through a paging entry, LSL.1), as QEMU's vtd_iova_to_slpte() has it too.
 * Scalable-mode walks use the scalable codes (Linux `dma_remap_sm_fault_reasons`); see scalableSecondLevelReason.
 */
export function legacySecondLevelReason(walk: WalkResult, write: boolean, startLevel: number): number {
  switch (walk.fault) {
    case WalkFault.AddressSize:
      return VtdFaultReason.ADDR_BEYOND_MGAW;
    case WalkFault.Reserved:
      return VtdFaultReason.PAGING_ENTRY_RSVD;
    case WalkFault.External:
      return walk.level >= startLevel ? VtdFaultReason.CONTEXT_ENTRY_INV : VtdFaultReason.PAGING_ENTRY_INV;
    default:
      return write ? VtdFaultReason.WRITE : VtdFaultReason.READ;
  }
}

/**
 * Scalable-mode second-stage walks: a table outside memory is 7Bh (SSL.4) at the top level, reached through the
 * PASID entry's SSPTPTR, and 78h (SSL.1) below it, reached through a paging entry; Linux names 7Bh "Invalid
 * second-level page table pointer" and VirtualBox's DMAR (src/VBox/Devices/Bus/DevIommuIntel.cpp) reports its
 * SSPTPTR read failure as SSL.4. QEMU deviates: its vtd_iova_to_slpte() (hw/i386/intel_iommu.c) serves both
 * modes and reports the legacy 03h / 07h in scalable mode too.
 */
export function scalableSecondLevelReason(walk: WalkResult, write: boolean, startLevel: number): number {
  switch (walk.fault) {
    case WalkFault.AddressSize:
      return VtdFaultReason.SS_ADDR_BEYOND_MAX;
    case WalkFault.Reserved:
      return VtdFaultReason.SS_PAGING_ENTRY_RSVD;
    case WalkFault.External:
      return walk.level >= startLevel ? VtdFaultReason.SS_PTPTR_INV : VtdFaultReason.SS_PAGING_ENTRY_INV;
    default:
      return write ? VtdFaultReason.SM_WRITE : VtdFaultReason.SM_READ;
  }
}

/** First-level (IA-32e) walks: non-canonical 0x80, top-table fetch 0x73, lower fetch 0x70, P = 0 0x71, … */
export function firstLevelGuestReason(walk: WalkResult, write: boolean, startLevel: number): number {
  switch (walk.fault) {
    case WalkFault.AddressSize:
      return VtdFaultReason.FS_NON_CANONICAL;
    case WalkFault.Reserved:
      return VtdFaultReason.FS_PAGING_ENTRY_RSVD;
    case WalkFault.External:
      return walk.level >= startLevel ? VtdFaultReason.PASID_ENTRY_FSPTPTR_INV : VtdFaultReason.FS_PAGING_ENTRY_INV;
    case WalkFault.Permission:
      if ((walk.perms & Perm.User) === 0) return VtdFaultReason.FS_PAGING_ENTRY_US;
      return write && (walk.perms & Perm.Write) === 0 ? VtdFaultReason.SM_WRITE : VtdFaultReason.SM_READ;
    default:
      return VtdFaultReason.FS_PAGING_ENTRY_P;
  }
}
