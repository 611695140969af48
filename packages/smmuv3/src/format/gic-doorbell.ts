/**
 * Where the SMMU's MSIs land on the modelled arm64 platform: the GICv3 redistributors of QEMU's `virt` machine
 * (VIRT_GIC_REDIST at 0x080A0000, one 128 KiB RD_base + SGI_base pair per CPU). An MSI written to a CPU's
 * GICR_SETLPIR (RD_base + 0x40, GICv3 direct LPI injection) makes its data the INTID pending on that CPU.
 * This is how the model turns an SMMU MSI (EVTQ_IRQ_CFG0/1, GERROR_IRQ_CFG0/1, a CMD_SYNC MSI) into an
 * interrupt with a destination; the ITS, which Linux normally targets, is not modelled.
 */
export const GICR_REGION_BASE = 0x080a_0000;
/** QEMU's first redistributor region: room for 123 CPUs. */
export const GICR_REGION_BYTES = 0x00f6_0000;
export const GICR_FRAME_STRIDE = 0x2_0000;
/** GICR_SETLPIR within RD_base. */
export const GICR_SETLPIR = 0x40;

/** The SETLPIR doorbell of `cpu`. */
export function gicrSetlpirAddress(cpu: number): number {
  return GICR_REGION_BASE + cpu * GICR_FRAME_STRIDE + GICR_SETLPIR;
}

/** The CPU whose SETLPIR doorbell `address` is, or undefined when it is no doorbell. */
export function gicrSetlpirCpu(address: number): number | undefined {
  const offset = address - GICR_REGION_BASE;
  if (!(offset >= 0 && offset < GICR_REGION_BYTES) || offset % GICR_FRAME_STRIDE !== GICR_SETLPIR) return undefined;
  return Math.floor(offset / GICR_FRAME_STRIDE);
}
