import { EntryKind, Perm, WalkFault, defineLayout, type DirtyBitFormat, type EntryDecode, type PageTableEncoder, type PageTableFormat } from "@viommu/core";
import { vmsaMaxLevel, type GranuleShift } from "./vmsa-geometry.js";
import { decodeVmsaShape, vmsaBlockLevels, vmsaEncoder, type VmsaEncoderOptions } from "./vmsa-stage1.js";

/**
 * VMSAv8-64 stage-2 descriptors (ARM DDI0487 D8.3; spec arm-hyperv-virtio.md §2.4), as the SMMU reads them
 * through STE.S2TTB. Descriptor types and addresses as for stage 1; table descriptors carry no attributes;
 * leaves carry MemAttr, S2AP and XN instead of AttrIndx/AP/PXN/UXN.
 */

export const stage2LeafLayout = defineLayout("VMSAv8-64 stage-2 block/page descriptor", 64, [
  { name: "Valid", bit: 0, width: 1 },
  { name: "Type", bit: 1, width: 1 },
  { name: "MemAttr", bit: 2, width: 4 },
  /** S2AP: bit 6 read allowed, bit 7 write allowed. */
  { name: "S2AP", bit: 6, width: 2 },
  { name: "SH", bit: 8, width: 2 },
  { name: "AF", bit: 10, width: 1 },
  { name: "OutputAddress", bit: 12, width: 36, shift: 12 },
  { name: "DBM", bit: 51, width: 1 },
  { name: "Contiguous", bit: 52, width: 1 },
  /** XN[1:0]; without IDR3.XNX only bit 54 (XN[1]) counts. */
  { name: "XN", bit: 53, width: 2 },
  { name: "Software", bit: 55, width: 4 },
] as const);

export const stage2TableLayout = defineLayout("VMSAv8-64 stage-2 table descriptor", 64, [
  { name: "Valid", bit: 0, width: 1 },
  { name: "Type", bit: 1, width: 1 },
  { name: "NextLevelTableAddress", bit: 12, width: 36, shift: 12 },
] as const);

const LO_S2AP_READ = 1 << 6;
const LO_S2AP_WRITE = 1 << 7;
const LO_AF = 1 << 10;
const HI_DBM = 1 << (51 - 32);
const HI_XN0 = 1 << (53 - 32);
const HI_XN1 = 1 << (54 - 32);

/** Stage-2 MemAttr values Linux writes. */
export const S2MemAttr = { NormalWriteBack: 0xf, NormalNonCacheable: 0x5, DeviceNGnRE: 0x1 } as const;

export interface VmsaStage2Options {
  readonly granuleShift: GranuleShift;
  /** Effective STE.S2PS (capped at OAS): addresses at or above 2^outputBits fault with AddressSize. Default 48. */
  readonly outputBits?: number;
  /** IDR5.OAS is 52 bits (64K granule: bits [15:12] are OA[51:48], 4 TB level-1 blocks). */
  readonly oa52?: boolean;
  /** STE.S2AFFD or STE.S2HA: AF = 0 does not fault. */
  readonly accessFlagFaultDisabled?: boolean;
  /** STE.S2HD: a writable-clean leaf (S2AP[1] = 0, DBM = 1) grants write. */
  readonly hardwareDirty?: boolean;
  /** IDR3.XNX: XN is the 2-bit field (01 and 10 deny privileged execution); otherwise only bit 54 counts. */
  readonly xnx?: boolean;
}

/**
 * The stage-2 format for one STE configuration. Permissions: Read/Write from S2AP (DBM with S2HD also grants
 * Write); User always (stage 2 does not distinguish EL0, except through XNX); Exec means privileged execution.
 * Tables grant Perm.All.
 */
export function vmsaStage2Format(options: VmsaStage2Options): PageTableFormat {
  const g = options.granuleShift;
  const maxLevel = vmsaMaxLevel(g);
  const oa52 = options.oa52 === true;
  const blockAtLevel = [false, false, false, false, false];
  for (const l of vmsaBlockLevels(g, oa52)) blockAtLevel[l] = true;
  const oa52x64k = oa52 && g === 16;
  const outputLimit = 2 ** (options.outputBits ?? 48);
  const afFaults = options.accessFlagFaultDisabled !== true;
  const hardwareDirty = options.hardwareDirty === true;
  const xnx = options.xnx === true;
  return {
    name: `VMSAv8-64 stage 2, ${2 ** (g - 10)}K granule`,
    decodeEntry(lo: number, hi: number, level: number, out: EntryDecode): void {
      const leaf = decodeVmsaShape(lo, hi, level, g, maxLevel, blockAtLevel, oa52x64k, outputLimit, out);
      if (out.kind === EntryKind.Table) {
        out.perms = Perm.All;
        return;
      }
      if (!leaf) return;
      if (afFaults && (lo & LO_AF) === 0) {
        out.kind = EntryKind.Fault;
        out.fault = WalkFault.AccessFlag;
        return;
      }
      let perms: number = Perm.User;
      if ((lo & LO_S2AP_READ) !== 0) perms |= Perm.Read;
      if ((lo & LO_S2AP_WRITE) !== 0 || (hardwareDirty && (hi & HI_DBM) !== 0)) perms |= Perm.Write;
      const xn1 = (hi & HI_XN1) !== 0;
      const xn0 = (hi & HI_XN0) !== 0;
      // XNX: 00 both execute, 01 privileged XN, 10 both XN, 11 unprivileged XN; else XN[1] alone.
      const privilegedExec = xnx ? xn1 === xn0 : !xn1;
      if (privilegedExec) perms |= Perm.Exec;
      out.perms = perms;
    },
  };
}

const SH_INNER = 3;

export interface VmsaStage2EncoderOptions extends VmsaEncoderOptions {
  /**
   * Writable leaves also carry DBM (bit 51): the table of a domain whose STEs set S2HD, so that its dirty state can
   * be cleaned (S2AP[1] cleared) and set again by the hardware. Without it no leaf has DBM.
   */
  readonly dirtyBitModifier?: boolean;
}

/**
 * The stage-2 writer, encoding leaves as Linux io-pgtable-arm does for a cacheable stage-2 mapping: MemAttr
 * 0xF (normal write-back), inner shareable, AF, S2AP from Read/Write, XN (bit 54) unless Exec. With
 * `dirtyBitModifier` a writable leaf is written writable-dirty with DBM, as io-pgtable-arm writes a leaf under
 * IO_PGTABLE_QUIRK_ARM_HD (ARM_LPAE_PTE_DBM with write permission; drivers/iommu/io-pgtable-arm.c,
 * arm_lpae_prot_to_pte): a new mapping reads dirty until the first clean.
 */
export function vmsaStage2Encoder(options: VmsaStage2EncoderOptions): PageTableEncoder {
  const dbm = options.dirtyBitModifier === true;
  return vmsaEncoder(options, (perms, out) => {
    let lo = (S2MemAttr.NormalWriteBack << 2) | (SH_INNER << 8) | LO_AF;
    if ((perms & Perm.Read) !== 0) lo |= LO_S2AP_READ;
    if ((perms & Perm.Write) !== 0) lo |= LO_S2AP_WRITE;
    out[0] = (out[0]! | lo) >>> 0;
    if ((perms & Perm.Exec) === 0) out[1] = (out[1]! | HI_XN1) >>> 0;
    if (dbm && (perms & Perm.Write) !== 0) out[1] = (out[1]! | HI_DBM) >>> 0;
  });
}

/**
 * A stage-2 leaf's dirty state under STE.S2HD, the Direct Permission Scheme (IHI0070 §3.13.3.1): DBM (bit 51) says
 * the leaf is meant to be writable; S2AP[1] (bit 7) clear is writable-clean, set is writable-dirty. On the first
 * write through a writable-clean leaf the SMMU sets S2AP[1] (and AF, §3.13.2: a dirty update leaves AF = 1);
 * software cleans it by clearing S2AP[1]. The SMMU never sets or clears DBM, never clears S2AP[1], and never makes
 * a leaf without DBM writable: such a leaf is never dirty and is left as it is.
 */
export const stage2DirtyBits: DirtyBitFormat = {
  isDirty: (lo, hi) => (hi & HI_DBM) !== 0 && (lo & LO_S2AP_WRITE) !== 0,
  withDirty(lo, hi, _level, dirty, out) {
    out[1] = hi;
    if ((hi & HI_DBM) === 0) {
      out[0] = lo;
      return;
    }
    out[0] = (dirty ? lo | LO_S2AP_WRITE | LO_AF : lo & ~LO_S2AP_WRITE) >>> 0;
  },
};
