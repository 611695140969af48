import { defineLayout } from "@viommu/core";

/**
 * SMMU control and error registers (IHI0070 §6.3; spec arm-hyperv-virtio.md §1.3, §1.10): CR0/CR0ACK, CR1,
 * CR2, STATUSR, GBPA, IRQ_CTRL/IRQ_CTRLACK, GERROR/GERRORN and the MSI configuration triple
 * GERROR/EVTQ/PRIQ_IRQ_CFG0..2. CR0ACK and IRQ_CTRLACK share the layout of the register they acknowledge.
 */

export const cr0Layout = defineLayout("SMMU_CR0", 32, [
  { name: "SMMUEN", bit: 0, width: 1 },
  { name: "PRIQEN", bit: 1, width: 1 },
  { name: "EVTQEN", bit: 2, width: 1 },
  { name: "CMDQEN", bit: 3, width: 1 },
  { name: "ATSCHK", bit: 4, width: 1 },
  { name: "VMW", bit: 6, width: 3 },
] as const);

/** CR1 cacheability encodings (not TCR-style): 0 non-cacheable, 1 write-back, 2 write-through. */
export const Cr1Cache = { NC: 0, WB: 1, WT: 2 } as const;
/** Shareability encodings used by CR1, the IRQ_CFG2 registers, STE.S1CSH and friends. */
export const Shareability = { NSH: 0, OSH: 2, ISH: 3 } as const;

export const cr1Layout = defineLayout("SMMU_CR1", 32, [
  { name: "QUEUE_IC", bit: 0, width: 2 },
  { name: "QUEUE_OC", bit: 2, width: 2 },
  { name: "QUEUE_SH", bit: 4, width: 2 },
  { name: "TABLE_IC", bit: 6, width: 2 },
  { name: "TABLE_OC", bit: 8, width: 2 },
  { name: "TABLE_SH", bit: 10, width: 2 },
] as const);

export const cr2Layout = defineLayout("SMMU_CR2", 32, [
  { name: "E2H", bit: 0, width: 1 },
  { name: "RECINVSID", bit: 1, width: 1 },
  { name: "PTM", bit: 2, width: 1 },
] as const);

export const statusrLayout = defineLayout("SMMU_STATUSR", 32, [{ name: "DORMANT", bit: 0, width: 1 }] as const);

/**
 * GBPA: the attributes of bypassing traffic while SMMUEN = 0. A write takes effect only with UPDATE = 1, and
 * the SMMU clears UPDATE when it has.
 */
export const gbpaLayout = defineLayout("SMMU_GBPA", 32, [
  { name: "MemAttr", bit: 0, width: 4 },
  { name: "MTCFG", bit: 4, width: 1 },
  { name: "ALLOCCFG", bit: 8, width: 4 },
  { name: "SHCFG", bit: 12, width: 2 },
  { name: "PRIVCFG", bit: 16, width: 2 },
  { name: "INSTCFG", bit: 18, width: 2 },
  { name: "ABORT", bit: 20, width: 1 },
  { name: "UPDATE", bit: 31, width: 1 },
] as const);

export const irqCtrlLayout = defineLayout("SMMU_IRQ_CTRL", 32, [
  { name: "GERROR_IRQEN", bit: 0, width: 1 },
  { name: "PRIQ_IRQEN", bit: 1, width: 1 },
  { name: "EVTQ_IRQEN", bit: 2, width: 1 },
] as const);

export const gerrorLayout = defineLayout("SMMU_GERROR", 32, [
  { name: "CMDQ_ERR", bit: 0, width: 1 },
  { name: "EVTQ_ABT_ERR", bit: 2, width: 1 },
  { name: "PRIQ_ABT_ERR", bit: 3, width: 1 },
  { name: "MSI_CMDQ_ABT_ERR", bit: 4, width: 1 },
  { name: "MSI_EVTQ_ABT_ERR", bit: 5, width: 1 },
  { name: "MSI_PRIQ_ABT_ERR", bit: 6, width: 1 },
  { name: "MSI_GERROR_ABT_ERR", bit: 7, width: 1 },
  { name: "SFM_ERR", bit: 8, width: 1 },
] as const);

/** GERROR/GERRORN bits as masks, for the vmm's toggle arithmetic. */
export const GerrorBit = {
  CMDQ_ERR: 1 << 0,
  EVTQ_ABT_ERR: 1 << 2,
  PRIQ_ABT_ERR: 1 << 3,
  MSI_CMDQ_ABT_ERR: 1 << 4,
  MSI_EVTQ_ABT_ERR: 1 << 5,
  MSI_PRIQ_ABT_ERR: 1 << 6,
  MSI_GERROR_ABT_ERR: 1 << 7,
  SFM_ERR: 1 << 8,
} as const;

/** Every meaningful GERROR bit (Linux GERROR_ERR_MASK). */
export const GERROR_ERR_MASK = 0x1fd;

/** The errors currently active: a bit is active while GERROR and GERRORN differ in it. */
export function gerrorActive(gerror: number, gerrorn: number): number {
  return ((gerror ^ gerrorn) & GERROR_ERR_MASK) >>> 0;
}

/**
 * GERROR after raising the errors in `bits`: the SMMU toggles a bit only when that error is not already
 * active, so raising an active error again changes nothing.
 */
export function gerrorRaise(gerror: number, gerrorn: number, bits: number): number {
  const fresh = bits & GERROR_ERR_MASK & ~gerrorActive(gerror, gerrorn);
  return (gerror ^ fresh) >>> 0;
}

/** GERROR_IRQ_CFG0 / EVTQ_IRQ_CFG0 / PRIQ_IRQ_CFG0 (64-bit): the MSI target address. */
export const irqCfg0Layout = defineLayout("SMMU_IRQ_CFG0", 64, [{ name: "ADDR", bit: 2, width: 50, shift: 2 }] as const);

/** *_IRQ_CFG1: the MSI payload. */
export const irqCfg1Layout = defineLayout("SMMU_IRQ_CFG1", 32, [{ name: "DATA", bit: 0, width: 32 }] as const);

/** *_IRQ_CFG2: attributes of the MSI write. */
export const irqCfg2Layout = defineLayout("SMMU_IRQ_CFG2", 32, [
  { name: "MemAttr", bit: 0, width: 4 },
  { name: "SH", bit: 4, width: 2 },
] as const);

/** Memory-attribute values Linux writes into IRQ_CFG2.MemAttr and GBPA.MemAttr. */
export const SmmuMemAttr = { DeviceNGnRE: 0x1, NormalOuterInnerWB: 0xf } as const;
