import { defineLayout } from "@viommu/core";

/**
 * The three circular queues (IHI0070 §3.5, §6.3; spec arm-hyperv-virtio.md §1.4, §1.9): base registers,
 * producer/consumer index registers with their wrap bit and error/overflow flags, and the index arithmetic.
 *
 * PROD/CONS hold an (n+1)-bit pointer for a queue of 2^n entries (n = LOG2SIZE): index in bits [n-1:0], wrap
 * flag in bit n. The architecture names the 20-bit field WR (PROD) and RD (CONS). The queue is empty when
 * both pointers are equal, full when the indexes are equal and the wrap flags differ.
 */

/** CMDQ_BASE: RA (read-allocate hint), ADDR, LOG2SIZE. */
export const cmdqBaseLayout = defineLayout("SMMU_CMDQ_BASE", 64, [
  { name: "LOG2SIZE", bit: 0, width: 5 },
  { name: "ADDR", bit: 5, width: 47, shift: 5 },
  { name: "RA", bit: 62, width: 1 },
] as const);

/** EVTQ_BASE and PRIQ_BASE: WA (write-allocate hint), ADDR, LOG2SIZE. */
export const eventqBaseLayout = defineLayout("SMMU_EVTQ_BASE", 64, [
  { name: "LOG2SIZE", bit: 0, width: 5 },
  { name: "ADDR", bit: 5, width: 47, shift: 5 },
  { name: "WA", bit: 62, width: 1 },
] as const);

export const priqBaseLayout = defineLayout("SMMU_PRIQ_BASE", 64, [
  { name: "LOG2SIZE", bit: 0, width: 5 },
  { name: "ADDR", bit: 5, width: 47, shift: 5 },
  { name: "WA", bit: 62, width: 1 },
] as const);

export const cmdqProdLayout = defineLayout("SMMU_CMDQ_PROD", 32, [{ name: "WR", bit: 0, width: 20 }] as const);

/** CMDQ_CONS.ERR holds the CERROR code of the command CONS stops at; it survives CONS advancing. */
export const cmdqConsLayout = defineLayout("SMMU_CMDQ_CONS", 32, [
  { name: "RD", bit: 0, width: 20 },
  { name: "ERR", bit: 24, width: 7 },
] as const);

/** EVTQ_PROD / PRIQ_PROD: OVFLG is toggled by the SMMU when it had to drop records (queue full). */
export const eventqProdLayout = defineLayout("SMMU_EVTQ_PROD", 32, [
  { name: "WR", bit: 0, width: 20 },
  { name: "OVFLG", bit: 31, width: 1 },
] as const);

/** EVTQ_CONS / PRIQ_CONS: software acknowledges an overflow by copying OVFLG into OVACKFLG. */
export const eventqConsLayout = defineLayout("SMMU_EVTQ_CONS", 32, [
  { name: "RD", bit: 0, width: 20 },
  { name: "OVACKFLG", bit: 31, width: 1 },
] as const);

export const priqProdLayout = defineLayout("SMMU_PRIQ_PROD", 32, [
  { name: "WR", bit: 0, width: 20 },
  { name: "OVFLG", bit: 31, width: 1 },
] as const);

export const priqConsLayout = defineLayout("SMMU_PRIQ_CONS", 32, [
  { name: "RD", bit: 0, width: 20 },
  { name: "OVACKFLG", bit: 31, width: 1 },
] as const);

/** Bit 31 of EVTQ/PRIQ PROD (OVFLG) and CONS (OVACKFLG). */
export const QUEUE_OVERFLOW_FLAG = 0x8000_0000;
/** CMDQ_CONS.ERR position. */
export const CMDQ_CONS_ERR_SHIFT = 24;
export const CMDQ_CONS_ERR_MASK = 0x7f << CMDQ_CONS_ERR_SHIFT;

/** Entry sizes in bytes. */
export const CMDQ_ENTRY_BYTES = 16;
export const EVTQ_ENTRY_BYTES = 32;
export const PRIQ_ENTRY_BYTES = 16;

/** CMDQ_CONS.ERR values (IHI0070 §4.8; spec §1.9). */
export const CmdqError = {
  CERROR_NONE: 0,
  CERROR_ILL: 1,
  CERROR_ABT: 2,
  CERROR_ATC_INV_SYNC: 3,
} as const;
export type CmdqError = (typeof CmdqError)[keyof typeof CmdqError];

const CERROR_NAMES = ["CERROR_NONE", "CERROR_ILL", "CERROR_ABT", "CERROR_ATC_INV_SYNC"] as const;

/** The mnemonic of a CMDQ_CONS.ERR value, `UNKNOWN` for codes the architecture does not define. */
export function cmdqErrorName(code: number): string {
  return CERROR_NAMES[code] ?? "UNKNOWN";
}

/*
 * Pointer arithmetic. `log2size` is the effective queue size (LOG2SIZE capped at IDR1.CMDQS/EVENTQS/PRIQS,
 * which the architecture bounds at 19): with it at most 30, every value below is an exact 32-bit quantity.
 * These run per command/event, so they are plain number arithmetic.
 */

/** 2^n − 1 as an unsigned 32-bit value, for n in 0..32. */
function lowMask(n: number): number {
  return n >= 32 ? 0xffffffff : ((1 << n) >>> 0) - 1;
}

/** LOG2SIZE as the SMMU uses it: capped at the IDR1 maximum for that queue. */
export function effectiveLog2Size(log2size: number, idrMax: number): number {
  return Math.min(log2size, idrMax);
}

/** The index part [n-1:0] of a PROD/CONS value. */
export function queueIndex(pointer: number, log2size: number): number {
  return (pointer & lowMask(log2size)) >>> 0;
}

/** The wrap flag (bit n) of a PROD/CONS value, 0 or 1. */
export function queueWrap(pointer: number, log2size: number): number {
  return log2size >= 32 ? 0 : (pointer >>> log2size) & 1;
}

/** The (n+1)-bit pointer for an index and wrap flag. */
export function queuePointer(index: number, wrap: number, log2size: number): number {
  return ((index & lowMask(log2size)) + (wrap & 1) * 2 ** log2size) >>> 0;
}

/**
 * `register` advanced by `count` entries: the (n+1)-bit {wrap, index} value is incremented modulo 2^(n+1), and
 * every bit above it (CMDQ_CONS.ERR, OVFLG/OVACKFLG) is kept, as the architecture requires.
 */
export function queueAdvance(register: number, log2size: number, count = 1): number {
  const mask = lowMask(log2size + 1);
  const pointer = (register & mask) >>> 0;
  const advanced = (pointer + count) % (mask + 1);
  return ((register & ~mask) >>> 0) + advanced;
}

/** Whether the queue holds no entries. */
export function queueEmpty(prod: number, cons: number, log2size: number): boolean {
  const mask = lowMask(log2size + 1);
  return (prod & mask) === (cons & mask);
}

/** Whether the queue has no free slot. */
export function queueFull(prod: number, cons: number, log2size: number): boolean {
  return queueIndex(prod, log2size) === queueIndex(cons, log2size) && queueWrap(prod, log2size) !== queueWrap(cons, log2size);
}

/** Entries between CONS and PROD (0..2^n). */
export function queueUsed(prod: number, cons: number, log2size: number): number {
  const mask = lowMask(log2size + 1);
  return ((prod & mask) - (cons & mask) + (mask + 1)) % (mask + 1);
}

/** Free slots (2^n − used). */
export function queueFree(prod: number, cons: number, log2size: number): number {
  return 2 ** log2size - queueUsed(prod, cons, log2size);
}

/**
 * The address of the queue's first entry: ADDR aligned down to the queue's size in bytes, or 32 bytes,
 * whichever is larger (the SMMU ignores the low ADDR bits). `addr` is the decoded ADDR field.
 */
export function queueBaseAddress(addr: number, log2size: number, entryBytes: number): number {
  const bytes = Math.max(2 ** log2size * entryBytes, 32);
  return addr - (addr % bytes);
}
