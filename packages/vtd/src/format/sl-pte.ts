import {
  decodeLayout,
  defineLayout,
  encodeLayout,
  Perm,
  type DirtyBitFormat,
  type EntryDecode,
  type Fields,
  type PageTableEncoder,
  type PageTableFormat,
  type PermBits,
  type RadixLayout,
  type RawBits,
} from "@viommu/core";
import { SLLPS_1G, SLLPS_2M } from "./cap.js";
import { aboveHawMaskBig, assertTableAddress } from "./host-address-width.js";
import { decodeNotPresent, PteMaskTable, writePte, type PteReservedMasks } from "./pte-reserved-masks.js";
import { leafPageShift, VTD_TABLE_BYTES } from "./table-geometry.js";

/**
 * Second-level paging entry (SL-PML5E … SL-PTE), 64 bits. Intel VT-d spec §9.8; ../shared/spec/x86.md A5.1.
 * Positions: Linux `DMA_PTE_*` / `DMA_SL_PTE_DIRTY`, QEMU `VTD_SL_*`, VirtualBox `VTD_BF_SLP_ENTRY_*` (X = 2,
 * A = 8). PS is meaningful at levels 2 and 3 only; SNP and TM in leaves only. Bits 3–6 (leaf memory type),
 * 10, [61:52] and 63 are not modelled: QEMU treats 3–6 and 10 as ignored and [61:52], 63 as ignored
 * (VTD_SL_IGN_COM = 0xBFF0_0000_0000_0000).
 */
export const slPteLayout = defineLayout("SL_PTE", 64, [
  { name: "R", bit: 0, width: 1 },
  { name: "W", bit: 1, width: 1 },
  /** Execute (honoured with PASID-entry SLEE / ECAP.ERS). */
  { name: "X", bit: 2, width: 1 },
  /** Page size: this level-2/3 entry is a 2 MiB / 1 GiB leaf. */
  { name: "PS", bit: 7, width: 1 },
  /** Accessed (set by hardware when second-level A/D is enabled). */
  { name: "A", bit: 8, width: 1 },
  /** Dirty (leaf; set by hardware when second-level A/D is enabled). */
  { name: "D", bit: 9, width: 1 },
  /** Snoop (leaf; reserved unless scalable mode or ECAP.SC, as QEMU checks). */
  { name: "SNP", bit: 11, width: 1 },
  /** Next-table or page address; bits at and above HAW are reserved. */
  { name: "ADDR", bit: 12, width: 40, shift: 12 },
  /** Transient mapping (leaf). Reserved since VT-d 3.2; QEMU's `stale-tm` keeps the old meaning. */
  { name: "TM", bit: 62, width: 1 },
] as const);

export type SlPteFields = Fields<typeof slPteLayout>;

export function decodeSlPte(raw: RawBits): SlPteFields {
  return decodeLayout(slPteLayout, raw);
}

export function encodeSlPte(fields: Partial<SlPteFields>): RawBits {
  return encodeLayout(slPteLayout, fields);
}

export interface SlPteOptions {
  /** Host address width (e.g. 39, 48, 52): address bits at and above it are reserved. */
  readonly haw: number;
  /** CAP.SLLPS: PS = 1 at a level whose page size the unit does not list is a reserved-bit fault. Default 2 MiB + 1 GiB. */
  readonly sllps?: number;
  /** SNP allowed in leaves: scalable mode or ECAP.SC (QEMU); otherwise bit 11 is reserved everywhere. Default false. */
  readonly snoop?: boolean;
  /** QEMU `stale-tm` with a device-TLB: TM (bit 62) is allowed in leaves instead of reserved. Default false. */
  readonly staleTm?: boolean;
}

const BIT = (n: number): bigint => 1n << BigInt(n);
const SL_SNP = BIT(11);
const SL_PS = BIT(7);
const SL_TM = BIT(62);
/** Bits QEMU ignores in every second-level entry (VTD_SL_IGN_COM): [61:52] and 63. */
export const SL_PTE_IGNORED = 0xbff0_0000_0000_0000n;

/**
 * The reserved-bit masks a second-level walk checks, following QEMU's `vtd_spte_rsvd` tables (hw/i386/
 * intel_iommu_internal.h, ../shared/spec/x86.md A5.1): bit 11 everywhere except where SNP is allowed; address
 * bits above HAW that are not ignored (which includes TM, bit 62, except in leaves under stale-tm); bit 7 at
 * levels 4 and 5; bits [20:12] / [29:12] of 2 MiB / 1 GiB leaves. Level 5 follows level 4 (QEMU stops at 4).
 */
export function slPteReservedMasks(options: SlPteOptions): PteReservedMasks {
  const sllps = options.sllps ?? SLLPS_2M | SLLPS_1G;
  // TM (bit 62) is neither an address bit nor ignored, so it is reserved wherever stale-tm does not allow it.
  const aboveHaw = (aboveHawMaskBig(options.haw) & ~SL_PTE_IGNORED) | SL_TM;
  const leafExtra = options.snoop ? 0n : SL_SNP;
  const leafAboveHaw = options.staleTm ? aboveHaw & ~SL_TM : aboveHaw;
  const entry: bigint[] = [0n];
  const largeLeaf: (bigint | undefined)[] = [undefined];
  entry[1] = leafExtra | leafAboveHaw;
  largeLeaf[1] = undefined;
  for (const level of [2, 3] as const) {
    const allowed = (sllps & (level === 2 ? SLLPS_2M : SLLPS_1G)) !== 0;
    entry[level] = SL_SNP | aboveHaw | (allowed ? 0n : SL_PS);
    const lowAddressBits = (BIT(leafPageShift(level)) - 1n) & ~0xfffn;
    largeLeaf[level] = allowed ? lowAddressBits | leafExtra | leafAboveHaw : undefined;
  }
  for (const level of [4, 5] as const) {
    entry[level] = SL_SNP | SL_PS | aboveHaw;
    largeLeaf[level] = undefined;
  }
  return { entry, largeLeaf };
}

/** The permissions a second-level entry grants: R, W and X as read, write, execute; no privilege distinction. */
function slPerms(lo: number): PermBits {
  return Perm.User | (lo & 1 ? Perm.Read : 0) | (lo & 2 ? Perm.Write : 0) | (lo & 4 ? Perm.Exec : 0);
}

/**
 * The second-level page-table format: decoding for the walker and encoding for whoever builds tables.
 * Present means R or W is set (Linux `dma_pte_present` tests bits [1:0]; QEMU faults 0x5/0x6 on a missing
 * right, and an entry with R = W = 0 maps nothing). Reserved bits set in a present entry are fault 0xC
 * (legacy) / 0x7A (scalable): reported as `WalkFault.Reserved`.
 */
export class SlPteFormat implements PageTableFormat, PageTableEncoder {
  readonly name = "VT-d second-level";
  readonly reservedMasks: PteReservedMasks;
  /** The entry as masks for core's compiled walk (absent under stale-tm, whose TM rule differs per leaf). */
  readonly layout: RadixLayout | undefined;
  private readonly masks: PteMaskTable;

  constructor(readonly options: SlPteOptions) {
    this.reservedMasks = slPteReservedMasks(options);
    this.masks = new PteMaskTable(this.reservedMasks);
    this.layout = slPteRadixLayout(options);
  }

  decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
    if ((lo & 3) === 0) decodeNotPresent(out);
    else this.masks.decodePresent(lo, hi, level, slPerms(lo), out);
  }

  /** A table entry as Linux writes it: the table address with R and W set (DMA_PTE_READ | DMA_PTE_WRITE). */
  encodeTable(tableAddress: number, level: number, out: Uint32Array): void {
    if (level < 2 || level > 5) throw new RangeError(`no second-level table entry at level ${level}`);
    assertTableAddress(tableAddress, 12, this.options.haw);
    writePte(tableAddress, 0x3, 0, out);
  }

  /** A leaf granting R/W per `perms` (and X for Perm.Exec), with PS for 2 MiB / 1 GiB pages. */
  encodeLeaf(pageAddress: number, pageShift: number, perms: PermBits, level: number, out: Uint32Array): void {
    if (!this.leafAllowed(pageShift, level)) throw new RangeError(`no ${2 ** pageShift}-byte second-level leaf at level ${level}`);
    if ((perms & Perm.ReadWrite) === 0) throw new RangeError("a second-level leaf without R or W is not present");
    assertTableAddress(pageAddress, pageShift, this.options.haw);
    let flags = (perms & Perm.Read ? 1 : 0) | (perms & Perm.Write ? 2 : 0) | (perms & Perm.Exec ? 4 : 0);
    if (level > 1) flags |= 0x80;
    writePte(pageAddress, flags, 0, out);
  }

  leafAllowed(pageShift: number, level: number): boolean {
    return this.masks.leafAllowed(pageShift, level);
  }

  tableBytes(_level: number): number {
    return VTD_TABLE_BYTES;
  }
}

/** D (bit 9, Linux `DMA_SL_PTE_DIRTY_BIT`): set by the hardware on a write through a leaf while SLADE is on. */
export const SL_PTE_D = 1 << 9;

/**
 * Where second-level A/D (PASID-entry SLADE, ECAP.SLADS; ../shared/spec/x86.md A5.1) keeps a leaf's dirty
 * state: D in the low half of the leaf, 4 KiB and large leaves alike. Clearing it leaves every other bit, as
 * Linux's `dma_sl_pte_test_and_clear_dirty` clears D alone.
 */
export const slDirtyBits: DirtyBitFormat = {
  isDirty: (lo) => (lo & SL_PTE_D) !== 0,
  withDirty(lo, hi, _level, dirty, out) {
    out[0] = (dirty ? lo | SL_PTE_D : lo & ~SL_PTE_D) >>> 0;
    out[1] = hi;
  },
};

/**
 * The second-level entry as a `RadixLayout` (the same masks as `slPteReservedMasks`): present on R or W; bits
 * above HAW that are not ignored, and TM, reserved in every entry; SNP (bit 11) reserved in tables, and in leaves
 * unless snooping is allowed; PS a leaf at levels 2 and 3 where SLLPS allows, reserved elsewhere above level 1
 * (ignored at level 1); a large leaf's low address bits reserved (alignment). Execute (X, bit 2) has no place in
 * a RadixLayout, so compiled walks grant read and write only: no VT-d request asks for execute.
 */
export function slPteRadixLayout(options: SlPteOptions): RadixLayout | undefined {
  if (options.staleTm === true) return undefined;
  const sllps = options.sllps ?? SLLPS_2M | SLLPS_1G;
  const aboveHaw = (aboveHawMaskBig(options.haw) & ~SL_PTE_IGNORED) | SL_TM;
  const snp = Number(SL_SNP);
  return {
    presentLo: 0x3,
    reservedLo: Number(aboveHaw & 0xffff_ffffn) | (options.snoop ? 0 : snp),
    reservedHi: Number(aboveHaw >> 32n),
    tableReservedLo: snp,
    leafFlagLo: Number(SL_PS),
    alwaysLeafLevels: 1 << 1,
    leafLevels: (sllps & SLLPS_2M ? 1 << 2 : 0) | (sllps & SLLPS_1G ? 1 << 3 : 0),
    addressLo: 0xffff_f000,
    addressHi: 0x000f_ffff,
    leafAlignment: true,
    readLo: 0x1,
    writeLo: 0x2,
    leafPerms: Perm.User,
    tablePerms: Perm.User,
  };
}
