import {
  EntryKind,
  Perm,
  WalkFault,
  address64,
  defineLayout,
  type EntryDecode,
  type PageTableEncoder,
  type PageTableFormat,
  type DirtyBitFormat,
  type PermBits,
  type TableGeometry,
} from "@viommu/core";
import { vmsaLevelShift, vmsaMaxLevel, vmsaTableBytes, type GranuleShift } from "./vmsa-geometry.js";

/**
 * VMSAv8-64 stage-1 descriptors (ARM DDI0487 D8.3; spec arm-hyperv-virtio.md §2.4) as the SMMU reads them
 * through a CD, for the 4K, 16K and 64K granules.
 *
 * bits[1:0]: x0 invalid; 01 block (where the granule allows one) — reserved, so invalid, at ARM level 3 and
 * at levels without blocks; 11 table (ARM levels 0–2) or page (ARM level 3). An invalid or reserved
 * descriptor is a translation fault (EntryKind.Invalid).
 *
 * Output address: descriptor bits [47:g] (block: [47:block shift]); with the 64K granule on an SMMU whose
 * OAS is 52 bits, bits [15:12] hold OA[51:48]. Bits [51:48] of a leaf are DBM/GP/RES0, never address bits.
 */

/** Stage-1 block/page descriptor, with the 4K granule's view of the address (bits [47:12]). */
export const stage1LeafLayout = defineLayout("VMSAv8-64 stage-1 block/page descriptor", 64, [
  { name: "Valid", bit: 0, width: 1 },
  { name: "Type", bit: 1, width: 1 },
  { name: "AttrIndx", bit: 2, width: 3 },
  { name: "NS", bit: 5, width: 1 },
  /** AP[2:1]: bit 6 = AP[1] (EL0 access), bit 7 = AP[2] (read-only). */
  { name: "AP", bit: 6, width: 2 },
  { name: "SH", bit: 8, width: 2 },
  { name: "AF", bit: 10, width: 1 },
  { name: "nG", bit: 11, width: 1 },
  { name: "OutputAddress", bit: 12, width: 36, shift: 12 },
  { name: "DBM", bit: 51, width: 1 },
  { name: "Contiguous", bit: 52, width: 1 },
  { name: "PXN", bit: 53, width: 1 },
  { name: "UXN", bit: 54, width: 1 },
  { name: "Software", bit: 55, width: 4 },
] as const);

/** Stage-1 table descriptor with its hierarchical attributes. */
export const stage1TableLayout = defineLayout("VMSAv8-64 stage-1 table descriptor", 64, [
  { name: "Valid", bit: 0, width: 1 },
  { name: "Type", bit: 1, width: 1 },
  { name: "NextLevelTableAddress", bit: 12, width: 36, shift: 12 },
  { name: "PXNTable", bit: 59, width: 1 },
  { name: "UXNTable", bit: 60, width: 1 },
  { name: "APTable", bit: 61, width: 2 },
  { name: "NSTable", bit: 63, width: 1 },
] as const);

/** Low-half bit masks of the descriptor fields the hot path reads. */
const LO_VALID = 1 << 0;
const LO_TABLE_OR_PAGE = 1 << 1;
const LO_AP1 = 1 << 6;
const LO_AP2 = 1 << 7;
const LO_AF = 1 << 10;
/** High-half (bit − 32) masks. */
const HI_DBM = 1 << (51 - 32);
const HI_PXN = 1 << (53 - 32);
const HI_UXN = 1 << (54 - 32);
const HI_PXN_TABLE = 1 << (59 - 32);
const HI_AP_TABLE0 = 1 << (61 - 32);
const HI_AP_TABLE1 = 1 << (62 - 32);

const TWO_48 = 2 ** 48;

export interface VmsaStage1Options {
  readonly granuleShift: GranuleShift;
  /**
   * The effective output-address size (CD.IPS capped at IDR5.OAS, see `effectiveOutputBits`). A table or
   * output address at or above 2^outputBits is an address-size fault. Default 48.
   */
  readonly outputBits?: number;
  /** IDR5.OAS is 52 bits: with the 64K granule, descriptor bits [15:12] are OA[51:48] and 4 TB level-1 blocks exist. */
  readonly oa52?: boolean;
  /** CD.AFFD or CD.HA set: a leaf with AF = 0 does not fault (HA: the SMMU sets AF itself). */
  readonly accessFlagFaultDisabled?: boolean;
  /** CD.HAD0/HAD1 set: APTable, PXNTable and UXNTable are ignored. */
  readonly hierarchicalAttributesDisabled?: boolean;
  /** CD.HD set: a writable-clean leaf (AP[2] = 1, DBM = 1) grants write; the SMMU marks it dirty. */
  readonly hardwareDirty?: boolean;
}

/** The levels (ours) where a granule allows block descriptors. */
export function vmsaBlockLevels(granuleShift: GranuleShift, oa52 = false): readonly number[] {
  if (granuleShift === 12) return [2, 3];
  if (granuleShift === 14) return [2];
  return oa52 ? [2, 3] : [2];
}

/**
 * The shared decode of descriptor type and address for both stages; fills `out` with Invalid, Fault
 * (AddressSize) or the table/leaf address, pageShift and nextLevel. Returns whether the entry is a leaf.
 * Allocates nothing and never throws.
 */
export function decodeVmsaShape(
  lo: number,
  hi: number,
  level: number,
  granuleShift: GranuleShift,
  maxLevel: number,
  blockAtLevel: readonly boolean[],
  oa52x64k: boolean,
  outputLimit: number,
  out: EntryDecode,
): boolean {
  out.perms = Perm.None;
  out.pageShift = 0;
  out.nextLevel = 0;
  out.address = 0;
  out.fault = WalkFault.None;
  if ((lo & LO_VALID) === 0 || !(level >= 1 && level <= maxLevel)) {
    out.kind = EntryKind.Invalid;
    out.fault = WalkFault.Translation;
    return false;
  }
  const tableOrPage = (lo & LO_TABLE_OR_PAGE) !== 0;
  let leaf: boolean;
  let lowBit: number;
  if (level === 1) {
    if (!tableOrPage) {
      out.kind = EntryKind.Invalid;
      out.fault = WalkFault.Translation;
      return false;
    }
    leaf = true;
    lowBit = granuleShift;
  } else if (tableOrPage) {
    leaf = false;
    lowBit = granuleShift;
  } else {
    if (blockAtLevel[level] !== true) {
      out.kind = EntryKind.Invalid;
      out.fault = WalkFault.Translation;
      return false;
    }
    leaf = true;
    lowBit = granuleShift + (level - 1) * (granuleShift - 3);
  }
  let address = address64(lo, hi, lowBit, 47);
  if (oa52x64k) address += ((lo >>> 12) & 0xf) * TWO_48;
  out.address = address;
  if (address >= outputLimit) {
    out.kind = EntryKind.Fault;
    out.fault = WalkFault.AddressSize;
    return false;
  }
  if (leaf) {
    out.kind = EntryKind.Leaf;
    out.pageShift = lowBit;
  } else {
    out.kind = EntryKind.Table;
    out.nextLevel = level - 1;
  }
  return leaf;
}

function blockTable(levels: readonly number[]): boolean[] {
  const table = [false, false, false, false, false];
  for (const l of levels) table[l] = true;
  return table;
}

/**
 * The stage-1 format for one CD configuration. Permissions: Read always (stage 1 cannot deny a privileged
 * read); Write unless AP[2]; User when AP[1]; Exec means privileged execution: !PXN, and never for an
 * EL0-writable page (AP[2:1] = 01). UXN has no Perm bit; a model of unprivileged instruction fetch reads it
 * from the entry. Tables grant Perm.All minus what APTable/PXNTable remove (unless HAD).
 */
export function vmsaStage1Format(options: VmsaStage1Options): PageTableFormat {
  const g = options.granuleShift;
  const maxLevel = vmsaMaxLevel(g);
  const oa52 = options.oa52 === true;
  const blockAtLevel = blockTable(vmsaBlockLevels(g, oa52));
  const oa52x64k = oa52 && g === 16;
  const outputLimit = 2 ** (options.outputBits ?? 48);
  const afFaults = options.accessFlagFaultDisabled !== true;
  const hierarchical = options.hierarchicalAttributesDisabled !== true;
  const hardwareDirty = options.hardwareDirty === true;
  return {
    name: `VMSAv8-64 stage 1, ${2 ** (g - 10)}K granule`,
    decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
      const leaf = decodeVmsaShape(lo, hi, level, g, maxLevel, blockAtLevel, oa52x64k, outputLimit, out);
      if (out.kind === EntryKind.Table) {
        let perms: number = Perm.All;
        if (hierarchical) {
          if ((hi & HI_AP_TABLE0) !== 0) perms &= ~Perm.User;
          if ((hi & HI_AP_TABLE1) !== 0) perms &= ~Perm.Write;
          if ((hi & HI_PXN_TABLE) !== 0) perms &= ~Perm.Exec;
        }
        out.perms = perms;
        return;
      }
      if (!leaf) return;
      if (afFaults && (lo & LO_AF) === 0) {
        out.kind = EntryKind.Fault;
        out.fault = WalkFault.AccessFlag;
        return;
      }
      const readOnly = (lo & LO_AP2) !== 0;
      const el0 = (lo & LO_AP1) !== 0;
      let perms: number = Perm.Read;
      if (!readOnly || (hardwareDirty && (hi & HI_DBM) !== 0)) perms |= Perm.Write;
      if (el0) perms |= Perm.User;
      if ((hi & HI_PXN) === 0 && !(el0 && !readOnly)) perms |= Perm.Exec;
      out.perms = perms;
    },
  };
}

export interface VmsaEncoderOptions {
  readonly granuleShift: GranuleShift;
  /** The geometry the tables are built for (start level and its size). */
  readonly geometry: TableGeometry;
  /** Encode OA[51:48] in bits [15:12] (64K granule on a 52-bit-OAS SMMU); otherwise addresses must be below 2^48. */
  readonly oa52?: boolean;
}

/** Splits an output/table address into descriptor halves; throws on a misaligned or unencodable address (a bug). */
export function vmsaAddressHalves(address: number, lowBit: number, oa52x64k: boolean, out: Uint32Array): void {
  if (!Number.isSafeInteger(address) || address < 0 || address % 2 ** lowBit !== 0) {
    throw new RangeError(`address 0x${address.toString(16)} is not aligned to 2^${lowBit}`);
  }
  const limit = oa52x64k ? 2 ** 52 : TWO_48;
  if (address >= limit) throw new RangeError(`address 0x${address.toString(16)} does not fit the descriptor`);
  const high4 = Math.floor(address / TWO_48);
  const rest = address - high4 * TWO_48;
  out[0] = (rest >>> 0) | (high4 << 12);
  out[1] = Math.floor(rest / 2 ** 32) >>> 0;
  out[0] = out[0]! >>> 0;
}

/** Shared encoder plumbing: leaf placement rules and table sizes for one geometry. */
export function vmsaLeafAllowed(granuleShift: GranuleShift, oa52: boolean, pageShift: number, level: number): boolean {
  if (level < 1 || level > vmsaMaxLevel(granuleShift)) return false;
  if (pageShift !== vmsaLevelShift(granuleShift, level)) return false;
  return level === 1 || vmsaBlockLevels(granuleShift, oa52).includes(level);
}

/**
 * A VMSAv8-64 writer for one geometry. Table descriptors, leaf placement and descriptor types are the same at
 * both stages; `leafAttributes` ORs a leaf's stage-specific attribute bits (permissions, memory type) into its
 * halves, which already hold the address and type.
 */
export function vmsaEncoder(options: VmsaEncoderOptions, leafAttributes: (perms: PermBits, out: Uint32Array) => void): PageTableEncoder {
  const g = options.granuleShift;
  const oa52 = options.oa52 === true;
  const oa52x64k = oa52 && g === 16;
  return {
    encodeTable(tableAddress: number, _level: number, out: Uint32Array): void {
      vmsaAddressHalves(tableAddress, g, oa52x64k, out);
      out[0] = (out[0]! | 0b11) >>> 0;
    },
    encodeLeaf(pageAddress: number, pageShift: number, perms: PermBits, level: number, out: Uint32Array): void {
      if (!vmsaLeafAllowed(g, oa52, pageShift, level)) throw new RangeError(`no 2^${pageShift}-byte leaf at level ${level} with the ${2 ** (g - 10)}K granule`);
      vmsaAddressHalves(pageAddress, pageShift, oa52x64k, out);
      // Pages (the last level) are type 0b11, blocks 0b01.
      out[0] = (out[0]! | (level === 1 ? 0b11 : 0b01)) >>> 0;
      leafAttributes(perms, out);
    },
    leafAllowed(pageShift: number, level: number): boolean {
      return vmsaLeafAllowed(g, oa52, pageShift, level);
    },
    tableBytes(level: number): number {
      return vmsaTableBytes(options.geometry, g, level);
    },
  };
}

/** MAIR index Linux uses for cacheable memory (attr1 = 0xFF, write-back RWA). */
export const LINUX_MAIR_IDX_CACHE = 1;
const SH_INNER = 3;

export interface VmsaStage1EncoderOptions extends VmsaEncoderOptions {
  /**
   * Writable leaves also carry DBM (bit 51), as io-pgtable-arm writes them under IO_PGTABLE_QUIRK_ARM_HD
   * (arm_lpae_prot_to_pte): the table of a domain whose CD sets HA and HD.
   */
  readonly dirtyBitModifier?: boolean;
}

/**
 * The stage-1 writer, encoding leaves as Linux io-pgtable-arm does for a cacheable mapping: AttrIndx 1, inner
 * shareable, AF, nG, AP[1] for User (Linux's default unprivileged mapping), AP[2] unless Write, and both XN
 * bits unless Exec. So Perm.All gives the 0x…f47 pages a real Linux guest writes. With `dirtyBitModifier` a
 * writable leaf also has DBM and is written writable-dirty.
 */
export function vmsaStage1Encoder(options: VmsaStage1EncoderOptions): PageTableEncoder {
  const dbm = options.dirtyBitModifier === true;
  return vmsaEncoder(options, (perms, out) => {
    let lo = (LINUX_MAIR_IDX_CACHE << 2) | (SH_INNER << 8) | LO_AF | (1 << 11);
    if ((perms & Perm.User) !== 0) lo |= LO_AP1;
    if ((perms & Perm.Write) === 0) lo |= LO_AP2;
    out[0] = (out[0]! | lo) >>> 0;
    if ((perms & Perm.Exec) === 0) out[1] = (out[1]! | HI_PXN | HI_UXN) >>> 0;
    if (dbm && (perms & Perm.Write) !== 0) out[1] = (out[1]! | HI_DBM) >>> 0;
  });
}

/**
 * A stage-1 leaf's dirty state under CD.HD, the Direct Permission Scheme (IHI0070 §3.13.3.1): DBM (bit 51) marks
 * the leaf writable; AP[2] (bit 7) set is writable-clean, clear is writable-dirty (Linux io-pgtable-arm's
 * iopte_writeable_dirty: DBM without AP_RDONLY). On the first write the SMMU clears AP[2] (and sets AF); software
 * cleans by setting AP[2] again. A leaf without DBM is never dirty and is never changed: the SMMU never makes it
 * writable.
 */
export const stage1DirtyBits: DirtyBitFormat = {
  isDirty: (lo, hi) => (hi & HI_DBM) !== 0 && (lo & LO_AP2) === 0,
  withDirty(lo, hi, _level, dirty, out) {
    out[1] = hi;
    if ((hi & HI_DBM) === 0) {
      out[0] = lo;
      return;
    }
    out[0] = (dirty ? (lo & ~LO_AP2) | LO_AF : lo | LO_AP2) >>> 0;
  },
};
