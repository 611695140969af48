import { Perm, type PageTableEncoder, type TableGeometry } from "@viommu/core";
import { vmsaEncoder } from "./vmsa-stage1.js";

/**
 * The AArch64 stage-1 entries Linux on arm64 writes in a process's page table (TTBR0_EL1), which an SMMU sharing the
 * process's address space (SVA) walks as it is. From arch/arm64/include/asm/pgtable-prot.h and pgtable-hwdef.h:
 * a user page is PTE_TYPE_PAGE | PTE_AF | PTE_SHARED (inner shareable) | PTE_ATTRINDX(MT_NORMAL) | PTE_NG |
 * PTE_USER (AP[1]) | PTE_PXN, with PTE_UXN unless executable; a writable page has PTE_WRITE (= PTE_DBM, bit 51), and
 * once written (a populated anonymous page: do_anonymous_page's pte_mkwrite(pte_mkdirty())) PTE_RDONLY (AP[2]) is
 * clear and the software PTE_DIRTY (bit 55) set; a read-only page has PTE_RDONLY and no DBM. Table descriptors of a
 * user table carry PXNTable (pmd_populate / pud_populate / p4d_populate with *_TABLE_PXN for a non-init mm).
 */

/** MAIR_EL1 index of normal write-back memory (arch/arm64/include/asm/memory.h: MT_NORMAL, which must be 0). */
export const MT_NORMAL = 0;
/**
 * MAIR_EL1 as Linux sets it (MAIR_EL1_SET, no MTE): MT_NORMAL 0 and MT_NORMAL_TAGGED 1 both 0xFF (normal WB),
 * MT_NORMAL_NC 2 0x44, MT_DEVICE_nGnRnE 3 0x00, MT_DEVICE_nGnRE 4 0x04. The SVA CD copies it (read_sysreg(mair_el1)).
 */
export const LINUX_MAIR_EL1 = 0x0000_0004_0044_ffffn;

const LO_AP1 = 1 << 6;
const LO_AP2 = 1 << 7;
const LO_SH_INNER = 3 << 8;
const LO_AF = 1 << 10;
const LO_NG = 1 << 11;
const HI_DBM = 1 << (51 - 32);
const HI_PXN = 1 << (53 - 32);
const HI_UXN = 1 << (54 - 32);
const HI_SW_DIRTY = 1 << (55 - 32);
const HI_PXN_TABLE = 1 << (59 - 32);

/** Linux's writer of user page tables for a 4 KiB-page arm64 kernel, over `geometry` (48-bit VA: four levels). */
export function linuxUserPteEncoder(geometry: TableGeometry): PageTableEncoder {
  const base = vmsaEncoder({ granuleShift: 12, geometry }, (perms, out) => {
    let lo = (MT_NORMAL << 2) | LO_SH_INNER | LO_AF | LO_NG | LO_AP1;
    let hi = HI_PXN;
    if ((perms & Perm.Exec) === 0) hi |= HI_UXN;
    if ((perms & Perm.Write) !== 0) hi |= HI_DBM | HI_SW_DIRTY;
    else lo |= LO_AP2;
    out[0] = (out[0]! | lo) >>> 0;
    out[1] = (out[1]! | hi) >>> 0;
  });
  return {
    ...base,
    encodeTable(tableAddress, level, out) {
      base.encodeTable(tableAddress, level, out);
      out[1] = (out[1]! | HI_PXN_TABLE) >>> 0;
    },
  };
}
