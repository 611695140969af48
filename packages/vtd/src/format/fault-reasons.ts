/**
 * Fault reason codes (FRCD.FR). Intel VT-d spec §7 (fault conditions tables); ../shared/spec/x86.md A7.2.
 * Sources: Linux `dma_remap_fault_reasons`, `irq_remap_fault_reasons` and `dma_remap_sm_fault_reasons`
 * (drivers/iommu/dmar.c), QEMU `VTDFaultReason` (hw/i386/intel_iommu_internal.h), and VirtualBox's
 * `VTDADDRFAULT`/`VTDINTRFAULT` (include/VBox/iommu-intel.h), which give each code's spec condition ids
 * (LRT.1, SCT.4, …) and the interrupt-remapping codes 0x27–0x29. Names follow QEMU's `VTD_FR_*` where QEMU has
 * one; descriptions are ours. Codes VirtualBox lists without a meaning in any source (0x33 RTA.4, 0x7D SSL.6,
 * 0x88 SGN.9, 0x89 SGN.10) are not claimed.
 */

export type FaultCategory = "legacy" | "interrupt-remapping" | "scalable";

export interface FaultReason {
  readonly code: number;
  /** Mnemonic (QEMU's VTD_FR_ name without the prefix where QEMU has one). */
  readonly name: string;
  readonly category: FaultCategory;
  /** The spec's fault-condition ids that report this code. */
  readonly conditions: readonly string[];
  /**
   * Suppressed when the governing FPD is set: DMA codes per QEMU `vtd_qualified_faults` (A7.3); interrupt codes
   * found through a present IRTE (its FPD), i.e. 0x22, 0x24, 0x26.
   */
  readonly qualified: boolean;
  readonly description: string;
}

const QUALIFIED = new Set([
  0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0xc, 0xd, 0xe, 0x22, 0x24, 0x26, 0x51, 0x59, 0x5b, 0x70, 0x71, 0x72, 0x73, 0x80, 0x81, 0x85, 0x87, 0x91,
]);

/** [code, name, category, conditions, description], one row per code. */
const FAULT_REASON_ROWS = [
  [0x0, "RESERVED", "legacy", [], "Reserved (Linux prints it as 'Software'); used by advanced fault logging"],
  [0x1, "ROOT_ENTRY_P", "legacy", ["LRT.2"], "Root entry present bit is clear"],
  [0x2, "CONTEXT_ENTRY_P", "legacy", ["LCT.2"], "Context entry present bit is clear"],
  [0x3, "CONTEXT_ENTRY_INV", "legacy", ["LCT.4.0", "LCT.4.1", "LCT.4.2", "LCT.4.3"], "Context entry programmed invalidly (TT reserved or unsupported, AW not in SAGAW, ...)"],
  [0x4, "ADDR_BEYOND_MGAW", "legacy", ["LGN.1.0", "LGN.1.1", "LGN.1.2", "LGN.1.3"], "Input address above the adjusted or maximum guest address width"],
  [0x5, "WRITE", "legacy", ["LGN.2"], "Write request to a page without write permission"],
  [0x6, "READ", "legacy", ["LGN.3"], "Read request to a page without read permission"],
  [0x7, "PAGING_ENTRY_INV", "legacy", ["LSL.1"], "Error reading a second-level paging entry (next-level table pointer invalid)"],
  [0x8, "ROOT_TABLE_INV", "legacy", ["LRT.1"], "Error reading the root entry (root table address invalid)"],
  [0x9, "CONTEXT_TABLE_INV", "legacy", ["LCT.1"], "Error reading the context entry (context table pointer invalid)"],
  [0xa, "ROOT_ENTRY_RSVD", "legacy", ["LRT.3"], "Reserved field set in a present root entry"],
  [0xb, "CONTEXT_ENTRY_RSVD", "legacy", ["LCT.3"], "Reserved field set in a present context entry"],
  [0xc, "PAGING_ENTRY_RSVD", "legacy", ["LSL.2"], "Reserved field set in a present second-level paging entry"],
  [0xd, "CONTEXT_ENTRY_TT", "legacy", ["LCT.5"], "Request type blocked by the context entry's translation type (e.g. a translation request with TT other than 1)"],
  [0xe, "INTERRUPT_ADDR", "legacy", ["LGN.4"], "Translated address falls in the interrupt range 0xFEE0_0000-0xFEEF_FFFF"],

  [0x20, "IR_REQ_RSVD", "interrupt-remapping", [], "Reserved field set in a remappable interrupt request (upper address, data[31:16] with SHV, address not 0xFEE)"],
  [0x21, "IR_INDEX_OVER", "interrupt-remapping", [], "Interrupt index beyond the table size given by IRTA.S"],
  [0x22, "IR_ENTRY_P", "interrupt-remapping", [], "IRTE present bit is clear"],
  [0x23, "IR_ROOT_INVAL", "interrupt-remapping", [], "Error reading the IRTE (IRTA invalid)"],
  [0x24, "IR_IRTE_RSVD", "interrupt-remapping", [], "Reserved field set in a present IRTE"],
  [0x25, "IR_REQ_COMPAT", "interrupt-remapping", [], "Compatibility-format interrupt blocked (GSTS.CFIS clear, or x2APIC mode)"],
  [0x26, "IR_SID_ERR", "interrupt-remapping", [], "Requester id fails the IRTE's source-id verification (SVT/SQ/SID)"],
  [0x27, "IR_PID_READ_ERR", "interrupt-remapping", [], "Error reading the posted-interrupt descriptor"],
  [0x28, "IR_PID_RSVD", "interrupt-remapping", [], "Reserved field set in the posted-interrupt descriptor"],
  [0x29, "IR_WITHOUT_PASID_INVALID", "interrupt-remapping", [], "Untranslated interrupt request without PASID is invalid"],

  // QEMU deviates: its VTD_FR_RTADDR_INV_TTM is 0x31 (hw/i386/intel_iommu_internal.h, since the 2025 PASID-cache
  // series), returned when a PASID entry is looked up in legacy mode; that condition is RTA.2 (0x31, "TTM 0 for
  // request with PASID" in Linux), and an invalid TTM itself is RTA.1, 0x30 (Linux "SM: Invalid Root Table Address").
  [0x30, "RTADDR_INV_TTM", "scalable", ["RTA.1.0", "RTA.1.1", "RTA.1.2", "RTA.1.3"], "Invalid root table address or translation table mode (RTADDR.TTM reserved)"],
  [0x31, "RTADDR_TTM0_PASID", "scalable", ["RTA.2"], "Legacy mode (TTM 0) for a request with PASID"],
  [0x32, "RTADDR_TTM0_PAGE_REQ", "scalable", ["RTA.3"], "Legacy mode (TTM 0) for a page request"],
  [0x38, "SM_ROOT_ENTRY_ACCESS", "scalable", ["SRT.1"], "Error reading the scalable-mode root entry"],
  [0x39, "SM_ROOT_ENTRY_P", "scalable", ["SRT.2"], "Scalable-mode root entry present bit (LP/UP) is clear"],
  [0x3a, "SM_ROOT_ENTRY_RSVD", "scalable", ["SRT.3"], "Reserved field set in a scalable-mode root entry"],
  [0x40, "SM_CONTEXT_ENTRY_ACCESS", "scalable", ["SCT.1"], "Error reading the scalable-mode context entry"],
  [0x41, "SM_CONTEXT_ENTRY_P", "scalable", ["SCT.2"], "Scalable-mode context entry present bit is clear"],
  [0x42, "SM_CONTEXT_ENTRY_RSVD", "scalable", ["SCT.3"], "Reserved field set in a scalable-mode context entry"],
  [0x43, "SM_CONTEXT_ENTRY_INV", "scalable", ["SCT.4.0", "SCT.4.1", "SCT.4.2"], "Scalable-mode context entry programmed invalidly"],
  [0x44, "SM_CONTEXT_DTE", "scalable", ["SCT.5"], "Translation request while the context entry's DTE is clear"],
  [0x45, "SM_CONTEXT_PASIDE", "scalable", ["SCT.6"], "Request with PASID while the context entry's PASIDE is clear"],
  [0x46, "SM_PASID_BEYOND_PDTS", "scalable", ["SCT.7"], "PASID beyond the directory size the context entry's PDTS allows"],
  [0x47, "SM_CONTEXT_PRE", "scalable", ["SCT.8"], "Page request while the context entry's PRE is clear"],
  [0x48, "SM_RID_PASID_ERR", "scalable", ["SCT.9"], "Error in the context entry's RID_PASID field"],
  [0x50, "PASID_DIR_ACCESS_ERR", "scalable", ["SPD.1"], "Error reading the PASID directory entry"],
  [0x51, "PASID_DIR_ENTRY_P", "scalable", ["SPD.2"], "PASID directory entry present bit is clear"],
  [0x52, "PASID_DIR_ENTRY_RSVD", "scalable", ["SPD.3"], "Reserved field set in a PASID directory entry"],
  [0x58, "PASID_TABLE_ACCESS_ERR", "scalable", ["SPT.1"], "Error reading the PASID table entry (an older QEMU called 0x58 an invalid entry)"],
  [0x59, "PASID_ENTRY_P", "scalable", ["SPT.2"], "PASID table entry present bit is clear"],
  [0x5a, "PASID_ENTRY_RSVD", "scalable", ["SPT.3"], "Reserved field set in a PASID table entry"],
  [0x5b, "PASID_TABLE_ENTRY_INV", "scalable", ["SPT.4.0", "SPT.4.1", "SPT.4.2", "SPT.4.3", "SPT.4.4"], "PASID table entry programmed invalidly (PGTT, AW, FLPM unsupported or reserved)"],
  [0x5c, "PASID_ENTRY_ERE", "scalable", ["SPT.5"], "Execute request while the PASID entry's ERE is clear"],
  [0x5d, "PASID_ENTRY_SRE", "scalable", ["SPT.6"], "Supervisor request while the PASID entry's SRE is clear"],
  [0x70, "FS_PAGING_ENTRY_INV", "scalable", ["SFL.1"], "Error reading a first-level paging entry (below the top level)"],
  [0x71, "FS_PAGING_ENTRY_P", "scalable", ["SFL.2"], "First-level paging entry present bit is clear"],
  [0x72, "FS_PAGING_ENTRY_RSVD", "scalable", ["SFL.3"], "Reserved field set in a present first-level paging entry"],
  [0x73, "PASID_ENTRY_FSPTPTR_INV", "scalable", ["SFL.4"], "Error reading the top-level first-level entry (FLPTPTR invalid)"],
  [0x74, "FS_NESTED_ADDR_BEYOND_MGAW", "scalable", ["SFL.5"], "Nested: first-level table address beyond the second-level input width"],
  [0x75, "FS_NESTED_PML4_READ", "scalable", ["SFL.6"], "Nested: no read permission to fetch the top-level first-level entry"],
  [0x76, "FS_NESTED_READ", "scalable", ["SFL.7"], "Nested: no read permission to fetch a first-level entry"],
  [0x77, "FS_NESTED_WRITE", "scalable", ["SFL.8"], "Nested: no write permission to update a first-level entry's A/D bits"],
  [0x78, "SS_PAGING_ENTRY_INV", "scalable", ["SSL.1"], "Error reading a second-level paging entry below the top level (through a paging entry's address)"],
  [0x79, "SS_PAGING_ENTRY_PERM", "scalable", ["SSL.2"], "Second-level read/write permission error while fetching or updating a table"],
  [0x7a, "SS_PAGING_ENTRY_RSVD", "scalable", ["SSL.3"], "Reserved field set in a present second-level paging entry"],
  [0x7b, "SS_PTPTR_INV", "scalable", ["SSL.4"], "Error reading the top-level second-level table the PASID entry's SSPTPTR points at (Linux: invalid second-level page table pointer)"],
  [0x7c, "SS_AD_NOSNOOP", "scalable", ["SSL.5"], "Second-level A/D update needed on a table set up for no-snoop access"],
  [0x80, "FS_NON_CANONICAL", "scalable", ["SGN.1"], "Input address is not canonical for the first-level paging mode"],
  [0x81, "FS_PAGING_ENTRY_US", "scalable", ["SGN.2"], "User-privilege request to a page whose walk has U/S = 0"],
  [0x82, "SM_EXECUTE", "scalable", ["SGN.3"], "Execute request without execute permission"],
  [0x83, "SM_ADDR_BEYOND_MAX", "scalable", ["SGN.4.0", "SGN.4.1", "SGN.4.2"], "Input address beyond what the translation allows"],
  [0x84, "SS_ADDR_BEYOND_MAX", "scalable", ["SGN.5"], "Second-level input address beyond the maximum"],
  [0x85, "SM_WRITE", "scalable", ["SGN.6"], "Write (or AtomicOp) without write permission"],
  [0x86, "SM_READ", "scalable", ["SGN.7"], "Read (or AtomicOp) without read permission"],
  [0x87, "SM_INTERRUPT_ADDR", "scalable", ["SGN.8"], "Translated address falls in the interrupt range"],
  [0x90, "FS_AD_NOSNOOP", "scalable", ["SFL.9"], "First-level A/D update needed on a table set up for no-snoop access"],
  [0x91, "FS_BIT_UPDATE_FAILED", "scalable", ["SFL.10"], "First-level A/D bit update failed"],
] as const;

export type FaultReasonName = (typeof FAULT_REASON_ROWS)[number][1];

export const vtdFaultReasons: readonly FaultReason[] = FAULT_REASON_ROWS.map(([code, name, category, conditions, description]) => ({
  code,
  name,
  category,
  conditions,
  qualified: QUALIFIED.has(code),
  description,
}));

const BY_CODE = new Map(vtdFaultReasons.map((r) => [r.code, r]));

/** The fault reason with code `code`, if the spec defines it. */
export function faultReason(code: number): FaultReason | undefined {
  return BY_CODE.get(code);
}

/** The mnemonic of a fault reason code, or UNKNOWN. */
export function faultReasonName(code: number): string {
  return BY_CODE.get(code)?.name ?? "UNKNOWN";
}

/** Fault reason codes by name, for code that reports faults. */
export const VtdFaultReason = Object.fromEntries(vtdFaultReasons.map((r) => [r.name, r.code])) as { readonly [N in FaultReasonName]: number };
