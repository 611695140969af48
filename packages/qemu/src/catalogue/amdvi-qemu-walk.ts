import type { DivergenceContext, Trace } from "@viommu/trace";
import { dword, memoryAnswers, registerValue, traceBytes } from "./matchers.js";

/**
 * QEMU 7.2's AMD-Vi page walk (hw/i386/amd_iommu.c amdvi_page_walk()) over the guest memory a trace wrote, so the
 * catalogue can say where QEMU put a transfer the model refused, or that QEMU never finishes the walk:
 * - the DTE (V and TV set, Mode 1 to 6) and every PDE the walk descends through must be present and allow the
 *   access (IR bit 61, IW bit 62); the next table is indexed with (iova >> (3 + 9 level)) & 0x1FF;
 * - each entry's Next Level (bits 11:9) becomes the level without having to be lower, so an entry that does not
 *   descend loops for ever (`while (level > 0 && level < 7)`);
 * - the entry the loop stops at (Next Level 0 or 7) is the leaf whatever its present and reserved bits say; only
 *   an all-zero entry, or one outside RAM, ends the walk without a translation;
 * - a Next Level 7 leaf's page size comes from the first zero address bit from bit 12 (pte_override_page_mask()),
 *   any other leaf's from the level it was found at; the memory core moves the whole part of an access inside that
 *   page with the one translation and refuses a write the leaf's IW does not allow.
 */
export interface QemuAmdLeaf {
  /** The leaf entry's address and its two dwords. */
  readonly entryAddress: number;
  /** The DTE's Mode: the levels, so input bits 12 + 9 Mode and up are beyond what it translates. */
  readonly dteMode: number;
  /** The level of the table it was found in (1: each slot maps 4 KiB). */
  readonly tableLevel: number;
  readonly lo: number;
  readonly hi: number;
  /** The page the leaf maps: input base, output base, size. */
  readonly iovaBase: number;
  readonly outputBase: number;
  readonly size: number;
  readonly writable: boolean;
  /** Every entry read below the DTE, the leaf last, each with the level of the table it was read from. */
  readonly path: readonly QemuAmdEntry[];
}

export interface QemuAmdEntry {
  readonly address: number;
  readonly tableLevel: number;
  readonly lo: number;
  readonly hi: number;
}

export type QemuAmdWalk = { readonly kind: "leaf"; readonly leaf: QemuAmdLeaf } | { readonly kind: "loops" } | { readonly kind: "none" };

/** AMD-Vi MMIO offsets (pub. 48882 MMIO register map): Device Table Base Address, Control. */
const DEV_TABLE_BASE = 0x00;
const CONTROL = 0x18;
/** IR and IW: bits 61 and 62, in the high dword. */
const HI_IR = 1 << 29;
const HI_IW = 1 << 30;
/** Levels descended before the walk counts as a loop: a walk that ends has at most six. */
const LOOP_LEVELS = 64;
const NONE: QemuAmdWalk = { kind: "none" };

function address(lo: number, hi: number): number {
  return ((lo & 0xffff_f000) >>> 0) + (hi & 0xf_ffff) * 2 ** 32;
}

function nextLevel(lo: number): number {
  return (lo >>> 9) & 7;
}

/** The 8-byte entry at `at` as the trace left it before `end`, or undefined outside RAM (QEMU's read fails). */
function read(trace: Trace, end: number, at: number): { lo: number; hi: number } | undefined {
  if (!trace.header.machine.ram.some((r) => at >= r.base && at + 8 <= r.base + r.size)) return undefined;
  const b = traceBytes(trace, end, at, 8);
  return { lo: dword(b, 0), hi: dword(b, 1) };
}

/** QEMU's walk for a request of `rid` at `iova` before operation `end` of `trace`. */
export function qemuAmdWalk(trace: Trace, end: number, rid: number, iova: number, write: boolean): QemuAmdWalk {
  if ((registerValue(trace, end, "amd-vi", CONTROL) & 1n) === 0n) return NONE;
  const table = registerValue(trace, end, "amd-vi", DEV_TABLE_BASE);
  if (rid >= ((Number(table & 0x1ffn) + 1) * 4096) / 32) return NONE;
  let entry = read(trace, end, Number(table & 0x000f_ffff_ffff_f000n) + rid * 32);
  if (entry === undefined || (entry.lo & 3) !== 3) return NONE;
  const dteMode = nextLevel(entry.lo);
  let level = dteMode;
  if (level === 0 || level >= 7) return NONE;
  const need = write ? HI_IW : HI_IR;
  let entryAddress = -1;
  let tableLevel = level;
  const path: QemuAmdEntry[] = [];
  for (let descended = 0; ; descended++) {
    if (descended >= LOOP_LEVELS) return { kind: "loops" };
    if ((entry.lo & 1) === 0 || (entry.hi & need) === 0) return NONE;
    entryAddress = address(entry.lo, entry.hi) + (Math.floor(iova / 2 ** (3 + 9 * level)) % 512) * 8;
    const next = read(trace, end, entryAddress);
    if (next === undefined || (next.lo === 0 && next.hi === 0)) return NONE;
    entry = next;
    tableLevel = level;
    path.push({ address: entryAddress, tableLevel, lo: entry.lo, hi: entry.hi });
    level = nextLevel(entry.lo);
    if (level === 0 || level === 7) break;
  }
  let size = 2 ** (3 + 9 * tableLevel);
  if (level === 7) {
    let ones = 0;
    for (let a = Math.floor(address(entry.lo, entry.hi) / 4096); a % 2 === 1 && ones < 40; a = Math.floor(a / 2)) ones++;
    size = 2 ** (13 + ones);
  }
  const out = address(entry.lo, entry.hi);
  const leaf = { entryAddress, dteMode, tableLevel, lo: entry.lo, hi: entry.hi, iovaBase: iova - (iova % size), outputBase: out - (out % size), size, writable: (entry.hi & HI_IW) !== 0, path };
  return { kind: "leaf", leaf };
}

/** A part of a DMA write QEMU carried out through one leaf. */
export interface QemuLandedChunk {
  readonly iova: number;
  readonly length: number;
  readonly leaf: QemuAmdLeaf;
}

/** QEMU's translation of an access, chunk by chunk, as far as its walk allows it (`write`: IW required). */
function qemuChunks(trace: Trace, end: number, rid: number, iova: number, length: number, write: boolean): QemuLandedChunk[] {
  const chunks: QemuLandedChunk[] = [];
  for (let a = iova; a < iova + length; ) {
    const walk = qemuAmdWalk(trace, end, rid, a, write);
    if (walk.kind !== "leaf" || (write && !walk.leaf.writable) || (!write && (walk.leaf.hi & HI_IR) === 0)) break;
    const n = Math.min(iova + length, walk.leaf.iovaBase + walk.leaf.size) - a;
    chunks.push({ iova: a, length: n, leaf: walk.leaf });
    a += n;
  }
  return chunks;
}

function chunkOutput(ch: QemuLandedChunk): number {
  return ch.leaf.outputBase + (ch.iova - ch.leaf.iovaBase);
}

/**
 * The bytes edu writes for the DMA write at `index` on QEMU: what QEMU's walk read for the device's last DMA read
 * before it (guest memory as the trace wrote it), where that read translated whole; else undefined.
 */
function qemuReadBefore(trace: Trace, index: number, rid: number, length: number): { data: Uint8Array; chunks: QemuLandedChunk[] } | undefined {
  for (let i = index - 1; i >= 0; i--) {
    const op = trace.ops[i]!;
    if (op.op !== "dma" || op.rid !== rid || op.dir !== "read") continue;
    const chunks = qemuChunks(trace, i, rid, op.iova, op.len, false);
    if (chunks.reduce((n, ch) => n + ch.length, 0) !== op.len) return undefined;
    const out = new Uint8Array(op.len);
    for (const ch of chunks) out.set(traceBytes(trace, i, chunkOutput(ch), ch.length), ch.iova - op.iova);
    return { data: out.subarray(0, Math.min(length, op.len)), chunks };
  }
  return undefined;
}

/**
 * A DMA write whose bytes QEMU put where its own walk says and the model did not: in the divergent memory read every
 * byte QEMU's chunks cover holds the bytes edu wrote (the write's, or what QEMU itself read for it), and every other
 * byte that differs from the model's answer is as guest memory held it before the write (the model wrote there,
 * QEMU did not). The chunks QEMU wrote through (and, where the bytes are what QEMU read, the chunks it read
 * through), or undefined.
 */
export function amdWritePlacedByQemu(c: DivergenceContext): QemuLandedChunk[] | undefined {
  const mem = memoryAnswers(c);
  if (mem === undefined) return undefined;
  for (let i = c.index - 1; i >= Math.max(0, c.index - 64); i--) {
    const op = c.trace.ops[i]!;
    if (op.op !== "dma" || op.dir !== "write") continue;
    const chunks = qemuChunks(c.trace, i, op.rid, op.iova, op.data.length, true);
    if (chunks.length === 0) continue;
    const before = traceBytes(c.trace, i, mem.addr, mem.actual.length);
    if (showsChunks(mem, before, op.data, op.iova, chunks)) return chunks;
    // The bytes edu wrote are those QEMU's walk read: then the read's chunks are part of the explanation too.
    const read = qemuReadBefore(c.trace, i, op.rid, op.data.length);
    if (read !== undefined && showsChunks(mem, before, read.data, op.iova, chunks)) return [...chunks, ...read.chunks];
  }
  return undefined;
}

function showsChunks(mem: NonNullable<ReturnType<typeof memoryAnswers>>, before: Uint8Array, data: Uint8Array, iova: number, chunks: readonly QemuLandedChunk[]): boolean {
  let differs = false;
  for (let k = 0; k < mem.actual.length; k++) {
    const pa = mem.addr + k;
    const chunk = chunks.find((ch) => pa >= chunkOutput(ch) && pa < chunkOutput(ch) + ch.length);
    const same = mem.actual[k] === mem.expected[k];
    if (!same) differs = true;
    if (chunk !== undefined) {
      if (mem.actual[k] !== data[chunk.iova - iova + (pa - chunkOutput(chunk))]) return false;
    } else if (!same && mem.actual[k] !== before[k]) return false;
  }
  return differs;
}

/** Reserved bits of a PTE ([58:52]) and of a PDE ([60:52]), in the high dword. */
const PTE_RESERVED_HI = 0x07f0_0000;
const PDE_RESERVED_HI = 0x1ff0_0000;

/** Whether an entry of the walk, the leaf (a PTE) or one it descended through (a PDE), has a reserved bit set. */
export function reservedBitsOnPath(leaf: QemuAmdLeaf): boolean {
  return leaf.path.some((e, i) => (e.hi & (i === leaf.path.length - 1 ? PTE_RESERVED_HI : PDE_RESERVED_HI)) !== 0);
}

/**
 * Whether an entry of the walk has a Next Level the format does not allow where it stands: a PDE whose Next
 * Level is not below its table's level, a Next Level 7 page not at least its table's slot and smaller than the
 * level above's, or a page at level 6.
 */
export function invalidLevelOnPath(leaf: QemuAmdLeaf): boolean {
  return leaf.path.some((e, i) => {
    const next = nextLevel(e.lo);
    if (i < leaf.path.length - 1) return next >= e.tableLevel;
    if (e.tableLevel === 6) return true;
    if (next !== 7) return false;
    return leaf.size < 2 ** (3 + 9 * e.tableLevel) || leaf.size >= 2 ** (12 + 9 * e.tableLevel);
  });
}

/**
 * Whether the input address has bits set that the walk's tables never index: above the DTE's Mode, or in a level a
 * PDE skipped (Next Level below its table's level minus one).
 */
export function unindexedBitsSet(leaf: QemuAmdLeaf, iova: number): boolean {
  if (iova >= 2 ** (12 + 9 * leaf.dteMode)) return true;
  return leaf.path.some((e, i) => {
    const next = nextLevel(e.lo);
    if (i === leaf.path.length - 1 || next >= e.tableLevel - 1) return false;
    const from = 2 ** (12 + 9 * next);
    const to = 2 ** (3 + 9 * e.tableLevel);
    return Math.floor(iova / from) % (to / from) !== 0;
  });
}

/**
 * Whether the leaf's page covers pages of the access whose own slot in the leaf's table holds another entry
 * (software did not replicate a Next Level 7 entry over the slots its page spans): the model translates each page
 * through its own slot.
 */
export function chunkSpansUnreplicatedSlot(trace: Trace, end: number, chunk: QemuLandedChunk): boolean {
  const slotSize = 2 ** (3 + 9 * chunk.leaf.tableLevel);
  const table = chunk.leaf.entryAddress - (chunk.leaf.entryAddress % 4096);
  for (let a = chunk.iova - (chunk.iova % slotSize); a < chunk.iova + chunk.length; a += slotSize) {
    const slot = table + (Math.floor(a / slotSize) % 512) * 8;
    if (slot === chunk.leaf.entryAddress) continue;
    const e = read(trace, end, slot);
    if (e === undefined || e.lo !== chunk.leaf.lo || e.hi !== chunk.leaf.hi) return true;
  }
  return false;
}
