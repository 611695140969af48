import { Perm, WalkFault, type WalkResult } from "@viommu/core";
import { VtdFaultReason } from "../format/fault-reasons.js";
import { hostSlGeometry } from "./host-formats.js";

/** What the device was attached to when its DMA faulted. */
export type HostTranslationKind = "blocked" | "paging" | "nested";

/**
 * The scalable-mode fault reason (../shared/spec/x86.md A7.2) the host unit records for a failed translation.
 * The host runs in scalable mode, so second-stage problems use the 0x7x/0x8x codes Linux's SM table names
 * (QEMU would keep the legacy 0x4–0xC codes there; see the package report).
 */
export function hostFaultReason(kind: HostTranslationKind, result: WalkResult, write: boolean, startLevel: number, s1Root = -1): number {
  if (kind === "blocked") return VtdFaultReason.PASID_ENTRY_P;
  if (kind === "nested" && result.stage === 1) return firstLevelReason(result, write, startLevel);
  const tableFetch = kind === "nested" && result.tableFetch;
  // A fetch stage 2 failed names the stage-1 entry's address: in the page FSPTPTR names, it was the top-level entry.
  return secondLevelReason(result, write, tableFetch, tableFetch && Math.floor(result.faultInput / 4096) === Math.floor(s1Root / 4096));
}

/** A first-level walk (the guest's stage 1 of a nested domain, or a first-level-only table). */
export function firstLevelReason(result: WalkResult, write: boolean, startLevel: number): number {
  switch (result.fault) {
    case WalkFault.AddressSize:
      return VtdFaultReason.FS_NON_CANONICAL;
    case WalkFault.Reserved:
      return VtdFaultReason.FS_PAGING_ENTRY_RSVD;
    case WalkFault.External:
      return result.level >= startLevel ? VtdFaultReason.PASID_ENTRY_FSPTPTR_INV : VtdFaultReason.FS_PAGING_ENTRY_INV;
    case WalkFault.Permission:
      if ((result.perms & Perm.User) === 0) return VtdFaultReason.FS_PAGING_ENTRY_US;
      return write && (result.perms & Perm.Write) === 0 ? VtdFaultReason.SM_WRITE : VtdFaultReason.SM_READ;
    default:
      return VtdFaultReason.FS_PAGING_ENTRY_P;
  }
}

/**
 * A second-level walk: the host's stage 2 (of a nested translation, for a first-level table fetch when
 * `tableFetch` — of the top-level table when `topFetch` — or for its output), or a single-stage second-level table; every host stage 2 has
 * hostSlGeometry. A table outside memory is 7Bh (SSL.4) at the top level, reached through SSPTPTR, and 78h
 * (SSL.1) below it (see scalableSecondLevelReason in ../vmm/guest-fault-reason.ts).
 */
export function secondLevelReason(result: WalkResult, write: boolean, tableFetch: boolean, topFetch = false): number {
  switch (result.fault) {
    case WalkFault.AddressSize:
      return tableFetch ? VtdFaultReason.FS_NESTED_ADDR_BEYOND_MGAW : VtdFaultReason.SS_ADDR_BEYOND_MAX;
    case WalkFault.Reserved:
      return VtdFaultReason.SS_PAGING_ENTRY_RSVD;
    case WalkFault.External:
      return result.level >= hostSlGeometry.startLevel ? VtdFaultReason.SS_PTPTR_INV : VtdFaultReason.SS_PAGING_ENTRY_INV;
    default:
      // Not present and permission look alike at the second level (an entry with R = W = 0 maps nothing). A
      // fetch of a first-level table the stage 2 does not map is the nested read-permission fault: 75h (SFL.6)
      // for the top-level entry, reached through FSPTPTR, 76h (SFL.7) below it (Linux: "Read permission error
      // in FL-PML4 entry" / "in first-level paging entry in Nested translation").
      if (tableFetch) return topFetch ? VtdFaultReason.FS_NESTED_PML4_READ : VtdFaultReason.FS_NESTED_READ;
      return write ? VtdFaultReason.SM_WRITE : VtdFaultReason.SM_READ;
  }
}
