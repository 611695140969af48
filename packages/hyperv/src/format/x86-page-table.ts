import {
  EntryKind,
  Perm,
  WalkFault,
  address64,
  defineLayout,
  radixGeometry,
  type EntryDecode,
  type PageTableEncoder,
  type PageTableFormat,
  type PermBits,
  type TableGeometry,
} from "@viommu/core";

/**
 * The x86-64 stage-1 (first-stage) page tables a Hyper-V pvIOMMU guest builds and hands over with
 * HVCALL_CONFIGURE_DEVICE_DOMAIN (page_table_root; first_stage_paging_mode 0 = 4-level, 1 = 5-level). The guest
 * driver uses Linux's generic x86_64 format (drivers/iommu/generic_pt/fmt/x86_64.h, which cites Intel SDM vol. 3
 * §4.4, VT-d §9.7 first-stage entries and AMD IOMMU §2.2.6; spec x86.md A5.2).
 *
 * Entry bits: [0] P, [1] R/W, [2] U/S, [3] PWT, [4] PCD, [5] A, [6] D, [7] PS (2 MiB leaf at level 2, 1 GiB leaf
 * at level 3; PAT in a level-1 PTE), [8] G, [51:12] address, [63] XD/NX. Bits [11:9] and [62:52] are ignored.
 *
 * Reserved bits (fault WalkFault.Reserved): PS at level 4 or 5; address bits [pageShift−1:13] of a large leaf
 * (bit 12 is its PAT bit); address bits at or above the output width (MAXPHYADDR, 52 unless configured lower).
 */
export const x86PteLayout = defineLayout("X86_64_PTE", 64, [
  { name: "P", bit: 0, width: 1 },
  { name: "RW", bit: 1, width: 1 },
  { name: "US", bit: 2, width: 1 },
  { name: "PWT", bit: 3, width: 1 },
  { name: "PCD", bit: 4, width: 1 },
  { name: "A", bit: 5, width: 1 },
  { name: "D", bit: 6, width: 1 },
  { name: "PS", bit: 7, width: 1 },
  { name: "G", bit: 8, width: 1 },
  { name: "ADDR", bit: 12, width: 40, shift: 12 },
  { name: "XD", bit: 63, width: 1 },
] as const);

/** Low-half bits of an entry. */
export const X86Pte = { P: 0x1, RW: 0x2, US: 0x4, PWT: 0x8, PCD: 0x10, A: 0x20, D: 0x40, PS: 0x80, G: 0x100 } as const;
/** XD (execute-disable) on the entry's high half. */
export const X86_PTE_XD_HI = 0x80000000;

/** Leaf page sizes (log2) of the format: 4 KiB, 2 MiB, 1 GiB. */
export const X86_PAGE_SHIFTS: readonly number[] = [12, 21, 30];

function x86Perms(lo: number, hi: number): PermBits {
  // A present entry is always readable on x86; permissions AND over the levels (the walker does that).
  return Perm.Read | (lo & X86Pte.RW ? Perm.Write : 0) | (lo & X86Pte.US ? Perm.User : 0) | (hi & X86_PTE_XD_HI ? 0 : Perm.Exec);
}

function noEntry(out: EntryDecode, kind: EntryKind, fault: WalkFault): void {
  out.kind = kind;
  out.fault = fault;
  out.address = 0;
  out.pageShift = 0;
  out.nextLevel = 0;
  out.perms = 0;
}

function setLeaf(out: EntryDecode, lo: number, hi: number, pageShift: number): void {
  out.kind = EntryKind.Leaf;
  out.fault = WalkFault.None;
  out.pageShift = pageShift;
  out.address = address64(lo, hi, pageShift, 51);
  out.nextLevel = 0;
  out.perms = x86Perms(lo, hi);
}

/**
 * The x86-64 stage-1 format with an output width of `outputBits` (MAXPHYADDR, 32..52): address bits at or above
 * it are reserved. decodeEntry allocates nothing and never throws.
 */
export function x86Stage1Format(outputBits = 52): PageTableFormat {
  if (!Number.isInteger(outputBits) || outputBits < 32 || outputBits > 52) throw new RangeError(`output width ${outputBits}`);
  // Mask of the high half's address bits [51:32] that lie at or above outputBits.
  const hiReserved = outputBits >= 52 ? 0 : ((0xfffff >>> (outputBits - 32)) << (outputBits - 32)) & 0xfffff;
  return {
    name: `hyperv-x86-64-stage1-${outputBits}`,
    decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
      if ((lo & X86Pte.P) === 0) return noEntry(out, EntryKind.Invalid, WalkFault.Translation);
      if ((hi & hiReserved) !== 0 || level < 1 || level > 5) return noEntry(out, EntryKind.Fault, WalkFault.Reserved);
      if (level === 1) return setLeaf(out, lo, hi, 12);
      if ((lo & X86Pte.PS) !== 0) {
        if (level > 3) return noEntry(out, EntryKind.Fault, WalkFault.Reserved);
        const pageShift = level === 2 ? 21 : 30;
        if (address64(lo, hi, 13, pageShift - 1) !== 0) return noEntry(out, EntryKind.Fault, WalkFault.Reserved);
        return setLeaf(out, lo, hi, pageShift);
      }
      out.kind = EntryKind.Table;
      out.fault = WalkFault.None;
      out.address = address64(lo, hi, 12, 51);
      out.pageShift = 0;
      out.nextLevel = level - 1;
      out.perms = x86Perms(lo, hi);
    },
  };
}

/** The format with the full 52-bit output width Linux's pvIOMMU driver configures (hw_max_oasz_lg2 = 52). */
export const hypervPageTableFormat: PageTableFormat = x86Stage1Format(52);

function checkAddress(address: number, alignShift: number, what: string): void {
  if (!Number.isSafeInteger(address) || address < 0 || address >= 2 ** 52 || address % 2 ** alignShift !== 0) {
    throw new RangeError(`${what} 0x${address.toString(16)} is not a 2^${alignShift}-aligned address below 2^52`);
  }
}

/**
 * The writing half, producing the entries Linux's generic x86_64 format writes: tables P | R/W | U/S | A; leaves
 * P | U/S | A, plus R/W | D when writable, plus PS above level 1; XD never set. x86 paging cannot withhold read
 * from a present entry, so `perms` only decides R/W.
 */
export const hypervPageTableEncoder: PageTableEncoder = {
  encodeTable(tableAddress: number, level: number, out: Uint32Array): void {
    checkAddress(tableAddress, 12, "table address");
    if (level < 2 || level > 5) throw new RangeError(`no table entry at level ${level}`);
    out[0] = ((tableAddress % 0x1_0000_0000) | X86Pte.P | X86Pte.RW | X86Pte.US | X86Pte.A) >>> 0;
    out[1] = Math.floor(tableAddress / 0x1_0000_0000) >>> 0;
  },
  encodeLeaf(pageAddress: number, pageShift: number, perms: PermBits, level: number, out: Uint32Array): void {
    if (!hypervPageTableEncoder.leafAllowed(pageShift, level)) throw new RangeError(`no leaf of 2^${pageShift} at level ${level}`);
    checkAddress(pageAddress, pageShift, "page address");
    let lowBits = X86Pte.P | X86Pte.US | X86Pte.A;
    if (perms & Perm.Write) lowBits |= X86Pte.RW | X86Pte.D;
    if (level > 1) lowBits |= X86Pte.PS;
    out[0] = ((pageAddress % 0x1_0000_0000) | lowBits) >>> 0;
    out[1] = Math.floor(pageAddress / 0x1_0000_0000) >>> 0;
  },
  leafAllowed(pageShift: number, level: number): boolean {
    return (level === 1 && pageShift === 12) || (level === 2 && pageShift === 21) || (level === 3 && pageShift === 30);
  },
  tableBytes(): number {
    return 4096;
  },
};

/**
 * Geometries: 4 levels (first_stage_paging_mode 0, up to 48 input bits) or 5 levels (mode 1, up to 57). Linux's
 * driver uses 5 levels only when max_iova_width > 48 and HV_IOMMU_CAP_S1_5LVL is set, with no sign extension, so
 * the input range is [0, 2^inputBits).
 */
export function hypervStage1Geometry(levels: 4 | 5, inputBits: number = levels === 4 ? 48 : 57): TableGeometry {
  return { ...radixGeometry(levels, 12, 9, inputBits), outputBits: 52 };
}

/** HVCALL_CONFIGURE_DEVICE_DOMAIN's first_stage_paging_mode for a level count. */
export function firstStagePagingMode(levels: 4 | 5): 0 | 1 {
  return levels === 5 ? 1 : 0;
}
