import { decodeLayout, defineLayout, encodeLayout, x86PagingFormat, type Fields, type PageTableEncoder, type PageTableFormat, type RawBits } from "@viommu/core";
import { aboveHawMaskBig, MAX_HAW } from "./host-address-width.js";
import type { PteReservedMasks } from "./pte-reserved-masks.js";
import { leafPageShift } from "./table-geometry.js";

/**
 * First-level paging entry (FL-PML5E … FL-PTE): the IA-32e 4/5-level format. Intel VT-d spec §9.7;
 * ../shared/spec/x86.md A5.2. Positions: Linux `DMA_FL_PTE_*`, QEMU `VTD_FL_*`, VirtualBox `VTD_BF_FLP_ENTRY_*`
 * (EA = 10). PS is meaningful at levels 2 and 3; in 4 KiB leaves bit 7 is PAT and in large leaves bit 12 is PAT
 * (neither modelled: VT-d takes memory type from the PASID entry's PAT when EMTE is set).
 */
export const flPteLayout = defineLayout("FL_PTE", 64, [
  { name: "P", bit: 0, width: 1 },
  /** Read/write: writes allowed through this entry. */
  { name: "R/W", bit: 1, width: 1 },
  /** User/supervisor: user-privilege requests allowed through this entry. */
  { name: "U/S", bit: 2, width: 1 },
  { name: "PWT", bit: 3, width: 1 },
  { name: "PCD", bit: 4, width: 1 },
  /** Accessed (set by hardware). */
  { name: "A", bit: 5, width: 1 },
  /** Dirty (leaf; set by hardware on write). */
  { name: "D", bit: 6, width: 1 },
  /** Page size: this level-2/3 entry is a 2 MiB / 1 GiB leaf; reserved at levels 4 and 5. */
  { name: "PS", bit: 7, width: 1 },
  { name: "G", bit: 8, width: 1 },
  /** Extended accessed (set by hardware when the PASID entry's EAFE is set). */
  { name: "EA", bit: 10, width: 1 },
  { name: "ADDR", bit: 12, width: 40, shift: 12 },
  /** Execute disable. */
  { name: "XD", bit: 63, width: 1 },
] as const);

export type FlPteFields = Fields<typeof flPteLayout>;

export function decodeFlPte(raw: RawBits): FlPteFields {
  return decodeLayout(flPteLayout, raw);
}

export function encodeFlPte(fields: Partial<FlPteFields>): RawBits {
  return encodeLayout(flPteLayout, fields);
}

export interface FlPteOptions {
  /** Host address width: address bits [51:HAW] are reserved. */
  readonly haw: number;
  /** CAP.FL1GP: 1 GiB first-level pages; without it PS = 1 at level 3 is a reserved-bit fault. Default false. */
  readonly fl1gp?: boolean;
}

const BIT = (n: number): bigint => 1n << BigInt(n);
const FL_PS = BIT(7);
/** Bits QEMU ignores in every first-level entry (VTD_FS_UPPER_IGNORED): [63:52], XD included. */
export const FL_PTE_IGNORED = 0xfff0_0000_0000_0000n;

/**
 * The reserved-bit masks of a first-level walk, following QEMU's `vtd_fpte_rsvd` tables (../shared/spec/
 * x86.md A5.2): address bits [51:HAW]; bit 7 at levels 4 and 5; bits [20:13] / [29:13] of 2 MiB / 1 GiB
 * leaves (bit 12 is PAT there). Level 5 follows level 4 (QEMU supports 4-level only; IA-32e reserves PS in a
 * PML5E as in a PML4E). The decoder (core's x86-64 paging) checks the same bits without BigInt; these tables
 * state QEMU's view so tests can hold the two together.
 */
export function flPteReservedMasks(options: FlPteOptions): PteReservedMasks {
  const aboveHaw = aboveHawMaskBig(options.haw) & ~FL_PTE_IGNORED;
  const entry: bigint[] = [0n, aboveHaw];
  const largeLeaf: (bigint | undefined)[] = [undefined, undefined];
  for (const level of [2, 3] as const) {
    const allowed = level === 2 || options.fl1gp === true;
    entry[level] = aboveHaw | (allowed ? 0n : FL_PS);
    const lowAddressBits = (BIT(leafPageShift(level)) - 1n) & ~0x1fffn;
    largeLeaf[level] = allowed ? lowAddressBits | aboveHaw : undefined;
  }
  for (const level of [4, 5] as const) {
    entry[level] = aboveHaw | FL_PS;
    largeLeaf[level] = undefined;
  }
  return { entry, largeLeaf };
}

/**
 * The first-level page-table format: core's x86-64 paging with HAW as its output width and 1 GiB pages only
 * under CAP.FL1GP. Present means P (bit 0). Reserved bits in a present entry (exactly the masks above) are fault
 * 0x72: reported as `WalkFault.Reserved`. A and D are set by hardware (QEMU sets A on every entry walked and D
 * on the leaf of a write); a clear A is not a fault. Entries are written as Linux writes first-level domains:
 * tables P | R/W | U/S | A (0x27); leaves P | A, R/W and D for writable pages, U/S when `perms` has Perm.User,
 * XD unless `perms` has Perm.Exec, PS for 2 MiB / 1 GiB pages.
 */
export class FlPteFormat implements PageTableFormat, PageTableEncoder {
  readonly name = "VT-d first-level";
  readonly decodeEntry: PageTableFormat["decodeEntry"];
  readonly encodeTable: PageTableEncoder["encodeTable"];
  readonly encodeLeaf: PageTableEncoder["encodeLeaf"];
  readonly leafAllowed: PageTableEncoder["leafAllowed"];
  readonly tableBytes: PageTableEncoder["tableBytes"];

  constructor(readonly options: FlPteOptions) {
    const x86 = x86PagingFormat({ name: this.name, outputBits: Math.min(options.haw, MAX_HAW), gigaPages: options.fl1gp === true, leafUserExec: "from-perms" });
    this.decodeEntry = x86.decodeEntry;
    this.encodeTable = x86.encodeTable;
    this.encodeLeaf = x86.encodeLeaf;
    this.leafAllowed = x86.leafAllowed;
    this.tableBytes = x86.tableBytes;
  }
}
