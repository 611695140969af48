import type { RecordProfile } from "@viommu/trace";

/**
 * How to record on the model so that QEMU 7.2 can replay. The devices are emulated (`dma: "emulated"`): their DMA
 * is translated by the emulated IOMMU itself, as QEMU translates edu's. The model runs in shadow (caching) mode,
 * the guest-visible unit QEMU emulates, with the table formats QEMU 7.2 walks, and RAM where the machine has it.
 * - VT-d: legacy mode with second-level tables (QEMU 7.2's scalable mode has no first-level tables).
 * - AMD-Vi: v1 (host) page tables, all QEMU 7.2's amd-iommu walks (the model's nested mode hides host
 *   translation, IVHD HATDis, so its driver would choose v2 tables, which QEMU 7.2 reads as pass-through).
 * - SMMUv3: stage 1, 4 KiB granule; a 2-level stream table (a linear table of 2^16 STEs is 130,000 operations
 *   of bring-up); RAM from 0x40000000 as on the virt machine.
 */
export function qemuRecordProfile(vendor: string): RecordProfile | undefined {
  const ramBytes = 2 ** 30;
  switch (vendor) {
    case "vtd":
      return { mode: "shadow", dma: "emulated", variant: "legacy", ramBase: 0, ramBytes };
    case "amd-vi":
      return { mode: "shadow", dma: "emulated", ramBase: 0, ramBytes };
    case "smmuv3":
      return { mode: "shadow", dma: "emulated", variant: "2level", ramBase: 0x4000_0000, ramBytes };
    default:
      return undefined;
  }
}
