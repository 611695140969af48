/**
 * The SMMUv3 MMIO register map (IHI0070 §6; spec arm-hyperv-virtio.md §1.1): two 64 KiB pages, page 1 at
 * +0x10000 holding the producer/consumer indexes software polls (EVTQ and PRIQ PROD/CONS). Offsets here are
 * from the start of page 0, so a page-1 register's offset includes the 0x10000.
 */

/** Byte offset of register page 1 from the SMMU base. */
export const SMMU_PAGE1_OFFSET = 0x10000;
/** Size of each register page. */
export const SMMU_PAGE_BYTES = 0x10000;

export type RegisterAccess = "RO" | "RW";

export interface RegisterInfo {
  /** The architecture's name without the `SMMU_` prefix, e.g. `CMDQ_PROD`. */
  readonly name: string;
  /** Byte offset from the SMMU base (page 1 registers include SMMU_PAGE1_OFFSET). */
  readonly offset: number;
  readonly width: 32 | 64;
  readonly page: 0 | 1;
  /** As seen by software: RO registers ignore writes. */
  readonly access: RegisterAccess;
}

function reg(name: string, offset: number, width: 32 | 64, access: RegisterAccess): RegisterInfo {
  return { name, offset, width, page: offset >= SMMU_PAGE1_OFFSET ? 1 : 0, access };
}

/** Every register the format layer describes, in offset order. */
export const smmuRegisterMap: readonly RegisterInfo[] = [
  reg("IDR0", 0x000, 32, "RO"),
  reg("IDR1", 0x004, 32, "RO"),
  reg("IDR2", 0x008, 32, "RO"),
  reg("IDR3", 0x00c, 32, "RO"),
  reg("IDR4", 0x010, 32, "RO"),
  reg("IDR5", 0x014, 32, "RO"),
  reg("IIDR", 0x018, 32, "RO"),
  reg("AIDR", 0x01c, 32, "RO"),
  reg("CR0", 0x020, 32, "RW"),
  reg("CR0ACK", 0x024, 32, "RO"),
  reg("CR1", 0x028, 32, "RW"),
  reg("CR2", 0x02c, 32, "RW"),
  reg("STATUSR", 0x040, 32, "RO"),
  reg("GBPA", 0x044, 32, "RW"),
  reg("AGBPA", 0x048, 32, "RW"),
  reg("IRQ_CTRL", 0x050, 32, "RW"),
  reg("IRQ_CTRLACK", 0x054, 32, "RO"),
  reg("GERROR", 0x060, 32, "RO"),
  reg("GERRORN", 0x064, 32, "RW"),
  reg("GERROR_IRQ_CFG0", 0x068, 64, "RW"),
  reg("GERROR_IRQ_CFG1", 0x070, 32, "RW"),
  reg("GERROR_IRQ_CFG2", 0x074, 32, "RW"),
  reg("STRTAB_BASE", 0x080, 64, "RW"),
  reg("STRTAB_BASE_CFG", 0x088, 32, "RW"),
  reg("CMDQ_BASE", 0x090, 64, "RW"),
  reg("CMDQ_PROD", 0x098, 32, "RW"),
  reg("CMDQ_CONS", 0x09c, 32, "RW"),
  reg("EVTQ_BASE", 0x0a0, 64, "RW"),
  reg("EVTQ_IRQ_CFG0", 0x0b0, 64, "RW"),
  reg("EVTQ_IRQ_CFG1", 0x0b8, 32, "RW"),
  reg("EVTQ_IRQ_CFG2", 0x0bc, 32, "RW"),
  reg("PRIQ_BASE", 0x0c0, 64, "RW"),
  reg("PRIQ_IRQ_CFG0", 0x0d0, 64, "RW"),
  reg("PRIQ_IRQ_CFG1", 0x0d8, 32, "RW"),
  reg("PRIQ_IRQ_CFG2", 0x0dc, 32, "RW"),
  reg("EVTQ_PROD", 0x100a8, 32, "RW"),
  reg("EVTQ_CONS", 0x100ac, 32, "RW"),
  reg("PRIQ_PROD", 0x100c8, 32, "RW"),
  reg("PRIQ_CONS", 0x100cc, 32, "RW"),
];

const byName = new Map(smmuRegisterMap.map((r) => [r.name, r]));
const byOffset = new Map(smmuRegisterMap.map((r) => [r.offset, r]));

/** The register called `name` (without `SMMU_`), or undefined. */
export function registerByName(name: string): RegisterInfo | undefined {
  return byName.get(name);
}

/**
 * The register whose first byte is at `offset`, or undefined. A 64-bit register's upper half (offset + 4) is
 * not a register of its own: callers accessing 32-bit halves look up `offset & ~7`.
 *
 * `page0Only` models implementations that alias the page-1 registers onto page 0 at the same low offsets
 * (IORT model Cavium CN99xx; Linux option PAGE0_REGS_ONLY): there 0xA8 is EVTQ_PROD.
 */
export function registerAt(offset: number, page0Only = false): RegisterInfo | undefined {
  const direct = byOffset.get(offset);
  if (direct !== undefined) return direct;
  if (page0Only && offset < SMMU_PAGE1_OFFSET) return byOffset.get(offset + SMMU_PAGE1_OFFSET);
  return undefined;
}
