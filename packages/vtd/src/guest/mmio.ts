import type { VirtualMachine } from "@viommu/core";

/** The driver's view of the unit's register page (Linux `readl`/`writel`/`dmar_readq`/`dmar_writeq`). */
export class RegisterWindow {
  constructor(
    private readonly vm: VirtualMachine,
    readonly base: number,
  ) {}

  read32(offset: number): number {
    return Number(this.vm.mmioRead(this.base + offset, 4));
  }

  write32(offset: number, value: number): void {
    this.vm.mmioWrite(this.base + offset, 4, BigInt(value >>> 0));
  }

  read64(offset: number): bigint {
    return this.vm.mmioRead(this.base + offset, 8);
  }

  write64(offset: number, value: bigint): void {
    this.vm.mmioWrite(this.base + offset, 8, value);
  }

  /** Polls a 32-bit register until `done` (Linux IOMMU_WAIT_OP); false after `tries` reads. */
  waitFor(offset: number, done: (value: number) => boolean, tries = 64): boolean {
    for (let i = 0; i < tries; i++) if (done(this.read32(offset))) return true;
    return false;
  }
}

/** Register offsets the driver uses (../shared/spec/x86.md A1). */
export const Reg = {
  VER: 0x00,
  CAP: 0x08,
  ECAP: 0x10,
  GCMD: 0x18,
  GSTS: 0x1c,
  RTADDR: 0x20,
  FSTS: 0x34,
  FECTL: 0x38,
  FEDATA: 0x3c,
  FEADDR: 0x40,
  FEUADDR: 0x44,
  IQH: 0x80,
  IQT: 0x88,
  IQA: 0x90,
  ICS: 0x9c,
  IQERCD: 0xb0,
  IRTA: 0xb8,
  PQH: 0xc0,
  PQT: 0xc8,
  PQA: 0xd0,
  PRS: 0xdc,
  PECTL: 0xe0,
  PEDATA: 0xe4,
  PEADDR: 0xe8,
  PEUADDR: 0xec,
} as const;

/** GCMD / GSTS bits (Linux DMA_GCMD_* / DMA_GSTS_*). */
export const Global = { CFI: 1 << 23, SIRTP: 1 << 24, IRE: 1 << 25, QIE: 1 << 26, SRTP: 1 << 30, TE: 1 << 31 } as const;
/** FSTS bits (Linux DMA_FSTS_*). */
export const FaultStatus = { PFO: 1 << 0, PPF: 1 << 1, IQE: 1 << 4, ICE: 1 << 5, ITE: 1 << 6, PRO: 1 << 7 } as const;
