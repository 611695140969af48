import { defineLayout } from "@viommu/core";

/**
 * Per-VCMDQ registers, stride 0x80 (spec arm-hyperv-virtio.md §4.4, iommufd.md §7.3): page 0 holds the
 * control/status the guest drives directly (the page the host mmaps into the VM), page 1 the base registers
 * (trapped by the VMM, turned into IOMMU_HW_QUEUE_ALLOC). Bit positions from Linux tegra241-cmdqv.c and QEMU
 * hw/arm/tegra241-cmdqv.h.
 */

/**
 * VCMDQ_CONS_INDX (page 0 +0x00): RD is the consumer index in SMMU queue format (index, then the wrap bit at bit
 * LOG2SIZE); ERR (Linux VCMDQ_CONS_ERR) is the SMMU CERROR code of the command that stopped the queue.
 */
export const vcmdqConsIndxLayout = defineLayout("VCMDQ_CONS_INDX", 32, [
  { name: "RD", bit: 0, width: 20 },
  { name: "ERR", bit: 24, width: 7 },
] as const);

/** CONS_INDX.ERR values (QEMU V_VCMDQ_CONS_INDX_ERR_CERROR_*; 0..3 as the SMMU architecture's CMDQ_CONS.ERR). */
export const VcmdqCerror = {
  CERROR_NONE: 0,
  CERROR_ILL: 1,
  CERROR_ABT: 2,
  CERROR_ATC_INV_SYNC: 3,
  /** Defined by QEMU, meaning undocumented (spec §9 item 9). */
  CERROR_ILL_ACCESS: 4,
} as const;

const cerrorNames = new Map<number, string>(Object.entries(VcmdqCerror).map(([k, v]) => [v, k]));

export function vcmdqCerrorName(code: number): string {
  return cerrorNames.get(code) ?? "UNKNOWN";
}

/** VCMDQ_PROD_INDX (page 0 +0x04): the producer index the guest writes, same format as RD. */
export const vcmdqProdIndxLayout = defineLayout("VCMDQ_PROD_INDX", 32, [{ name: "WR", bit: 0, width: 20 }] as const);

/** VCMDQ_CONFIG (page 0 +0x08); enable handshake with STATUS.CMDQ_EN_OK. */
export const vcmdqConfigLayout = defineLayout("VCMDQ_CONFIG", 32, [{ name: "CMDQ_EN", bit: 0, width: 1 }] as const);

/** VCMDQ_STATUS (page 0 +0x0C). */
export const vcmdqStatusLayout = defineLayout("VCMDQ_STATUS", 32, [{ name: "CMDQ_EN_OK", bit: 0, width: 1 }] as const);

/**
 * VCMDQ_GERROR (page 0 +0x10) and VCMDQ_GERRORN (+0x14): an error is active while a GERROR bit differs from the
 * GERRORN bit; software acknowledges by writing GERROR's value to GERRORN.
 */
export const vcmdqGerrorLayout = defineLayout("VCMDQ_GERROR", 32, [
  { name: "CMDQ_ERR", bit: 0, width: 1 },
  { name: "CONS_DRAM_WR_ABT_ERR", bit: 1, width: 1 },
  { name: "CMDQ_INIT_ERR", bit: 2, width: 1 },
] as const);

/** GERROR.CMDQ_ERR: the queue stopped on a command (CONS_INDX.ERR says why) until GERRORN acknowledges it. */
export const VCMDQ_GERROR_CMDQ_ERR = 1 << 0;

/** The GERROR bits not yet acknowledged in GERRORN. */
export function activeGerrors(gerror: number, gerrorn: number): number {
  return ((gerror ^ gerrorn) & 0x7) >>> 0;
}

/** Whether a queue is stopped on a command error: GERROR.CMDQ_ERR not yet acknowledged in GERRORN. */
export function cmdqErrorActive(gerror: number, gerrorn: number): boolean {
  return (activeGerrors(gerror, gerrorn) & VCMDQ_GERROR_CMDQ_ERR) !== 0;
}

/**
 * VCMDQ_BASE (page 1 +0x00, 64-bit; BASE_L [31:5] / BASE_H [15:0] as halves): LOG2SIZE = log2 of the entry count
 * (16-byte SMMU commands), ADDR = the queue base [47:5] (decodes to the address itself).
 */
export const vcmdqBaseLayout = defineLayout("VCMDQ_BASE", 64, [
  { name: "LOG2SIZE", bit: 0, width: 5 },
  { name: "ADDR", bit: 5, width: 43, shift: 5 },
] as const);

/** Linux's historical LOG2SIZE cap for host queues (VCMDQ_LOG2SIZE_MAX); newer kernels cap at IDR1.CMDQS. */
export const VCMDQ_LOG2SIZE_MAX = 19;

/** VCMDQ_CONS_INDX_BASE (page 1 +0x08, 64-bit): DRAM address [47:0] where CONS is mirrored when CONS_DRAM_EN. */
export const vcmdqConsIndxBaseLayout = defineLayout("VCMDQ_CONS_INDX_BASE", 64, [{ name: "ADDR", bit: 0, width: 48 }] as const);

/** Splits an SMMU-format queue index (RD or WR) for a queue of 2^log2size entries into slot and wrap bit. */
export function queuePointer(value: number, log2size: number): { index: number; wrap: number } {
  const entries = 2 ** log2size;
  return { index: value % entries, wrap: Math.floor(value / entries) % 2 };
}

/**
 * The BASE value for a queue of `lengthBytes` at `base` as Linux's user-queue path computes it
 * (tegra241_vintf_alloc_lvcmdq_user): base & VCMDQ_ADDR | (log2(length) − 4). Undefined when a rule iommufd
 * enforces is broken: length a power of two, at least 32 bytes and at most 2^(IDR1.CMDQS + 4) when `cmdqs` is
 * given; base aligned to the length and within 48 bits.
 */
export function vcmdqBaseFor(base: bigint, lengthBytes: number, cmdqs?: number): bigint | undefined {
  const log2 = Math.log2(lengthBytes);
  if (!Number.isInteger(log2) || log2 < 5 || (cmdqs !== undefined && log2 > cmdqs + 4)) return undefined;
  if (base < 0n || base >= 1n << 48n || base % BigInt(lengthBytes) !== 0n) return undefined;
  return base | BigInt(log2 - 4);
}
