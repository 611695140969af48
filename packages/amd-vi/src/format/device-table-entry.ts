import { defineLayout, encodeLayout, getBits, hasReservedBits, rawBits, setBits, type Fields, type RawBits } from "@viommu/core";
import { fieldRecord, type FieldRecord } from "./layout-tools.js";

/**
 * The 256-bit Device Table Entry (Device Table base + 32 × DeviceID; spec x86.md B3).
 *
 * Sources: Linux DTE_* / DEV_ENTRY_* bit numbers, Xen struct amd_iommu_dte, QEMU's reserved-bit masks
 * (AMDVI_DTE_QUAD0..3_RESERVED), VirtualBox DEV_TAB_ENTRY_T. Fields the spec file leaves reserved but newer
 * sources name: bit 106 SATS and bit 187 HPTMode (AMD spec rev 3.11 as tabulated by the OSDev wiki; QEMU's
 * reserved masks leave both bits unreserved), bit 207 vImuEn, [223:208] GuestID and [239:224] GDeviceID
 * (AMDESE/linux-iommu DTE_VIOMMU_*_SHIFT; the OSDev table swaps GuestID and GDeviceID, AMD's code is
 * followed). [183:182] GuestPagingMode is Linux DTE_GPT_LEVEL_MASK (Xen reserves it).
 *
 * The GCR3 table root pointer is split in three: [60:58] = GCR3[14:12], [95:80] = GCR3[30:15],
 * [127:107] = GCR3[51:31]; `dteGcr3Root` / `setDteGcr3Root` put it together.
 */
export const dteLayout = defineLayout("DTE", 256, [
  { name: "V", bit: 0, width: 1 },
  { name: "TV", bit: 1, width: 1 },
  { name: "HAD", bit: 7, width: 2 },
  { name: "Mode", bit: 9, width: 3 },
  { name: "HostPageTableRootPointer", bit: 12, width: 40, shift: 12 },
  { name: "PPR", bit: 52, width: 1 },
  { name: "GPRP", bit: 53, width: 1 },
  { name: "GIoV", bit: 54, width: 1 },
  { name: "GV", bit: 55, width: 1 },
  { name: "GLX", bit: 56, width: 2 },
  { name: "GCR3TRP_14_12", bit: 58, width: 3 },
  { name: "IR", bit: 61, width: 1 },
  { name: "IW", bit: 62, width: 1 },
  { name: "DomainID", bit: 64, width: 16 },
  { name: "GCR3TRP_30_15", bit: 80, width: 16 },
  { name: "I", bit: 96, width: 1 },
  { name: "SE", bit: 97, width: 1 },
  { name: "SA", bit: 98, width: 1 },
  { name: "IoCtl", bit: 99, width: 2 },
  { name: "Cache", bit: 101, width: 1 },
  { name: "SD", bit: 102, width: 1 },
  { name: "EX", bit: 103, width: 1 },
  { name: "SysMgt", bit: 104, width: 2 },
  { name: "SATS", bit: 106, width: 1 },
  { name: "GCR3TRP_51_31", bit: 107, width: 21 },
  { name: "IV", bit: 128, width: 1 },
  { name: "IntTabLen", bit: 129, width: 4 },
  { name: "IG", bit: 133, width: 1 },
  { name: "InterruptTableRootPointer", bit: 134, width: 46, shift: 6 },
  { name: "GuestPagingMode", bit: 182, width: 2 },
  { name: "InitPass", bit: 184, width: 1 },
  { name: "EIntPass", bit: 185, width: 1 },
  { name: "NMIPass", bit: 186, width: 1 },
  { name: "HPTMode", bit: 187, width: 1 },
  { name: "IntCtl", bit: 188, width: 2 },
  { name: "Lint0Pass", bit: 190, width: 1 },
  { name: "Lint1Pass", bit: 191, width: 1 },
  { name: "vImuEn", bit: 207, width: 1 },
  { name: "GuestID", bit: 208, width: 16 },
  { name: "GDeviceID", bit: 224, width: 16 },
  { name: "AttrV", bit: 246, width: 1 },
  { name: "Mode0FC", bit: 247, width: 1 },
  { name: "SnoopAttribute", bit: 248, width: 8 },
] as const);

export type DteFields = Fields<typeof dteLayout>;

export const DTE_BYTES = 32;

/** DTE.Mode values (host v1 page-table levels): 0 = no translation, 1..6 = levels, 7 = reserved. */
export const DTE_MODE_RESERVED = 7;

/** DTE.IntCtl: what happens to fixed and arbitrated interrupts. */
export const IntCtl = { Abort: 0, Forward: 1, Remap: 2, Reserved: 3 } as const;
/** DTE.IoCtl: port I/O requests. */
export const IoCtl = { Abort: 0, Forward: 1, Translate: 2 } as const;
/** DTE.SysMgt: system management messages. */
export const SysMgt = { Abort: 0, ForwardMessages: 1, ForwardInt: 2, ForwardDma: 3 } as const;
/** DTE.GuestPagingMode (Linux GUEST_PGTABLE_*_LEVEL). */
export const GuestPagingMode = { FourLevel: 0, FiveLevel: 1 } as const;

/** IntTabLen values above 11 (2048 entries) are reserved. */
export const MAX_INT_TAB_LEN = 11;

export function decodeDte(raw: RawBits): FieldRecord {
  const f = fieldRecord(dteLayout, raw);
  f["GCR3TableRootPointer"] = dteGcr3Root(raw);
  return f;
}

export function encodeDte(fields: Partial<DteFields>): RawBits {
  return encodeLayout(dteLayout, fields);
}

/** The GCR3 table root pointer (a 4 KiB-aligned address below 2^52) assembled from its three DTE pieces. */
export function dteGcr3Root(raw: RawBits): number {
  const a = getBits(raw, 58, 3);
  const b = getBits(raw, 80, 16);
  const c = getBits(raw, 107, 21);
  return a * 2 ** 12 + b * 2 ** 15 + c * 2 ** 31;
}

/** Writes a 4 KiB-aligned GCR3 table root pointer (< 2^52) into its three DTE pieces. */
export function setDteGcr3Root(raw: RawBits, root: number): void {
  if (!Number.isSafeInteger(root) || root < 0 || root >= 2 ** 52 || root % 4096 !== 0) {
    throw new RangeError(`GCR3 table root 0x${root.toString(16)} is not a 4 KiB-aligned address below 2^52`);
  }
  setBits(raw, 58, 3, Math.floor(root / 2 ** 12) % 8);
  setBits(raw, 80, 16, Math.floor(root / 2 ** 15) % 2 ** 16);
  setBits(raw, 107, 21, Math.floor(root / 2 ** 31));
}

/**
 * Why hardware would reject this DTE with ILLEGAL_DEV_TABLE_ENTRY, or undefined when it is well formed.
 * Checked only when V = 1: reserved bits (QEMU's masks), Mode = 7, IntTabLen above 11, GLX = 3 and
 * GuestPagingMode 2–3 (reserved encodings; Linux nested.c rejects the last two as well).
 */
export type DteProblem = "reserved-bits" | "reserved-mode" | "reserved-int-tab-len" | "reserved-glx" | "reserved-guest-paging-mode";

export function dteProblem(raw: RawBits): DteProblem | undefined {
  if ((raw[0]! & 1) === 0) return undefined;
  if (hasReservedBits(dteLayout, raw)) return "reserved-bits";
  if (((raw[0]! >>> 9) & 7) === DTE_MODE_RESERVED) return "reserved-mode";
  if (((raw[4]! >>> 1) & 0xf) > MAX_INT_TAB_LEN) return "reserved-int-tab-len";
  if (((raw[1]! >>> 24) & 3) === 3) return "reserved-glx";
  if (((raw[5]! >>> 22) & 3) > 1) return "reserved-guest-paging-mode";
  return undefined;
}

/**
 * The DTE Linux writes for a DeviceID with no domain (init.c init_device_table_dma / set_dev_entry_bit):
 * V = 1 and TV = 1 (DMA refused: Mode 0, IR = IW = 0); TV stays clear under SNP. With interrupt
 * remapping on, Linux also sets IV = 1. Real Linux 6.1 data (spec x86.md PART C): qwords 0x3, 0, 0x1, 0.
 */
export function linuxUnusedDte(options: { snp?: boolean; interruptRemapping?: boolean } = {}): RawBits {
  const raw = rawBits(256);
  raw[0] = options.snp ? 1 : 3;
  if (options.interruptRemapping ?? true) raw[4] = 1;
  return raw;
}

/** The DTE bits an IVHD device entry's DTE-setting byte writes (spec x86.md B9.3). */
export function applyIvhdDteSetting(raw: RawBits, setting: number): void {
  setBits(raw, 184, 1, setting & 1);
  setBits(raw, 185, 1, (setting >>> 1) & 1);
  setBits(raw, 186, 1, (setting >>> 2) & 1);
  setBits(raw, 104, 2, (setting >>> 4) & 3);
  setBits(raw, 190, 1, (setting >>> 6) & 1);
  setBits(raw, 191, 1, (setting >>> 7) & 1);
}

/**
 * iommufd nested translation (spec iommufd.md §8.1; Linux drivers/iommu/amd/nested.c
 * validate_gdte_nested): the guest's 256-bit DTE passed in `iommu_hwpt_amd_guest.dte[4]`. Returns the errno
 * Linux answers and why, or undefined when the guest DTE is acceptable.
 */
export interface NestedDteProblem {
  readonly errno: "EINVAL" | "EOPNOTSUPP";
  readonly reason: string;
}

export function nestedGuestDteProblem(guestDte: RawBits, hostSupportsFiveLevel: boolean): NestedDteProblem | undefined {
  const mode = (guestDte[0]! >>> 9) & 7;
  const hostRoot = getBits(guestDte, 12, 40);
  if (mode !== 0 || hostRoot !== 0) return { errno: "EINVAL", reason: "guest DTE sets host-only Mode or Host Page Table Root Pointer" };
  const v = guestDte[0]! & 1;
  const gv = (guestDte[1]! >>> 23) & 1;
  if (v === 1 && gv === 1 && dteGcr3Root(guestDte) === 0) return { errno: "EINVAL", reason: "V and GV set without a GCR3 table root" };
  const gpt = (guestDte[5]! >>> 22) & 3;
  if (gpt > 1) return { errno: "EINVAL", reason: "reserved GuestPagingMode" };
  if (((guestDte[1]! >>> 24) & 3) === 3) return { errno: "EINVAL", reason: "GLX = 3 is reserved" };
  if (gpt === 1 && !hostSupportsFiveLevel) return { errno: "EOPNOTSUPP", reason: "5-level guest paging without host support" };
  return undefined;
}

/**
 * The bits of a guest DTE that Linux copies into the host DTE for a nested domain (nested.c
 * set_dte_nested): PPR, GLX, GIoV and the three GCR3 pieces from qwords 0–1, GuestPagingMode from qword 2.
 * GV is forced on by the host. Returned as a 256-bit mask.
 */
export function nestedGuestDteMask(): RawBits {
  const mask = rawBits(256);
  setBits(mask, 52, 1, 1);
  setBits(mask, 54, 1, 1);
  setBits(mask, 56, 2, 3);
  setBits(mask, 58, 3, 7);
  setBits(mask, 80, 16, 0xffff);
  setBits(mask, 107, 21, 0x1fffff);
  setBits(mask, 182, 2, 3);
  return mask;
}
