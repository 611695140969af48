import { defineLayout, type Layout } from "@viommu/core";

/**
 * The VT-d remapping-unit register file (Intel VT-d spec chapter 11): where each register sits and the field
 * layout of the ones this project models. Offsets and widths from ../shared/spec/x86.md A1 (Linux
 * `DMAR_*_REG`, QEMU `hw/i386/intel_iommu_internal.h`); field positions from A1.1 and VirtualBox's
 * spec-derived `VTD_BF_*_REG_*`. CAP and ECAP have their own files (cap.ts, ecap.ts); the fault-recording
 * registers are in fault-record.ts.
 */

/** How software may access a register, as the spec lists it for the register as a whole. */
export type RegisterAccess = "RO" | "RW" | "WO" | "RW1C" | "mixed";

export interface VtdRegister {
  /** The spec's register name without the `_REG` suffix. */
  readonly name: string;
  /** Byte offset in the register page; undefined for registers whose place a capability gives (IVA, IOTLB, FRCD). */
  readonly offset: number | undefined;
  /** Width in bits (32 or 64; FRCD is 128). */
  readonly width: 32 | 64 | 128;
  readonly access: RegisterAccess;
  readonly description: string;
}

/** Fixed-offset registers, in address order. */
export const vtdRegisterMap: readonly VtdRegister[] = [
  { name: "VER", offset: 0x000, width: 32, access: "RO", description: "Architecture version (major [7:4], minor [3:0])" },
  { name: "CAP", offset: 0x008, width: 64, access: "RO", description: "Capabilities (cap.ts)" },
  { name: "ECAP", offset: 0x010, width: 64, access: "RO", description: "Extended capabilities (ecap.ts)" },
  { name: "GCMD", offset: 0x018, width: 32, access: "WO", description: "Global command" },
  { name: "GSTS", offset: 0x01c, width: 32, access: "RO", description: "Global status" },
  { name: "RTADDR", offset: 0x020, width: 64, access: "RW", description: "Root table address and translation table mode" },
  { name: "CCMD", offset: 0x028, width: 64, access: "mixed", description: "Context command (register-based context-cache invalidation)" },
  { name: "FSTS", offset: 0x034, width: 32, access: "mixed", description: "Fault status" },
  { name: "FECTL", offset: 0x038, width: 32, access: "mixed", description: "Fault event control" },
  { name: "FEDATA", offset: 0x03c, width: 32, access: "RW", description: "Fault event interrupt data" },
  { name: "FEADDR", offset: 0x040, width: 32, access: "RW", description: "Fault event interrupt address" },
  { name: "FEUADDR", offset: 0x044, width: 32, access: "RW", description: "Fault event interrupt upper address" },
  { name: "AFLOG", offset: 0x058, width: 64, access: "RW", description: "Advanced fault log" },
  { name: "PMEN", offset: 0x064, width: 32, access: "mixed", description: "Protected memory enable" },
  { name: "PLMBASE", offset: 0x068, width: 32, access: "RW", description: "Protected low-memory base" },
  { name: "PLMLIMIT", offset: 0x06c, width: 32, access: "RW", description: "Protected low-memory limit" },
  { name: "PHMBASE", offset: 0x070, width: 64, access: "RW", description: "Protected high-memory base" },
  { name: "PHMLIMIT", offset: 0x078, width: 64, access: "RW", description: "Protected high-memory limit" },
  { name: "IQH", offset: 0x080, width: 64, access: "RO", description: "Invalidation queue head" },
  { name: "IQT", offset: 0x088, width: 64, access: "RW", description: "Invalidation queue tail" },
  { name: "IQA", offset: 0x090, width: 64, access: "RW", description: "Invalidation queue address, descriptor width and size" },
  { name: "ICS", offset: 0x09c, width: 32, access: "RW1C", description: "Invalidation completion status" },
  { name: "IECTL", offset: 0x0a0, width: 32, access: "mixed", description: "Invalidation completion event control" },
  { name: "IEDATA", offset: 0x0a4, width: 32, access: "RW", description: "Invalidation completion event data" },
  { name: "IEADDR", offset: 0x0a8, width: 32, access: "RW", description: "Invalidation completion event address" },
  { name: "IEUADDR", offset: 0x0ac, width: 32, access: "RW", description: "Invalidation completion event upper address" },
  { name: "IQERCD", offset: 0x0b0, width: 64, access: "RO", description: "Invalidation queue error record" },
  { name: "IRTA", offset: 0x0b8, width: 64, access: "RW", description: "Interrupt remapping table address" },
  { name: "PQH", offset: 0x0c0, width: 64, access: "RW", description: "Page request queue head" },
  { name: "PQT", offset: 0x0c8, width: 64, access: "RW", description: "Page request queue tail" },
  { name: "PQA", offset: 0x0d0, width: 64, access: "RW", description: "Page request queue address" },
  { name: "PRS", offset: 0x0dc, width: 32, access: "RW1C", description: "Page request status" },
  { name: "PECTL", offset: 0x0e0, width: 32, access: "mixed", description: "Page request event control" },
  { name: "PEDATA", offset: 0x0e4, width: 32, access: "RW", description: "Page request event data" },
  { name: "PEADDR", offset: 0x0e8, width: 32, access: "RW", description: "Page request event address" },
  { name: "PEUADDR", offset: 0x0ec, width: 32, access: "RW", description: "Page request event upper address" },
  { name: "MTRRCAP", offset: 0x100, width: 64, access: "RO", description: "MTRR capability" },
  { name: "MTRRDEF", offset: 0x108, width: 64, access: "RW", description: "MTRR default type" },
  { name: "MTRR_FIX64K_00000", offset: 0x120, width: 64, access: "RW", description: "Fixed-range MTRR" },
  { name: "MTRR_FIX16K_80000", offset: 0x128, width: 64, access: "RW", description: "Fixed-range MTRR" },
  { name: "MTRR_FIX16K_A0000", offset: 0x130, width: 64, access: "RW", description: "Fixed-range MTRR" },
  ...["C0000", "C8000", "D0000", "D8000", "E0000", "E8000", "F0000", "F8000"].map(
    (at, i): VtdRegister => ({ name: `MTRR_FIX4K_${at}`, offset: 0x138 + 8 * i, width: 64, access: "RW", description: "Fixed-range MTRR" }),
  ),
  ...Array.from({ length: 10 }, (_, n): VtdRegister[] => [
    { name: `MTRR_PHYSBASE${n}`, offset: 0x180 + 16 * n, width: 64, access: "RW", description: "Variable-range MTRR base" },
    { name: `MTRR_PHYSMASK${n}`, offset: 0x188 + 16 * n, width: 64, access: "RW", description: "Variable-range MTRR mask" },
  ]).flat(),
  { name: "PERFCAP", offset: 0x300, width: 64, access: "RO", description: "Performance monitoring capability" },
  { name: "PERFCFGOFF", offset: 0x310, width: 64, access: "RO", description: "Perfmon counter configuration offset" },
  { name: "PERFOVFOFF", offset: 0x318, width: 32, access: "RO", description: "Perfmon overflow status offset" },
  { name: "PERFCNTROFF", offset: 0x31c, width: 32, access: "RO", description: "Perfmon counter offset" },
  { name: "PERFINTRSTS", offset: 0x324, width: 32, access: "RW1C", description: "Perfmon interrupt status" },
  { name: "PERFINTRCTL", offset: 0x328, width: 32, access: "RW", description: "Perfmon interrupt control" },
  { name: "PERFEVNTCAP", offset: 0x380, width: 64, access: "RO", description: "Perfmon event capability" },
  { name: "ECMD", offset: 0x400, width: 64, access: "RW", description: "Enhanced command" },
  { name: "ECEO", offset: 0x408, width: 64, access: "RW", description: "Enhanced command extended operand" },
  { name: "ECRSP", offset: 0x410, width: 64, access: "RO", description: "Enhanced command response" },
  { name: "ECCAP", offset: 0x430, width: 64, access: "RO", description: "Enhanced command capability" },
  { name: "VCMD", offset: 0xe00, width: 64, access: "RW", description: "Virtual command" },
  { name: "VCRSP", offset: 0xe10, width: 64, access: "RO", description: "Virtual command response" },
  { name: "VCCAP", offset: 0xe30, width: 64, access: "RO", description: "Virtual command capability" },
];

/** Registers placed by a capability field: IVA/IOTLB at ECAP.IRO × 16, FRCD[n] at CAP.FRO × 16 + 16n. */
export const vtdCapabilityPlacedRegisters: readonly VtdRegister[] = [
  { name: "IVA", offset: undefined, width: 64, access: "WO", description: "Invalidate address (at ECAP.IRO × 16)" },
  { name: "IOTLB", offset: undefined, width: 64, access: "mixed", description: "IOTLB invalidate (at ECAP.IRO × 16 + 8)" },
  { name: "FRCD", offset: undefined, width: 128, access: "mixed", description: "Fault recording (at CAP.FRO × 16 + 16n, n ≤ CAP.NFR)" },
];

/** The offset of a fixed-offset register, by the spec's name. */
export function registerOffset(name: string): number {
  const r = vtdRegisterMap.find((x) => x.name === name);
  if (r?.offset === undefined) throw new RangeError(`no fixed-offset VT-d register ${name}`);
  return r.offset;
}

/** The register at `offset`, if one starts there. */
export function registerAt(offset: number): VtdRegister | undefined {
  return vtdRegisterMap.find((r) => r.offset === offset);
}

export const verLayout = defineLayout("VER_REG", 32, [
  { name: "MIN", bit: 0, width: 4 },
  { name: "MAX", bit: 4, width: 4 },
] as const);

/** Global command: every bit is a command; software writes the current GSTS state with one bit changed. */
export const gcmdLayout = defineLayout("GCMD_REG", 32, [
  { name: "CFI", bit: 23, width: 1 },
  { name: "SIRTP", bit: 24, width: 1 },
  { name: "IRE", bit: 25, width: 1 },
  { name: "QIE", bit: 26, width: 1 },
  { name: "WBF", bit: 27, width: 1 },
  { name: "EAFL", bit: 28, width: 1 },
  { name: "SFL", bit: 29, width: 1 },
  { name: "SRTP", bit: 30, width: 1 },
  { name: "TE", bit: 31, width: 1 },
] as const);

export const gstsLayout = defineLayout("GSTS_REG", 32, [
  { name: "CFIS", bit: 23, width: 1 },
  { name: "IRTPS", bit: 24, width: 1 },
  { name: "IRES", bit: 25, width: 1 },
  { name: "QIES", bit: 26, width: 1 },
  { name: "WBFS", bit: 27, width: 1 },
  { name: "AFLS", bit: 28, width: 1 },
  { name: "FLS", bit: 29, width: 1 },
  { name: "RTPS", bit: 30, width: 1 },
  { name: "TES", bit: 31, width: 1 },
] as const);

/** RTADDR.TTM values (translation table mode). Linux names bit 10 alone `DMA_RTADDR_SMT`. */
export const TranslationTableMode = {
  LEGACY: 0,
  SCALABLE: 1,
  /** Reserved encoding: a root-table fetch faults (0x30). */
  RESERVED: 2,
  /** Abort-DMA mode (needs ECAP.ADMS): every DMA is blocked. */
  ABORT_DMA: 3,
} as const;

export const rtaddrLayout = defineLayout("RTADDR_REG", 64, [
  { name: "TTM", bit: 10, width: 2 },
  { name: "RTA", bit: 12, width: 52, shift: 12, big: true },
] as const);

/** CIRG/CAIG granularity encoding (CCMD). */
export const ContextInvalidationGranularity = { GLOBAL: 1, DOMAIN: 2, DEVICE: 3 } as const;

export const ccmdLayout = defineLayout("CCMD_REG", 64, [
  { name: "DID", bit: 0, width: 16 },
  { name: "SID", bit: 16, width: 16 },
  { name: "FM", bit: 32, width: 2 },
  { name: "CAIG", bit: 59, width: 2 },
  { name: "CIRG", bit: 61, width: 2 },
  { name: "ICC", bit: 63, width: 1 },
] as const);

/**
 * Fault status. PRO (bit 7) is Linux's name for page-request overflow; VT-d 3.x deprecates the bit (PRS.PRO
 * carries it). AFO and APF belong to advanced fault logging.
 */
export const fstsLayout = defineLayout("FSTS_REG", 32, [
  { name: "PFO", bit: 0, width: 1 },
  { name: "PPF", bit: 1, width: 1 },
  { name: "AFO", bit: 2, width: 1 },
  { name: "APF", bit: 3, width: 1 },
  { name: "IQE", bit: 4, width: 1 },
  { name: "ICE", bit: 5, width: 1 },
  { name: "ITE", bit: 6, width: 1 },
  { name: "PRO", bit: 7, width: 1 },
  { name: "FRI", bit: 8, width: 8 },
] as const);

/** Event control registers share one layout: IM masks the MSI (resets to 1), IP records a masked event. */
const eventControlFields = [
  { name: "IP", bit: 30, width: 1 },
  { name: "IM", bit: 31, width: 1 },
] as const;

/** Event data registers: IMD is the MSI data; EIMD (extended data, [31:16]) existed before VT-d 3.3 and is reserved since. */
const eventDataFields = [
  { name: "IMD", bit: 0, width: 16 },
  { name: "EIMD", bit: 16, width: 16 },
] as const;

/** Event address registers: the MSI address, dword aligned ([1:0] reserved). */
const eventAddressFields = [{ name: "MA", bit: 2, width: 30, shift: 2 }] as const;

/** Event upper address registers: MSI address bits [63:32] (meaningful with x2APIC). */
const eventUpperAddressFields = [{ name: "MUA", bit: 0, width: 32 }] as const;

function eventControlLayout(name: string): Layout<typeof eventControlFields> {
  return defineLayout(name, 32, eventControlFields);
}

function eventDataLayout(name: string): Layout<typeof eventDataFields> {
  return defineLayout(name, 32, eventDataFields);
}

function eventAddressLayout(name: string): Layout<typeof eventAddressFields> {
  return defineLayout(name, 32, eventAddressFields);
}

function eventUpperAddressLayout(name: string): Layout<typeof eventUpperAddressFields> {
  return defineLayout(name, 32, eventUpperAddressFields);
}

export const fectlLayout = eventControlLayout("FECTL_REG");
export const fedataLayout = eventDataLayout("FEDATA_REG");
export const feaddrLayout = eventAddressLayout("FEADDR_REG");
export const feuaddrLayout = eventUpperAddressLayout("FEUADDR_REG");
export const iectlLayout = eventControlLayout("IECTL_REG");
export const iedataLayout = eventDataLayout("IEDATA_REG");
export const ieaddrLayout = eventAddressLayout("IEADDR_REG");
export const ieuaddrLayout = eventUpperAddressLayout("IEUADDR_REG");
export const pectlLayout = eventControlLayout("PECTL_REG");
export const pedataLayout = eventDataLayout("PEDATA_REG");
export const peaddrLayout = eventAddressLayout("PEADDR_REG");
export const peuaddrLayout = eventUpperAddressLayout("PEUADDR_REG");

/** Advanced fault log: FLS (log is 2^FLS 4 KiB pages) and FLA (log base). */
export const aflogLayout = defineLayout("AFLOG_REG", 64, [
  { name: "FLS", bit: 9, width: 3 },
  { name: "FLA", bit: 12, width: 52, shift: 12, big: true },
] as const);

export const pmenLayout = defineLayout("PMEN_REG", 32, [
  { name: "PRS", bit: 0, width: 1 },
  { name: "EPM", bit: 31, width: 1 },
] as const);

/**
 * Invalidation queue head: QH [18:4] decodes to the byte offset of the next descriptor. With 256-bit
 * descriptors (IQA.DW = 1) the offset is a multiple of 32 and bit 4 stays 0.
 */
export const iqhLayout = defineLayout("IQH_REG", 64, [{ name: "QH", bit: 4, width: 15, shift: 4 }] as const);

/** Invalidation queue tail, same encoding as IQH. With IQA.DW = 1, bit 4 set is a queue error (IQE). */
export const iqtLayout = defineLayout("IQT_REG", 64, [{ name: "QT", bit: 4, width: 15, shift: 4 }] as const);

/** IQA.DW values. */
export const DescriptorWidth = { DW_128: 0, DW_256: 1 } as const;

export const iqaLayout = defineLayout("IQA_REG", 64, [
  /** Queue size: 2^QS 4 KiB pages. */
  { name: "QS", bit: 0, width: 3 },
  /** Descriptor width: 0 = 128-bit, 1 = 256-bit (needs ECAP.SMTS). */
  { name: "DW", bit: 11, width: 1 },
  { name: "IQA", bit: 12, width: 52, shift: 12, big: true },
] as const);

/** Number of descriptors in a queue of size QS and width DW. */
export function invalidationQueueEntries(qs: number, dw: number): number {
  return 2 ** (qs + (dw === DescriptorWidth.DW_256 ? 7 : 8));
}

/** Descriptor index from a QH/QT byte offset. */
export function invalidationQueueIndex(byteOffset: number, dw: number): number {
  return Math.floor(byteOffset / (dw === DescriptorWidth.DW_256 ? 32 : 16));
}

export const icsLayout = defineLayout("ICS_REG", 32, [{ name: "IWC", bit: 0, width: 1 }] as const);

/** IQERCD.IQEI values, as VirtualBox lists them from the spec. */
export const InvalidationQueueErrorInfo = {
  INFO_NOT_AVAILABLE: 0,
  INVALID_TAIL_PTR: 1,
  FETCH_DESCRIPTOR_ERR: 2,
  INVALID_DESCRIPTOR_TYPE: 3,
  RSVD_FIELD_VIOLATION: 4,
  INVALID_DESCRIPTOR_WIDTH: 5,
  QUEUE_TAIL_MISALIGNED: 6,
  INVALID_TTM: 7,
} as const;

export const iqercdLayout = defineLayout("IQERCD_REG", 64, [
  { name: "IQEI", bit: 0, width: 4 },
  { name: "ITESID", bit: 32, width: 16 },
  { name: "ICESID", bit: 48, width: 16 },
] as const);

export const irtaLayout = defineLayout("IRTA_REG", 64, [
  /** Table size: 2^(S+1) entries. */
  { name: "S", bit: 0, width: 4 },
  /** Extended interrupt mode enable: 32-bit x2APIC destination ids in IRTEs. */
  { name: "EIME", bit: 11, width: 1 },
  { name: "IRTA", bit: 12, width: 52, shift: 12, big: true },
] as const);

/** Number of IRTEs in a table of size S. */
export function irtEntries(s: number): number {
  return 2 ** (s + 1);
}

/** Page request queue head: byte offset of 32-byte descriptors ([4:0] zero). */
export const pqhLayout = defineLayout("PQH_REG", 64, [{ name: "PQH", bit: 5, width: 14, shift: 5 }] as const);
export const pqtLayout = defineLayout("PQT_REG", 64, [{ name: "PQT", bit: 5, width: 14, shift: 5 }] as const);

export const pqaLayout = defineLayout("PQA_REG", 64, [
  /** Queue size: 2^PQS 4 KiB pages. */
  { name: "PQS", bit: 0, width: 3 },
  { name: "PQA", bit: 12, width: 52, shift: 12, big: true },
] as const);

export const prsLayout = defineLayout("PRS_REG", 32, [
  { name: "PPR", bit: 0, width: 1 },
  { name: "PRO", bit: 1, width: 1 },
] as const);

/** IVA: the address half of a register-based page-selective IOTLB invalidation (at ECAP.IRO × 16). */
export const ivaLayout = defineLayout("IVA_REG", 64, [
  /** 2^AM 4 KiB pages, AM ≤ CAP.MAMV. */
  { name: "AM", bit: 0, width: 6 },
  /** Invalidation hint: only leaf entries changed. */
  { name: "IH", bit: 6, width: 1 },
  { name: "ADDR", bit: 12, width: 52, shift: 12, big: true },
] as const);

/** IIRG/IAIG granularity encoding (IOTLB_REG). */
export const IotlbInvalidationGranularity = { GLOBAL: 1, DOMAIN: 2, PAGE: 3 } as const;

/** IOTLB invalidate register (at ECAP.IRO × 16 + 8). */
export const iotlbRegLayout = defineLayout("IOTLB_REG", 64, [
  { name: "DID", bit: 32, width: 16 },
  { name: "DW", bit: 48, width: 1 },
  { name: "DR", bit: 49, width: 1 },
  { name: "IAIG", bit: 57, width: 2 },
  { name: "IIRG", bit: 60, width: 2 },
  { name: "IVT", bit: 63, width: 1 },
] as const);
