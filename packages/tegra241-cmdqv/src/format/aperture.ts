/**
 * The Tegra241 CMDQV MMIO aperture (spec arm-hyperv-virtio.md §4.1, iommufd.md §7.2; Linux
 * drivers/iommu/arm/arm-smmu-v3/tegra241-cmdqv.c TEGRA241_* offsets; QEMU hw/arm/tegra241-cmdqv.h):
 *
 *   0x00000  config page: global registers, VINTF(v) registers at 0x1000 + 0x100·v
 *   0x10000  VCMDQ page 0 (every global VCMDQ's control/status, stride 0x80)
 *   0x20000  VCMDQ page 1 (every global VCMDQ's base registers, stride 0x80)
 *   0x30000 + 0x20000·i  VINTF i page 0 (its logical VCMDQs' control/status, aliases of the global VCMDQs)
 *   0x40000 + 0x20000·i  VINTF i page 1 (its logical VCMDQs' base registers)
 *
 * All registers are 32-bit except BASE and CONS_INDX_BASE (64-bit, also reachable as two 32-bit halves).
 */

export const CMDQV_PAGE_SIZE = 0x10000;
export const CMDQV_CONFIG_BASE = 0x00000;
export const VCMDQ_PAGE0_BASE = 0x10000;
export const VCMDQ_PAGE1_BASE = 0x20000;
export const VINTF_PAGE_BASE = 0x30000;
/** Register stride between VCMDQs inside a page. */
export const VCMDQ_STRIDE = 0x80;

/** Hardware maxima implied by the register file: 64 VINTFs (VINTF_ERR_MAP), 128 VCMDQs (CMDQ_ERR_MAP), 16 SID slots. */
export const CMDQV_MAX_VINTFS = 64;
export const CMDQV_MAX_VCMDQS = 128;
export const CMDQV_MAX_SIDS_PER_VINTF = 16;

/** Global registers of the config page. */
export const CmdqvReg = {
  CONFIG: 0x0000,
  PARAM: 0x0004,
  STATUS: 0x0008,
  VINTF_ERR_MAP: 0x0014,
  VINTF_INT_MASK: 0x001c,
  CMDQ_ERR_MAP0: 0x0024,
  CMDQ_ALLOC0: 0x0200,
} as const;

/** Registers of one VINTF, relative to vintfBase(v). */
export const VintfReg = {
  CONFIG: 0x00,
  STATUS: 0x04,
  SID_MATCH0: 0x40,
  SID_REPLACE0: 0x80,
  LVCMDQ_ERR_MAP0: 0xc0,
} as const;

/** Page-0 registers of one (L)VCMDQ, relative to its slot. */
export const VcmdqPage0Reg = {
  CONS_INDX: 0x00,
  PROD_INDX: 0x04,
  CONFIG: 0x08,
  STATUS: 0x0c,
  GERROR: 0x10,
  GERRORN: 0x14,
} as const;

/** Page-1 registers of one (L)VCMDQ, relative to its slot (64-bit; the H halves at +4). */
export const VcmdqPage1Reg = {
  BASE: 0x00,
  CONS_INDX_BASE: 0x08,
} as const;

/** TEGRA241_CMDQV_CMDQ_ERR_MAP(m), m = 0..3 (32-bit words of a 128-bit map). */
export function cmdqErrMapOffset(m: number): number {
  return CmdqvReg.CMDQ_ERR_MAP0 + 4 * m;
}

/** TEGRA241_CMDQV_CMDQ_ALLOC(q): maps global VCMDQ q to a VINTF's logical VCMDQ. */
export function cmdqAllocOffset(q: number): number {
  return CmdqvReg.CMDQ_ALLOC0 + 4 * q;
}

/** TEGRA241_VINTF(v): base of VINTF v's registers inside the config page. */
export function vintfBase(v: number): number {
  return 0x1000 + 0x100 * v;
}

export function vintfSidMatchOffset(v: number, s: number): number {
  return vintfBase(v) + VintfReg.SID_MATCH0 + 4 * s;
}

export function vintfSidReplaceOffset(v: number, s: number): number {
  return vintfBase(v) + VintfReg.SID_REPLACE0 + 4 * s;
}

/** TEGRA241_VINTF_LVCMDQ_ERR_MAP_64(m), m = 0..1 (Linux reads the 128-bit map as two 64-bit words). */
export function vintfLvcmdqErrMap64Offset(v: number, m: number): number {
  return vintfBase(v) + VintfReg.LVCMDQ_ERR_MAP0 + 8 * m;
}

/** TEGRA241_VCMDQ_PAGE0(q): global VCMDQ q's control/status slot. */
export function vcmdqPage0(q: number): number {
  return VCMDQ_PAGE0_BASE + VCMDQ_STRIDE * q;
}

/** TEGRA241_VCMDQ_PAGE1(q): global VCMDQ q's base-register slot. */
export function vcmdqPage1(q: number): number {
  return VCMDQ_PAGE1_BASE + VCMDQ_STRIDE * q;
}

/** TEGRA241_VINTFi_PAGE0(i): the page the host mmaps into the VM as its VINTF page 0 (64 KiB). */
export function vintfPage0(i: number): number {
  return VINTF_PAGE_BASE + 0x20000 * i;
}

/** TEGRA241_VINTFi_PAGE1(i). */
export function vintfPage1(i: number): number {
  return vintfPage0(i) + CMDQV_PAGE_SIZE;
}

/** TEGRA241_VINTFi_LVCMDQ_PAGE0(i, q). */
export function lvcmdqPage0(i: number, q: number): number {
  return vintfPage0(i) + VCMDQ_STRIDE * q;
}

/** TEGRA241_VINTFi_LVCMDQ_PAGE1(i, q). */
export function lvcmdqPage1(i: number, q: number): number {
  return vintfPage1(i) + VCMDQ_STRIDE * q;
}

/** Aperture length for `vintfs` VINTFs (QEMU exposes one: 0x50000). */
export function cmdqvApertureSize(vintfs: number): number {
  return VINTF_PAGE_BASE + 0x20000 * vintfs;
}

/**
 * The global VCMDQ Linux pre-assigns to (vintf, lidx): vintf · lvcmdqsPerVintf + lidx
 * (tegra241_vintf_init_lvcmdq; CMDQ_ALLOC programming in tegra241_cmdqv_hw_reset).
 */
export function globalVcmdqIndex(vintf: number, lidx: number, lvcmdqsPerVintf: number): number {
  return vintf * lvcmdqsPerVintf + lidx;
}

export type GlobalRegName = "CONFIG" | "PARAM" | "STATUS" | "VINTF_ERR_MAP" | "VINTF_INT_MASK" | "CMDQ_ERR_MAP" | "CMDQ_ALLOC";
export type VintfRegName = "CONFIG" | "STATUS" | "SID_MATCH" | "SID_REPLACE" | "LVCMDQ_ERR_MAP";
export type Page0RegName = keyof typeof VcmdqPage0Reg;
export type Page1RegName = "BASE" | "BASE_H" | "CONS_INDX_BASE" | "CONS_INDX_BASE_H";

/** What a 32-bit access at an aperture offset reaches. `index` numbers repeated registers (32-bit words). */
export type CmdqvRegisterRef =
  | { readonly block: "global"; readonly register: GlobalRegName; readonly index: number }
  | { readonly block: "vintf"; readonly vintf: number; readonly register: VintfRegName; readonly index: number }
  | { readonly block: "vcmdq-page0"; readonly queue: number; readonly register: Page0RegName }
  | { readonly block: "vcmdq-page1"; readonly queue: number; readonly register: Page1RegName }
  | { readonly block: "vintf-page0"; readonly vintf: number; readonly queue: number; readonly register: Page0RegName }
  | { readonly block: "vintf-page1"; readonly vintf: number; readonly queue: number; readonly register: Page1RegName };

const page0ByOffset = new Map<number, Page0RegName>(Object.entries(VcmdqPage0Reg).map(([k, v]) => [v, k as Page0RegName]));
const page1ByOffset = new Map<number, Page1RegName>([
  [0x0, "BASE"],
  [0x4, "BASE_H"],
  [0x8, "CONS_INDX_BASE"],
  [0xc, "CONS_INDX_BASE_H"],
]);

function globalRegister(offset: number): CmdqvRegisterRef | undefined {
  if (offset === CmdqvReg.CONFIG) return { block: "global", register: "CONFIG", index: 0 };
  if (offset === CmdqvReg.PARAM) return { block: "global", register: "PARAM", index: 0 };
  if (offset === CmdqvReg.STATUS) return { block: "global", register: "STATUS", index: 0 };
  if (offset === 0x14 || offset === 0x18) return { block: "global", register: "VINTF_ERR_MAP", index: (offset - 0x14) / 4 };
  if (offset === 0x1c || offset === 0x20) return { block: "global", register: "VINTF_INT_MASK", index: (offset - 0x1c) / 4 };
  if (offset >= 0x24 && offset <= 0x30) return { block: "global", register: "CMDQ_ERR_MAP", index: (offset - 0x24) / 4 };
  if (offset >= 0x200 && offset < 0x200 + 4 * CMDQV_MAX_VCMDQS) return { block: "global", register: "CMDQ_ALLOC", index: (offset - 0x200) / 4 };
  return undefined;
}

function vintfRegister(vintf: number, rel: number): CmdqvRegisterRef | undefined {
  if (rel === VintfReg.CONFIG) return { block: "vintf", vintf, register: "CONFIG", index: 0 };
  if (rel === VintfReg.STATUS) return { block: "vintf", vintf, register: "STATUS", index: 0 };
  if (rel >= 0x40 && rel < 0x80) return { block: "vintf", vintf, register: "SID_MATCH", index: (rel - 0x40) / 4 };
  if (rel >= 0x80 && rel < 0xc0) return { block: "vintf", vintf, register: "SID_REPLACE", index: (rel - 0x80) / 4 };
  if (rel >= 0xc0 && rel < 0xd0) return { block: "vintf", vintf, register: "LVCMDQ_ERR_MAP", index: (rel - 0xc0) / 4 };
  return undefined;
}

/**
 * Names the register a 32-bit access at `offset` reaches, or undefined for an offset that holds none (unaligned,
 * a gap, or past the last VINTF page). `vintfs` bounds the VINTF pages present (the aperture length).
 */
export function decodeCmdqvOffset(offset: number, vintfs = CMDQV_MAX_VINTFS): CmdqvRegisterRef | undefined {
  if (!Number.isInteger(offset) || offset < 0 || offset % 4 !== 0 || offset >= cmdqvApertureSize(vintfs)) return undefined;
  if (offset < VCMDQ_PAGE0_BASE) {
    if (offset >= 0x1000 && offset < vintfBase(CMDQV_MAX_VINTFS)) return vintfRegister((offset - 0x1000) >> 8, (offset - 0x1000) & 0xff);
    return globalRegister(offset);
  }
  const page = Math.floor(offset / CMDQV_PAGE_SIZE);
  const within = offset % CMDQV_PAGE_SIZE;
  const queue = Math.floor(within / VCMDQ_STRIDE);
  const rel = within % VCMDQ_STRIDE;
  if (queue >= CMDQV_MAX_VCMDQS) return undefined;
  const p0 = page0ByOffset.get(rel);
  const p1 = page1ByOffset.get(rel);
  if (page === 1) return p0 === undefined ? undefined : { block: "vcmdq-page0", queue, register: p0 };
  if (page === 2) return p1 === undefined ? undefined : { block: "vcmdq-page1", queue, register: p1 };
  const vintf = Math.floor((page - 3) / 2);
  if ((page - 3) % 2 === 0) return p0 === undefined ? undefined : { block: "vintf-page0", vintf, queue, register: p0 };
  return p1 === undefined ? undefined : { block: "vintf-page1", vintf, queue, register: p1 };
}
