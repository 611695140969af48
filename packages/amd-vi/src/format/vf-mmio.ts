import type { RawBits, Result } from "@viommu/core";
import { MmioOffset } from "./mmio-register-map.js";

/**
 * The hardware vIOMMU's per-guest VF-MMIO page (spec iommufd.md §8.2; AMDESE viommu.c
 * amd_viommu_get_vfmmio_addr: "mapped to guest vIOMMU 3rd 4K MMIO address"). The VMM mmaps it from the
 * iommufd and maps it over the guest's register block at 0x2000, so the ring pointers and Status live in
 * hardware: a guest tail write reaches the IOMMU without a VM exit. Offsets inside the page are the guest
 * register offsets minus 0x2000.
 */
export const VF_MMIO_GUEST_OFFSET = 0x2000;
export const VF_MMIO_BYTES = 0x1000;

export const VfMmioOffset = {
  CommandBufferHead: MmioOffset.CommandBufferHead - VF_MMIO_GUEST_OFFSET,
  CommandBufferTail: MmioOffset.CommandBufferTail - VF_MMIO_GUEST_OFFSET,
  EventLogHead: MmioOffset.EventLogHead - VF_MMIO_GUEST_OFFSET,
  EventLogTail: MmioOffset.EventLogTail - VF_MMIO_GUEST_OFFSET,
  Status: MmioOffset.Status - VF_MMIO_GUEST_OFFSET,
  PprLogHead: MmioOffset.PprLogHead - VF_MMIO_GUEST_OFFSET,
  PprLogTail: MmioOffset.PprLogTail - VF_MMIO_GUEST_OFFSET,
} as const;

/** Which guest ring a HW queue carries. */
export type AmdHwQueueKind = "command" | "event" | "ppr";

/**
 * The hardware vIOMMU's driver interface beyond core's `ViommuOps` (model's shape of what AMD's out-of-tree
 * tree adds; spec iommufd.md §8.2):
 * - `hwQueueInit`: IOMMU_HW_QUEUE_ALLOC in AMD's "guest base_addr" form (include/linux/iommufd.h: "AMD's HW
 *   will add hw_queue_init simply using @base_addr"). The queue is named by its guest physical address and
 *   length code, read and written through stage 2: nothing is pinned and nothing needs to be contiguous.
 *   Core's `hwQueueAlloc` only offers the pinned, contiguous `hw_queue_init_phys` form, so the VMM reaches
 *   this op through its vIOMMU object.
 * - `setGuestRegister`: the trapped guest registers the hardware needs (Control, the XT interrupt control
 *   registers), AMD's QEMU branch's VIOMMU_MMIO_ACCESS / the proposed set_option.
 * - `resumeCommands`: restarts the guest command buffer after a command the hardware handed to the hypervisor.
 * - `commandsHalted` / `setCommandsHalted`: the command processor's error stop, which a migrating hypervisor
 *   saves and restores with the VF-MMIO registers (the ring pointers alone would let it run again).
 * - `insertGuestEvent`: INSERT_GUEST_EVENT, the hypervisor logging an event into the guest's own log.
 * - `insertPageRequest`: the same for the guest's PPR log (model's choice: a page request a passthrough device
 *   raised reaches the VMM through the HWPT's fault queue, and the VMM logs it where the guest reads it).
 * - `setInterruptPost`: where the hardware posts the guest's IOMMU interrupts (KVM's posted delivery,
 *   amd_viommu_set_ext_int_remap_entry).
 */
export interface AmdHwViommuOps {
  readonly guestId: number;
  hwQueueInit(kind: AmdHwQueueKind, baseGpa: number, lengthCode: number): Result<void>;
  hwQueueDestroy(kind: AmdHwQueueKind): void;
  setGuestRegister(offset: number, value: bigint): Result<void>;
  resumeCommands(): void;
  /** Whether the command processor stopped on an error (CmdBufRun clear until CmdBufEn is toggled). */
  commandsHalted(): boolean;
  /** Restores that stop (migration): the processor stays stopped at the head it was restored with. */
  setCommandsHalted(halted: boolean): void;
  insertGuestEvent(record: RawBits): Result<void>;
  insertPageRequest(record: RawBits): Result<void>;
  setInterruptPost(post: ((vector: number, destination: number) => void) | undefined): void;
}

/** Whether a vIOMMU's ops object is a hardware vIOMMU (a type-3 vIOMMU allocated with `iommu_viommu_amd`). */
export function isAmdHwViommu(ops: unknown): ops is AmdHwViommuOps {
  const o = ops as Partial<AmdHwViommuOps> | undefined;
  return o !== undefined && o !== null && typeof o.hwQueueInit === "function" && typeof o.guestId === "number" && o.guestId > 0;
}
