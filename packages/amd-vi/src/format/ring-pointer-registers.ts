import { defineLayout } from "@viommu/core";

/**
 * Head and tail pointer registers of the rings (spec x86.md B1): a byte offset into the ring in [18:4]
 * for the 16-byte-entry rings (Linux MMIO_CMD_HEAD_MASK GENMASK(18, 4); QEMU AMDVI_MMIO_*_HEAD_MASK).
 * The GA log has 8-byte entries, so its pointers keep bit 3 too: [18:3], inferred from the ring size rule
 * (512 KiB at most) and Linux writing byte offsets in steps of GA_ENTRY_SIZE = 8; VirtualBox's
 * header comments give [15:3].
 *
 * Each field decodes to the byte offset itself (shift 4 / shift 3).
 */
export const commandBufferHeadLayout = defineLayout("CommandBufferHead", 64, [{ name: "CmdHdPtr", bit: 4, width: 15, shift: 4 }] as const);
export const commandBufferTailLayout = defineLayout("CommandBufferTail", 64, [{ name: "CmdTailPtr", bit: 4, width: 15, shift: 4 }] as const);
export const eventLogHeadLayout = defineLayout("EventLogHead", 64, [{ name: "EventHdPtr", bit: 4, width: 15, shift: 4 }] as const);
export const eventLogTailLayout = defineLayout("EventLogTail", 64, [{ name: "EventTailPtr", bit: 4, width: 15, shift: 4 }] as const);
export const pprLogHeadLayout = defineLayout("PprLogHead", 64, [{ name: "PPRHdPtr", bit: 4, width: 15, shift: 4 }] as const);
export const pprLogTailLayout = defineLayout("PprLogTail", 64, [{ name: "PPRTailPtr", bit: 4, width: 15, shift: 4 }] as const);
export const gaLogHeadLayout = defineLayout("GaLogHead", 64, [{ name: "GAHdPtr", bit: 3, width: 16, shift: 3 }] as const);
export const gaLogTailLayout = defineLayout("GaLogTail", 64, [{ name: "GATailPtr", bit: 3, width: 16, shift: 3 }] as const);

/** Mask of the writable pointer bits of a 16-byte-entry ring pointer register, on its low half. */
export const RING_POINTER_MASK_16 = 0x7fff0;
/** Same for the GA log's 8-byte entries. */
export const RING_POINTER_MASK_8 = 0x7fff8;

/** A pointer register's byte offset from its low half (no allocation; for the queue hot path). */
export function ringPointer(lo: number, entryBytes: 8 | 16): number {
  return (lo & (entryBytes === 16 ? RING_POINTER_MASK_16 : RING_POINTER_MASK_8)) >>> 0;
}

/** The byte offset after `pointer` in a ring of `ringBytes` (wraps to 0). */
export function ringAdvance(pointer: number, entryBytes: 8 | 16, ringBytes: number): number {
  return (pointer + entryBytes) % ringBytes;
}

/** Whether a ring written at `tail` and read at `head` is full: one more entry would make tail == head. */
export function ringFull(head: number, tail: number, entryBytes: 8 | 16, ringBytes: number): boolean {
  return ringAdvance(tail, entryBytes, ringBytes) === head;
}
