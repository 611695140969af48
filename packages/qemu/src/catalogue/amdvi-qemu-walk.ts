import type { DivergenceContext, Trace } from "@viommu/trace";
import { dword, lastRegisterWrite, memoryAnswers, traceBytes } from "./matchers.js";

/**
 * QEMU 7.2's AMD-Vi page walk, as hw/i386/amd_iommu.c amdvi_page_walk() does it, over the guest memory a trace
 * wrote: the DTE and every PDE it descends through must be present and allow the access; the entry it stops at
 * (Next Level 0 or 7) is taken as the leaf whatever its present bit and reserved bits say, only an all-zero
 * entry ends the walk; a Next Level 7 leaf's page size comes from the first zero address bit from bit 12, any
 * other leaf's from the level it was found at. The memory core then moves the whole part of an access inside that
 * page with the one translation, and refuses a write the leaf's IW does not allow.
 */
export interface QemuAmdLeaf {
  /** The leaf entry's address and its two dwords. */
  readonly entryAddress: number;
  /** The level of the table it was found in (1: each slot maps 4 KiB). */
  readonly tableLevel: number;
  readonly lo: number;
  readonly hi: number;
  /** The page the leaf maps: input base, output base, size. */
  readonly iovaBase: number;
  readonly outputBase: number;
  readonly size: number;
  readonly writable: boolean;
}

const ENTRY_PRESENT = 1;
/** IR and IW: bits 61 and 62, in the high dword. */
const HI_IR = 1 << 29;
const HI_IW = 1 << 30;

function address(lo: number, hi: number): number {
  return ((lo & 0xffff_f000) >>> 0) + (hi & 0xf_ffff) * 2 ** 32;
}

function nextLevel(lo: number): number {
  return (lo >>> 9) & 7;
}

function read(trace: Trace, end: number, at: number): { lo: number; hi: number } {
  const b = traceBytes(trace, end, at, 8);
  return { lo: dword(b, 0), hi: dword(b, 1) };
}

/** The device table's base (MMIO 0x0000 bits 51:12; reset 0) before operation `end`. */
function deviceTableBase(trace: Trace, end: number): number {
  const v = lastRegisterWrite({ trace, index: end } as DivergenceContext, "amd-vi", 0x00) ?? 0n;
  return Number(v & 0x000f_ffff_ffff_f000n);
}

/** The leaf QEMU's walk reaches for a request of `rid` at `iova` before operation `end`, or undefined where it ends without one. */
export function qemuAmdLeaf(trace: Trace, end: number, rid: number, iova: number, write: boolean): QemuAmdLeaf | undefined {
  const dte = read(trace, end, deviceTableBase(trace, end) + rid * 32);
  // TV (bit 1) clear or Mode 0: no walk (passthrough or blocked, not this module's business); Mode 7 is refused.
  let level = nextLevel(dte.lo);
  if ((dte.lo & 2) === 0 || level === 0 || level >= 7) return undefined;
  let entry = dte;
  let entryAddress = -1;
  let oldLevel = level;
  const need = write ? HI_IW : HI_IR;
  for (let steps = 0; ; steps++) {
    if ((entry.lo & ENTRY_PRESENT) === 0 || (entry.hi & need) === 0) return undefined;
    // A PDE whose Next Level does not descend makes QEMU 7.2 loop (amdvi-page-walk-next-level-not-lower-hangs).
    if (steps >= 6) return undefined;
    const shift = 12 + 9 * (level - 1);
    entryAddress = address(entry.lo, entry.hi) + (Math.floor(iova / 2 ** shift) % 512) * 8;
    entry = read(trace, end, entryAddress);
    if (entry.lo === 0 && entry.hi === 0) return undefined;
    oldLevel = level;
    level = nextLevel(entry.lo);
    if (level === 0 || level === 7) break;
  }
  let size: number;
  if (level === 7) {
    let ones = 0;
    for (let a = Math.floor(address(entry.lo, entry.hi) / 4096); a % 2 === 1 && ones < 40; a = Math.floor(a / 2)) ones++;
    size = 2 ** (13 + ones);
  } else size = 2 ** (12 + 9 * (oldLevel - 1));
  const iovaBase = iova - (iova % size);
  const out = address(entry.lo, entry.hi);
  return { entryAddress, tableLevel: oldLevel, lo: entry.lo, hi: entry.hi, iovaBase, outputBase: out - (out % size), size, writable: (entry.hi & HI_IW) !== 0 };
}

/** A part of a DMA write QEMU carried out through one leaf. */
export interface QemuLandedChunk {
  readonly iova: number;
  readonly length: number;
  readonly leaf: QemuAmdLeaf;
}

/**
 * A DMA write the model blocked whose bytes QEMU's answer to the divergent memory read shows where QEMU's walk put
 * them: every differing byte is one of the write's, at the address QEMU's leaf gives it, and every other byte is as
 * the model expected. The chunks QEMU wrote through, or undefined.
 */
export function amdBlockedWriteLandedInQemu(c: DivergenceContext): QemuLandedChunk[] | undefined {
  const mem = memoryAnswers(c);
  if (mem === undefined) return undefined;
  for (let i = c.index - 1; i >= Math.max(0, c.index - 64); i--) {
    const op = c.trace.ops[i]!;
    if (op.op !== "dma" || op.dir !== "write" || op.expect?.ok !== false) continue;
    const chunks: QemuLandedChunk[] = [];
    const end = op.iova + op.data.length;
    for (let a = op.iova; a < end; ) {
      const leaf = qemuAmdLeaf(c.trace, i, op.rid, a, true);
      if (leaf === undefined || !leaf.writable) break;
      const length = Math.min(end, leaf.iovaBase + leaf.size) - a;
      chunks.push({ iova: a, length, leaf });
      a += length;
    }
    if (chunks.length === 0) continue;
    let landed = false;
    let consistent = true;
    for (let k = 0; k < mem.actual.length && consistent; k++) {
      const pa = mem.addr + k;
      const chunk = chunks.find((ch) => pa >= ch.leaf.outputBase + (ch.iova - ch.leaf.iovaBase) && pa < ch.leaf.outputBase + (ch.iova - ch.leaf.iovaBase) + ch.length);
      if (chunk === undefined) {
        consistent = mem.actual[k] === mem.expected[k];
        continue;
      }
      const byte = op.data[chunk.iova - op.iova + (pa - (chunk.leaf.outputBase + (chunk.iova - chunk.leaf.iovaBase)))];
      consistent = mem.actual[k] === byte;
      if (mem.actual[k] !== mem.expected[k]) landed = true;
    }
    if (landed && consistent) return chunks;
  }
  return undefined;
}

/** Reserved bits of a PTE ([58:52], bits 20 to 26 of the high dword). */
export const PTE_RESERVED_HI = 0x07f0_0000;

/**
 * Whether the leaf's page covers 4 KiB pages of the access whose own slot in the leaf's table holds another entry
 * (software did not replicate a Next Level 7 entry over the slots its page spans): the model walks each 4 KiB page
 * through its own slot.
 */
export function chunkSpansUnreplicatedSlot(trace: Trace, end: number, chunk: QemuLandedChunk): boolean {
  const slotSize = 2 ** (12 + 9 * (chunk.leaf.tableLevel - 1));
  const table = chunk.leaf.entryAddress - (chunk.leaf.entryAddress % 4096);
  for (let a = chunk.iova - (chunk.iova % slotSize); a < chunk.iova + chunk.length; a += slotSize) {
    const slot = table + (Math.floor(a / slotSize) % 512) * 8;
    if (slot === chunk.leaf.entryAddress) continue;
    const e = read(trace, end, slot);
    if (e.lo !== chunk.leaf.lo || e.hi !== chunk.leaf.hi) return true;
  }
  return false;
}
