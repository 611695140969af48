import { inRam, type DivergenceContext, type DmaOp, type TraceOp } from "@viommu/trace";
import type { QemuDifference } from "./difference.js";
import { differsOnlyIn, dword, inRange, lastRegisterWrite, memoryAnswers, registerRead, traceBytes } from "./matchers.js";

const SMMU_GERROR = 0x60;
const SMMU_CMDQ_BASE = 0x90;
const SMMU_EVTQ_BASE = 0xa0;
const SMMU_EVTQ_PROD = 0x100a8;
const GERROR_EVTQ_ABT = 0x4n;
const PROD_OVFLG = 0x8000_0000n;
const CMD_SYNC = 0x46;
const F_WALK_EABT = 0x0b;

function smmuQueue(c: DivergenceContext, baseRegister: number, entryBytes: number): { base: number; bytes: number } | undefined {
  const v = lastRegisterWrite(c, "smmuv3", baseRegister);
  if (v === undefined) return undefined;
  return { base: Number(v & 0x000f_ffff_ffff_ffe0n), bytes: entryBytes * 2 ** Number(v & 0x1fn) };
}

/** The divergent memory read, if it lies in the event queue the guest programmed (SMMU_EVENTQ_BASE). */
function eventQueueAnswer(c: DivergenceContext): ReturnType<typeof memoryAnswers> {
  const mem = memoryAnswers(c);
  const q = smmuQueue(c, SMMU_EVTQ_BASE, 32);
  return mem !== undefined && q !== undefined && mem.addr >= q.base && mem.addr < q.base + q.bytes ? mem : undefined;
}

/** An event record read the model and QEMU answered with the same type: the two records. */
function smmuEventRecords(c: DivergenceContext): { expected: Uint8Array; actual: Uint8Array } | undefined {
  const mem = eventQueueAnswer(c);
  if (mem === undefined || mem.expected.length < 16) return undefined;
  if ((mem.expected[0]! & 0xff) !== (mem.actual[0]! & 0xff)) return undefined;
  return mem;
}

/**
 * For a queue pointer register read (index and wrap in the low LOG2SIZE + 1 bits of the queue at `baseRegister`):
 * how far QEMU's position is ahead of the model's, from 1 to the queue's entries; 0 when it is not ahead.
 */
function queueIndexAhead(c: DivergenceContext, baseRegister: number): number {
  const base = lastRegisterWrite(c, "smmuv3", baseRegister);
  if (base === undefined || typeof c.expected !== "bigint" || typeof c.actual !== "bigint") return 0;
  const entries = 1n << (base & 0x1fn);
  const ahead = (c.actual - c.expected) & (2n * entries - 1n);
  return ahead <= entries ? Number(ahead) : 0;
}

/** A faulting transfer of more than 4 bytes happened before the divergence. */
function multiWordFault(c: DivergenceContext): boolean {
  return c.trace.ops.slice(0, c.index).some((op) => op.op === "dma" && op.expect?.ok === false && (op.dir === "read" ? op.len : op.data.length) > 4);
}

/** The base registers each SMMU_CR0 enable makes the SMMU read: SMMUEN the stream table, PRIQEN, EVENTQEN, CMDQEN their queues. */
const SMMU_ENABLE_BASES: readonly (readonly [bit: bigint, registers: readonly number[]])[] = [
  [0x1n, [0x80, 0x88]],
  [0x2n, [0xc0]],
  [0x4n, [SMMU_EVTQ_BASE]],
  [0x8n, [SMMU_CMDQ_BASE]],
];

/**
 * Whether, before the divergence, the guest set an SMMU_CR0 enable while a base register that enable uses had
 * not been written since the start of the trace (that is, since reset).
 */
function smmuEnabledWithResetBase(c: DivergenceContext): boolean {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "smmuv3");
  if (block === undefined) return false;
  const written = new Set<number>();
  for (let i = 0; i < c.index; i++) {
    const op = c.trace.ops[i]!;
    if (op.op !== "mmio-write" || op.addr < block.base || op.addr >= block.base + 0x100) continue;
    const offset = op.addr - block.base;
    for (let b = 0; b < op.size; b++) written.add((offset + b) & ~7);
    if (offset !== 0x20) continue;
    for (const [bit, registers] of SMMU_ENABLE_BASES) if ((op.value & bit) !== 0n && registers.some((r) => !written.has(r))) return true;
  }
  return false;
}

/**
 * Command opcodes QEMU 7.2 consumes without CERROR_ILL (smmuv3_cmdq_consume(): those it executes, and the EL2/EL3
 * TLBIs, CMD_TLBI_S12_VMALL/S2_IPA, CMD_ATC_INV, CMD_PRI_RESP, CMD_RESUME and CMD_STALL_TERM it passes over
 * unhandled; every other opcode is CERROR_ILL there too). Checked one opcode at a time on QEMU 7.2.22.
 */
const QEMU_EXECUTED_COMMANDS = new Set([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x18, 0x1a, 0x20, 0x21, 0x22, 0x23, 0x28, 0x2a, 0x30, 0x40, 0x41, 0x44, 0x45, 0x46]);
const CONS_ERR = 0x7f00_0000n;
const CERROR_ILL = 0x0100_0000n;

/**
 * A CMDQ_CONS read in `trace` (at any position) where the model stopped with CERROR_ILL at a command whose opcode
 * QEMU executes: the command the model found illegal.
 */
function smmuModelIllegalCommand(c: DivergenceContext): boolean {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "smmuv3");
  const baseValue = lastRegisterWrite(c, "smmuv3", SMMU_CMDQ_BASE);
  if (block === undefined || baseValue === undefined) return false;
  const base = Number(baseValue & 0x000f_ffff_ffff_ffe0n);
  const entries = 2 ** Number(baseValue & 0x1fn);
  return c.trace.ops.some((op, i) => {
    if (op.op !== "mmio-read" || op.addr !== block.base + 0x9c || op.expect === undefined || (op.expect & CONS_ERR) !== CERROR_ILL) return false;
    const slot = Number(op.expect & 0xff_ffffn) % entries;
    return QEMU_EXECUTED_COMMANDS.has(traceBytes(c.trace, i, base + slot * 16, 1)[0]!);
  });
}

/**
 * A GERROR read where `explains` accounts for at least one differing bit and every other differing bit, seen alone
 * (QEMU's value differing from the model's in that bit only), is explained by an entry of this catalogue: GERROR
 * gathers independent errors, so two catalogued differences can meet in one read (a command QEMU executes where the
 * model stopped with CMDQ_ERR, and QEMU's EVTQ_ABT_ERR for a full event queue).
 */
function gerrorBitwise(c: DivergenceContext, explains: (oneBit: DivergenceContext) => boolean): boolean {
  if (registerRead(c, "smmuv3") !== SMMU_GERROR || typeof c.expected !== "bigint" || typeof c.actual !== "bigint") return false;
  const differing = c.expected ^ c.actual;
  if (differing === 0n) return false;
  // One bit: this entry's alone (the others are asked about single bits only, so this never recurses further).
  if ((differing & (differing - 1n)) === 0n) return explains(c);
  let own = false;
  for (let bit = 1n; bit <= differing; bit <<= 1n) {
    if ((differing & bit) === 0n) continue;
    const alone: DivergenceContext = { ...c, actual: c.expected ^ bit };
    if (explains(alone)) own = true;
    else if (!smmuv3Differences.some((d) => d.matches(alone))) return false;
  }
  return own;
}

const SMMU_EVTQ_CONS = 0x100ac;

/**
 * Whether the model, anywhere in the trace, answered an EVTQ_PROD read with the event queue full: its index equal to
 * the EVTQ_CONS index the guest last wrote before the read, the wrap bits different.
 */
function smmuEventQueueSeenFull(c: DivergenceContext): boolean {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "smmuv3");
  const q = lastRegisterWrite({ ...c, index: c.trace.ops.length }, "smmuv3", SMMU_EVTQ_BASE);
  if (block === undefined || q === undefined) return false;
  const wrapAndIndex = (1n << ((q & 0x1fn) + 1n)) - 1n;
  const wrap = (wrapAndIndex + 1n) >> 1n;
  let cons = 0n;
  for (const op of c.trace.ops) {
    if (op.op === "mmio-write" && op.addr === block.base + SMMU_EVTQ_CONS) cons = op.value;
    if (op.op !== "mmio-read" || op.addr !== block.base + SMMU_EVTQ_PROD || op.expect === undefined) continue;
    if (((op.expect ^ cons) & wrapAndIndex) === wrap) return true;
  }
  return false;
}

/**
 * Whether QEMU's one record per 4-byte access (smmuv3-event-per-access) of the transfers blocked before the divergence
 * would be enough to fill the event queue.
 */
function perAccessRecordsFillQueue(c: DivergenceContext): boolean {
  const q = smmuQueue(c, SMMU_EVTQ_BASE, 32);
  if (q === undefined) return false;
  let records = 0;
  for (const op of c.trace.ops.slice(0, c.index)) if (op.op === "dma" && op.expect?.ok === false) records += Math.ceil((op.dir === "read" ? op.len : op.data.length) / 4);
  return records >= q.bytes / 32;
}

const CMDQ_CONS = 0x9c;

/** Registers whose write can move the command queue's consumer: CR0 (CMDQEN), CMDQ_PROD, CMDQ_CONS. */
const CMDQ_MOVERS = [0x20, 0x98, CMDQ_CONS];

/**
 * The transfers the model blocked before the divergence whose page the same device had used successfully earlier
 * while the command queue's consumer stood where it still stands (stopped there by an illegal command, or idle
 * because the guest never submitted its invalidation): no command ran between the use
 * and the blocked transfer, so the invalidation the guest submitted after changing its tables lies behind the
 * stopped entry. The model consumes commands when the guest writes a queue register, so the consumer at the use
 * is the CMDQ_CONS answer read before it, or else the first one read after it, with no such write in between
 * (else the last one read before it).
 */
function blockedWithoutInvalidation(c: DivergenceContext): DmaOp[] {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "smmuv3");
  if (block === undefined) return [];
  const ops = c.trace.ops;
  const out: DmaOp[] = [];
  const lenOf = (op: DmaOp): number => (op.dir === "read" ? op.len : op.data.length);
  const isConsRead = (op: TraceOp): op is Extract<TraceOp, { op: "mmio-read" }> => op.op === "mmio-read" && op.addr === block.base + CMDQ_CONS && op.expect !== undefined;
  const movesCons = (op: TraceOp): boolean => op.op === "mmio-write" && CMDQ_MOVERS.some((r) => op.addr === block.base + r);
  /** CMDQ_CONS at operation j, where a read with no queue register write in between shows it. */
  // The last CMDQ_CONS answer before each operation, writes or not: what is left when no read is clean.
  let cons: bigint | undefined;
  const lastBefore: (bigint | undefined)[] = ops.map((op) => {
    const before = cons;
    if (isConsRead(op)) cons = op.expect;
    return before;
  });
  /** The consumer's position: index and wrap, without the error field. */
  const position = (v: bigint | undefined): bigint | undefined => (v === undefined ? undefined : v & ~CONS_ERR);
  // Reads after the divergence count too: their expectations are the model's answers.
  const consAt = (j: number): bigint | undefined => {
    for (let k = j - 1; k >= 0 && !movesCons(ops[k]!); k--) {
      const op = ops[k]!;
      if (isConsRead(op)) return op.expect;
    }
    for (let k = j + 1; k < ops.length && !movesCons(ops[k]!); k++) {
      const op = ops[k]!;
      if (isConsRead(op)) return op.expect;
    }
    return lastBefore[j];
  };
  for (let i = 0; i < c.index; i++) {
    const blocked = ops[i]!;
    if (blocked.op !== "dma" || blocked.expect?.ok !== false) continue;
    const first = Math.floor(blocked.iova / 4096);
    const last = Math.floor((blocked.iova + lenOf(blocked) - 1) / 4096);
    const stuck = consAt(i);
    if (stuck === undefined) continue;
    for (let j = i - 1; j >= 0; j--) {
      const op = ops[j]!;
      // A CONS read since the earlier use that shows another position: commands were consumed. (The error field
      // may have been clear then: the queue stood empty at the entry the guest's next command stopped it at.)
      if (isConsRead(op) && position(op.expect) !== position(stuck)) break;
      if (op.op !== "dma" || op.rid !== blocked.rid || op.expect?.ok !== true) continue;
      const used = Math.floor(op.iova / 4096) <= last && first <= Math.floor((op.iova + lenOf(op) - 1) / 4096);
      if (used && position(consAt(j)) === position(stuck)) {
        out.push(blocked);
        break;
      }
    }
  }
  return out;
}

const C_BAD_STE = 0x04;
const C_BAD_STREAMID = 0x02;

/**
 * Whether `sid`, in the two-level stream table the guest had programmed before the divergence (STRTAB_BASE,
 * STRTAB_BASE_CFG.FMT = 1, SPLIT), selects a valid L1 descriptor (Span 1 to SPLIT + 1) but an index at or beyond the
 * 2^(Span-1) STEs of its level-2 table (descriptor as the trace wrote it).
 */
function streamIdBeyondL2Span(c: DivergenceContext, sid: number): boolean {
  const base = lastRegisterWrite(c, "smmuv3", 0x80);
  const cfg = lastRegisterWrite(c, "smmuv3", 0x88);
  if (base === undefined || cfg === undefined || ((cfg >> 16n) & 3n) !== 1n) return false;
  const split = Number((cfg >> 6n) & 0x1fn);
  if (sid >= 2 ** Number(cfg & 0x3fn)) return false;
  const l1 = Number(base & 0x000f_ffff_ffff_ffc0n) + Math.floor(sid / 2 ** split) * 8;
  const span = traceBytes(c.trace, c.index, l1, 1)[0]! & 0x1f;
  // A reserved Span (12 to 31) or one above SPLIT + 1 makes every StreamID of the descriptor invalid too.
  return span >= 1 && (span > 11 || span > split + 1 || sid % 2 ** split >= 2 ** (span - 1));
}

const F_STE_FETCH = 0x03;

/**
 * For `sid` in a two-level stream table (as the trace programmed it before the divergence): the L2Ptr bits of its
 * L1 descriptor below the level-2 array's size, bits [5 + (Span - 1):5], which the architecture treats as 0.
 */
function l2PtrBitsBelowArray(c: DivergenceContext, sid: number): number | undefined {
  const base = lastRegisterWrite(c, "smmuv3", 0x80);
  const cfg = lastRegisterWrite(c, "smmuv3", 0x88);
  if (base === undefined || cfg === undefined || ((cfg >> 16n) & 3n) !== 1n) return undefined;
  const split = Number((cfg >> 6n) & 0x1fn);
  const l1 = Number(base & 0x000f_ffff_ffff_ffc0n) + Math.floor(sid / 2 ** split) * 8;
  const low = dword(traceBytes(c.trace, c.index, l1, 4), 0);
  const span = low & 0x1f;
  if (span === 0 || span > 11) return undefined;
  return low & (2 ** (6 + span - 1) - 1) & ~0x1f;
}

/** Whether the last DMA before the divergence came from a requester `pick` selects. */
function lastDmaOf(c: DivergenceContext, pick: (rid: number) => boolean): boolean {
  for (let i = c.index - 1; i >= 0; i--) {
    const op = c.trace.ops[i]!;
    if (op.op === "dma") return pick(op.rid);
  }
  return false;
}

/**
 * Whether QEMU reads `sid`'s STE elsewhere than the model (L2Ptr bits below the array's size set), both STEs lie in
 * the trace's RAM (else the fetch itself differs: smmuv3-fetch-in-qemu-ram-floor) and the guest left different
 * contents in them.
 */
function readsAnotherSte(c: DivergenceContext, sid: number): boolean {
  const lowBits = l2PtrBitsBelowArray(c, sid);
  const model = steAddressOf(c, sid);
  if (lowBits === undefined || lowBits === 0 || model === undefined) return false;
  const machine = c.trace.header.machine;
  if (!inRam(machine, model, 64) || !inRam(machine, model + lowBits, 64)) return false;
  const a = traceBytes(c.trace, c.index, model, 64);
  const b = traceBytes(c.trace, c.index, model + lowBits, 64);
  return a.some((x, i) => x !== b[i]);
}

/** Whether, before the divergence, the guest wrote SMMU_EVENTQ_BASE (either half) while its last SMMU_CR0 write had EVENTQEN set. */
function eventQueueBaseWrittenWhileEnabled(c: DivergenceContext): boolean {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "smmuv3");
  if (block === undefined) return false;
  let enabled = false;
  for (const op of c.trace.ops.slice(0, c.index)) {
    if (op.op !== "mmio-write") continue;
    if (op.addr === block.base + 0x20) enabled = (op.value & 0x4n) !== 0n;
    else if (enabled && op.addr >= block.base + SMMU_EVTQ_BASE && op.addr < block.base + SMMU_EVTQ_BASE + 8) return true;
  }
  return false;
}

const F_ACCESS = 0x12;

/** Whether an event record names (StreamID, InputAddr) a transfer the model blocked before the divergence. */
function blockedTransferOf(c: DivergenceContext, record: Uint8Array): boolean {
  if (record.length < 24) return false;
  const sid = dword(record, 1);
  const input = dword(record, 4) + dword(record, 5) * 2 ** 32;
  return c.trace.ops.slice(0, c.index).some((op) => op.op === "dma" && op.rid === sid && op.expect?.ok === false && input >= op.iova && input < op.iova + (op.dir === "read" ? op.len : op.data.length));
}

/**
 * A write the model blocked with F_ACCESS whose bytes QEMU's answer shows in the page a leaf with AF = 0 maps: the
 * divergent read's differing bytes are all the write's, at its page offset in a page some level-3 page descriptor
 * the trace wrote (bits [1:0] = 0b11, AF bit 10 clear) names as its output.
 */
function accessFlagWriteLanded(c: DivergenceContext): boolean {
  const mem = memoryAnswers(c);
  if (mem === undefined) return false;
  const q = smmuQueue({ ...c, index: c.trace.ops.length }, SMMU_EVTQ_BASE, 32);
  if (q === undefined) return false;
  const page = mem.addr - (mem.addr % 4096);
  const leafNamesPage = c.trace.ops.slice(0, c.index).some((op) => {
    if (op.op !== "mem-write" || op.data.length !== 8) return false;
    const lo = dword(op.data, 0);
    return (lo & 3) === 3 && (lo & 0x400) === 0 && (lo & 0xffff_f000) >>> 0 === page % 2 ** 32 && (dword(op.data, 1) & 0xffff) === Math.floor(page / 2 ** 32);
  });
  if (!leafNamesPage) return false;
  const records = c.trace.ops.filter((op): op is Extract<TraceOp, { op: "mem-read" }> => op.op === "mem-read" && op.expect !== undefined && op.addr >= q.base && op.addr < q.base + q.bytes && op.expect[0] === F_ACCESS);
  return c.trace.ops.slice(0, c.index).some((w) => {
    if (w.op !== "dma" || w.dir !== "write" || w.expect?.ok !== false) return false;
    if (!records.some((r) => dword(r.expect!, 1) === w.rid && dword(r.expect!, 4) + dword(r.expect!, 5) * 2 ** 32 === w.iova)) return false;
    const at = page + (w.iova % 4096);
    let landed = false;
    for (let k = 0; k < mem.actual.length; k++) {
      if (mem.actual[k] === mem.expected[k]) continue;
      const i = mem.addr + k - at;
      if (i < 0 || i >= w.data.length || w.data[i] !== mem.actual[k]) return false;
      landed = true;
    }
    return landed;
  });
}

/** The F_ACCESS records the model answered event-queue reads with, anywhere in the trace, for transfers it blocked. */
function accessFlagRecords(c: DivergenceContext): number {
  const q = smmuQueue({ ...c, index: c.trace.ops.length }, SMMU_EVTQ_BASE, 32);
  if (q === undefined) return 0;
  const slots = new Set<number>();
  c.trace.ops.forEach((op, i) => {
    if (op.op !== "mem-read" || op.expect === undefined || op.addr < q.base || op.addr >= q.base + q.bytes || (op.addr - q.base) % 32 !== 0) return;
    if (op.expect[0] === F_ACCESS && blockedTransferOf({ ...c, index: i }, op.expect)) slots.add(op.addr);
  });
  return slots.size;
}

/**
 * Where the STE of `sid` lies in the stream table the guest programmed before the divergence (STRTAB_BASE and
 * STRTAB_BASE_CFG, level-1 descriptors as the trace wrote them, the level-2 array aligned to its size), if it is
 * reachable.
 */
function steAddressOf(c: DivergenceContext, sid: number): number | undefined {
  const base = lastRegisterWrite(c, "smmuv3", 0x80);
  const cfg = lastRegisterWrite(c, "smmuv3", 0x88);
  if (base === undefined || cfg === undefined || sid >= 2 ** Number(cfg & 0x3fn)) return undefined;
  const address = Number(base & 0x000f_ffff_ffff_ffc0n);
  if (((cfg >> 16n) & 3n) !== 1n) return address + sid * 64;
  const split = Number((cfg >> 6n) & 0x1fn);
  const l1 = traceBytes(c.trace, c.index, address + Math.floor(sid / 2 ** split) * 8, 8);
  const span = l1[0]! & 0x1f;
  if (span === 0 || span > split + 1 || sid % 2 ** split >= 2 ** (span - 1)) return undefined;
  const l2 = ((dword(l1, 0) & ~(2 ** (span + 5) - 1)) >>> 0) + (dword(l1, 1) & 0xf_ffff) * 2 ** 32;
  return l2 + (sid % 2 ** split) * 64;
}

/** The RAM the QEMU target gives a machine at the least (QemuTarget.start()). */
const QEMU_RAM_FLOOR = 128 * 2 ** 20;

/**
 * The StreamIDs for which the model answered an event-queue read, anywhere in the trace, with a fetch abort
 * (F_STE_FETCH, F_CD_FETCH, F_WALK_EABT) at an address past the trace's RAM that QEMU's larger RAM covers.
 */
function fetchAbortsInQemuRamFloor(c: DivergenceContext): Set<number> {
  const sids = new Set<number>();
  const ram = c.trace.header.machine.ram[0];
  const q = smmuQueue({ ...c, index: c.trace.ops.length }, SMMU_EVTQ_BASE, 32);
  if (ram === undefined || q === undefined || ram.size >= QEMU_RAM_FLOOR) return sids;
  for (const op of c.trace.ops) {
    if (op.op !== "mem-read" || op.expect === undefined || op.expect.length < 32 || op.addr < q.base || op.addr >= q.base + q.bytes) continue;
    const type = op.expect[0];
    if (type !== F_STE_FETCH && type !== 0x09 && type !== F_WALK_EABT) continue;
    const fetch = dword(op.expect, 6) + dword(op.expect, 7) * 2 ** 32;
    if (fetch >= ram.base + ram.size && fetch < ram.base + QEMU_RAM_FLOOR) sids.add(dword(op.expect, 1));
  }
  return sids;
}

/** CLASS (dword 3 bits 9:8), InD (bit 2) and PnU (bit 1) of a fault record. */
const RECORD_ATTRIBUTES = (3 << 8) | (1 << 2) | (1 << 1);

/**
 * An event-queue record of `type` that the model and QEMU wrote alike but for its FetchAddr (dwords 6 and 7):
 * both FetchAddrs and the record's StreamID (dword 1).
 */
function fetchAddresses(c: DivergenceContext, type: number): { expected: number; actual: number; streamId: number } | undefined {
  const mem = eventQueueAnswer(c);
  if (mem === undefined || mem.expected.length < 32 || mem.actual.length < 32) return undefined;
  if (mem.expected[0] !== type || mem.actual[0] !== type) return undefined;
  for (let i = 0; i < 6; i++) if (dword(mem.expected, i) !== dword(mem.actual, i)) return undefined;
  const fetch = (r: Uint8Array): number => dword(r, 6) + dword(r, 7) * 2 ** 32;
  return { expected: fetch(mem.expected), actual: fetch(mem.actual), streamId: dword(mem.expected, 1) };
}

/** Known differences between the model's SMMUv3 and QEMU 7.2's arm-smmuv3. */
export const smmuv3Differences: readonly QemuDifference[] = [
  {
    id: "smmuv3-base-registers-unknown-at-reset",
    vendor: "smmuv3",
    classification: "open",
    summary: "A guest that sets SMMUEN, EVENTQEN, CMDQEN or PRIQEN without first writing the base register that enable uses (STRTAB_BASE/_CFG, EVENTQ_BASE, CMDQ_BASE, PRIQ_BASE) makes the SMMU use the register's reset value, which the architecture leaves UNKNOWN: the model's is 0 (no memory), QEMU keeps the address and size written before the reset (so difftest saw events written where the previous case's queue was). Everything the SMMU does from then on may differ.",
    specification: "Arm SMMUv3 (IHI 0070), 6.3.24 SMMU_STRTAB_BASE, 6.3.26 SMMU_CMDQ_BASE, 6.3.29 SMMU_EVENTQ_BASE: without SMMU_IDR1.QUEUES_PRESET / TABLES_PRESET, ADDR and LOG2SIZE reset to UNKNOWN values.",
    qemu: "hw/arm/smmuv3.c smmuv3_init_regs() (run by reset): the queue bases are rebuilt with deposit64() over their old value, so LOG2SIZE is set to its maximum and ADDR keeps what the guest wrote before the reset (STRTAB_BASE is not reset at all).",
    matches: smmuEnabledWithResetBase,
  },
  {
    id: "smmuv3-command-reserved-bits-accepted",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "A command of a defined opcode with a reserved field set or an invalid value (e.g. CMD_CFGI_STE with bit 74 set, CMD_STALL_TERM or CMD_RESUME with reserved bits, which QEMU passes over unhandled): the model stops the queue with CMDQ_CONS.ERR = CERROR_ILL and GERROR.CMDQ_ERR at it; QEMU 7.2 executes it and the commands behind it (stopping, if at all, at a later one it finds illegal too). In GERROR this meets other catalogued errors (QEMU's EVTQ_ABT_ERR for a full queue): each differing bit is explained on its own.",
    specification: "Arm SMMUv3 (IHI 0070), 7.1 Command queue errors: CERROR_ILL for a command that cannot be correctly consumed, including a valid command with a Reserved field or an invalid value used.",
    qemu: "hw/arm/smmuv3.c smmuv3_cmdq_consume(): each opcode reads its fields with CMD_* macros and checks none of its reserved bits.",
    matches: (c) => {
      const at = registerRead(c, "smmuv3");
      if (at === SMMU_GERROR) return gerrorBitwise(c, (one) => differsOnlyIn(one, 0x1n) && ((one.expected as bigint) & 0x1n) !== 0n && smmuModelIllegalCommand(one));
      if (at !== 0x9c || typeof c.expected !== "bigint" || (c.expected & CONS_ERR) !== CERROR_ILL || typeof c.actual !== "bigint") return false;
      // QEMU went on past the command (and maybe stopped later, at a command it finds illegal too).
      if ((c.actual & CONS_ERR) !== 0n && (c.actual & CONS_ERR) !== CERROR_ILL) return false;
      return queueIndexAhead({ ...c, expected: c.expected & 0xff_ffffn, actual: c.actual & 0xff_ffffn }, SMMU_CMDQ_BASE) > 0 && smmuModelIllegalCommand(c);
    },
  },
  {
    id: "smmuv3-cmd-sync-msi-abort",
    vendor: "smmuv3",
    classification: "open",
    summary: "A CMD_SYNC whose completion MSI address lies outside memory: the model's MSI write aborts and it sets GERROR.MSI_CMDQ_ABT_ERR; QEMU 7.2 has no MSIs (IDR0.MSI = 0) and writes nothing, so nothing aborts.",
    specification: "Arm SMMUv3 (IHI 0070), CMD_SYNC (the completion MSI where SMMU_IDR0.MSI = 1) and SMMU_GERROR.MSI_CMDQ_ABT_ERR (an abort on a CMD_SYNC MSI write).",
    qemu: "hw/arm/smmuv3.c smmuv3_cmdq_consume(), case SMMU_CMD_SYNC: only the wired interrupt for CS = SIG_IRQ, no MSI write.",
    matches: (c) => gerrorBitwise(c, (one) => {
      if (!differsOnlyIn(one, 0x10n) || ((one.expected as bigint) & 0x10n) === 0n) return false;
      const q = smmuQueue(c, SMMU_CMDQ_BASE, 16);
      if (q === undefined) return false;
      const ram = c.trace.header.machine.ram;
      const commands = traceBytes(c.trace, c.index, q.base, q.bytes);
      for (let at = 0; at + 16 <= commands.length; at += 16) {
        if (commands[at] !== CMD_SYNC) continue;
        const msi = (dword(commands, at / 4 + 2) & ~3) + (dword(commands, at / 4 + 3) & 0xf_ffff) * 2 ** 32;
        if (((dword(commands, at / 4) >>> 12) & 3) === 1 && !ram.some((r) => msi >= r.base && msi + 4 <= r.base + r.size)) return true;
      }
      return false;
    }),
  },
  {
    id: "smmuv3-capability-registers",
    vendor: "smmuv3",
    classification: "open",
    summary: "IDR0–IDR5, IIDR and AIDR report each implementation's features (QEMU 7.2: no MSI, ATS, SEV, CD2L, stage 2; its own OAS and queue sizes).",
    specification: "Arm SMMUv3 (IHI 0070), SMMU_IDR0–5: the features an implementation supports.",
    qemu: "hw/arm/smmuv3.c smmuv3_init_regs().",
    matches: (c) => inRange(registerRead(c, "smmuv3"), 0x0, 0x1f),
  },
  {
    id: "smmuv3-cmd-sync-without-msi",
    vendor: "smmuv3",
    classification: "open",
    summary: "A CMD_SYNC with CS = SIG_IRQ completes without the MSI write (MSIData over the command, 0 from the model's driver) the model's driver polls for: QEMU 7.2 has no MSIs (IDR0.MSI = 0), and the driver chose MSI polling from the model's IDR0.",
    specification: "Arm SMMUv3 (IHI 0070), CMD_SYNC: the completion MSI is written only where MSIs are supported (SMMU_IDR0.MSI).",
    qemu: "hw/arm/smmuv3.c smmuv3_cmdq_consume(), case SMMU_CMD_SYNC: with CS = SIG_IRQ it raises the wired CMD_SYNC interrupt; there is no MSI write.",
    matches: (c) => {
      const mem = memoryAnswers(c);
      const q = smmuQueue(c, SMMU_CMDQ_BASE, 16);
      if (mem === undefined || q === undefined || mem.addr < q.base || mem.addr >= q.base + q.bytes) return false;
      // The model wrote the command's MSIData over the slot its MSIAddress names (the command itself, as drivers
      // that poll do); QEMU left the command as the guest wrote it.
      const slot = mem.addr - ((mem.addr - q.base) % 16);
      const command = traceBytes(c.trace, c.index, slot, 16);
      const d0 = dword(command, 0);
      const msi = (dword(command, 2) & ~3) + (dword(command, 3) & 0xf_ffff) * 2 ** 32;
      if ((d0 & 0xff) !== CMD_SYNC || ((d0 >>> 12) & 3) !== 1 || msi !== slot) return false;
      const at = mem.addr - slot;
      const msiData = Uint8Array.of(...command.subarray(4, 8), ...command.subarray(4, 16));
      return mem.expected.every((b, i) => b === msiData[at + i]) && mem.actual.every((b, i) => b === command[at + i]);
    },
  },
  {
    id: "smmuv3-event-per-access",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "One faulting DMA transaction produces one event per 4-byte access in QEMU (F_TRANSLATION ... F_PERMISSION and F_WALK_EABT at InputAddr, InputAddr + 4, …; a configuration error such as C_BAD_STREAMID repeated as it is) where the model records one: EVTQ_PROD runs ahead and the guest reads QEMU's extra records.",
    specification: "Arm SMMUv3 (IHI 0070), event queue and event records: an event is recorded for a transaction that faults; one transaction is one event (identical events may be merged, never multiplied).",
    qemu: "hw/arm/smmuv3.c smmuv3_translate() records an event on every call; the memory core (softmmu/physmem.c flatview_read_continue()/flatview_write_continue()) retries the failed transfer access by access through the unassigned region, translating each 4-byte piece again.",
    matches: (c) => {
      if (!multiWordFault(c)) return false;
      // QEMU's EVTQ_PROD ahead of the model's (by at most a queue's worth: it stops at a full queue). Where the guest's
      // EVTQ_CONS made the model's queue full, the model toggled OVFLG; QEMU, its PROD elsewhere, did not.
      if (registerRead(c, "smmuv3") === SMMU_EVTQ_PROD) {
        if (!differsOnlyIn(c, PROD_OVFLG | 0x000f_ffffn) || (((c.expected as bigint) ^ (c.actual as bigint)) & PROD_OVFLG & ~(c.expected as bigint)) !== 0n) return false;
        return queueIndexAhead({ ...c, expected: (c.expected as bigint) & 0x000f_ffffn, actual: (c.actual as bigint) & 0x000f_ffffn }, SMMU_EVTQ_BASE) > 0;
      }
      // An event-queue slot holding one of QEMU's extra records: an F_* record for an address inside an earlier
      // blocked transfer of that StreamID (the model's queue has another record, or none, there).
      const mem = eventQueueAnswer(c);
      if (mem === undefined || mem.actual.length < 32) return false;
      // Defined: the read lies in it.
      const q = smmuQueue(c, SMMU_EVTQ_BASE, 32)!;
      const type = mem.actual[0]!;
      // A record without an input address (C_BAD_STREAMID, C_BAD_STE, F_CD_FETCH, ...): QEMU's repeat of a record the
      // model wrote in an earlier slot of the queue (the same type, SubstreamID and StreamID: QEMU may lay the rest
      // out otherwise, as F_CD_FETCH's address), for a StreamID whose transfer was blocked; not where the model's
      // slot holds that same event.
      if (type >= 0x01 && type < 0x10 && type !== F_WALK_EABT) {
        const sameEvent = (r: Uint8Array): boolean => r.length >= 8 && dword(r, 0) === dword(mem.actual, 0) && dword(r, 1) === dword(mem.actual, 1);
        if (sameEvent(mem.expected)) return false;
        const previous = c.trace.ops.slice(0, c.index).find((op) => op.op === "mem-read" && op.addr >= q.base && op.addr < mem.addr && (op.addr - q.base) % 32 === 0 && op.expect !== undefined && op.expect.length === 32 && sameEvent(op.expect));
        const sid = dword(mem.actual, 1);
        return previous !== undefined && c.trace.ops.slice(0, c.index).some((op) => op.op === "dma" && op.rid === sid && op.expect?.ok === false);
      }
      // Records with an input address (F_WALK_EABT, F_TRANSLATION ... F_PERMISSION): one for each 4-byte access.
      if (type !== F_WALK_EABT && (type < 0x10 || type > 0x13)) return false;
      const sid = dword(mem.actual, 1);
      const input = dword(mem.actual, 4) + dword(mem.actual, 5) * 2 ** 32;
      // The model's slot holding the same event (type, StreamID, address) is no extra record: they differ elsewhere.
      if (mem.expected.length >= 24 && mem.expected[0] === type && dword(mem.expected, 1) === sid && dword(mem.expected, 4) === dword(mem.actual, 4) && dword(mem.expected, 5) === dword(mem.actual, 5)) return false;
      return c.trace.ops.slice(0, c.index).some((op) => op.op === "dma" && op.rid === sid && op.expect?.ok === false && input >= op.iova && input < op.iova + (op.dir === "read" ? op.len : op.data.length));
    },
  },
  {
    id: "smmuv3-bad-streamid-recorded-without-recinvsid",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "A transaction with a StreamID outside the stream table is recorded as C_BAD_STREAMID by QEMU even with SMMU_CR2.RECINVSID clear; the model records it only when the guest set RECINVSID.",
    specification: "Arm SMMUv3 (IHI 0070), SMMU_CR2.RECINVSID: when 0, C_BAD_STREAMID events for invalid incoming StreamIDs are not recorded (the transaction is still terminated).",
    qemu: "hw/arm/smmuv3.c smmu_find_ste() sets SMMU_EVT_C_BAD_STREAMID for a StreamID beyond the table and smmuv3_translate() records it; CR2.RECINVSID is never consulted.",
    matches: (c) => {
      const mem = eventQueueAnswer(c);
      if (mem === undefined) return false;
      const recinvsid = ((lastRegisterWrite(c, "smmuv3", 0x2c) ?? 0n) & 0x2n) !== 0n;
      return !recinvsid && mem.actual[0] === 0x02 && mem.expected[0] !== 0x02;
    },
  },
  {
    id: "smmuv3-cmdq-outside-ram",
    vendor: "smmuv3",
    classification: "open",
    summary: "A command queue the guest placed outside RAM: QEMU's virt machine has its flash (holding the firmware) at address 0, so commands fetched there are illegal (CMDQ_CONS.ERR = CERROR_ILL); the model has nothing there and reports the fetch abort (CERROR_ABT). A difference of the machines, not of the SMMUs.",
    specification: "Arm SMMUv3 (IHI 0070), SMMU_CMDQ_CONS.ERR: CERROR_ABT for an abort fetching a command, CERROR_ILL for a command that is not valid; what lies outside RAM is the platform's.",
    qemu: "hw/arm/virt.c maps the flash (VIRT_FLASH) at 0; hw/arm/smmuv3.c smmuv3_cmdq_consume() reads the command from there with dma_memory_read().",
    matches: (c) => {
      if (registerRead(c, "smmuv3") !== 0x9c || !differsOnlyIn(c, 0x7f00_0000n)) return false;
      const base = Number((lastRegisterWrite(c, "smmuv3", SMMU_CMDQ_BASE) ?? 0n) & 0x000f_ffff_ffff_ffe0n);
      return !c.trace.header.machine.ram.some((r) => base >= r.base && base < r.base + r.size);
    },
  },
  {
    id: "smmuv3-queue-pointer-reserved-bits",
    vendor: "smmuv3",
    classification: "open",
    summary: "Bits a guest wrote into the reserved part of a queue pointer register (CMDQ_PROD/CONS, EVTQ_PROD/CONS: above the LOG2SIZE + 1 index and wrap bits, outside ERR and the overflow flags) read back in QEMU; the model keeps only the defined fields.",
    specification: "Arm SMMUv3 (IHI 0070), SMMU_CMDQ_PROD/CONS and SMMU_EVENTQ_PROD/CONS: outside the index and wrap (and ERR, OVFLG/OVACKFLG) the bits are RES0, which software must write as 0 and must not rely on reading back.",
    qemu: "hw/arm/smmuv3.c smmu_writel(): A_CMDQ_PROD, A_EVENTQ_CONS and the others store the written value whole.",
    matches: (c) => {
      const at = registerRead(c, "smmuv3");
      // The index and wrap are LOG2SIZE + 1 bits of the queue's base register; above them the field is RES0.
      const size = (base: number): bigint => ((1n << (((lastRegisterWrite(c, "smmuv3", base) ?? 0n) & 0x1fn) + 1n)) - 1n);
      const defined: Record<number, () => bigint> = {
        0x98: () => size(SMMU_CMDQ_BASE),
        0x9c: () => 0x7f00_0000n | size(SMMU_CMDQ_BASE),
        0x100a8: () => 0x8000_0000n | size(SMMU_EVTQ_BASE),
        0x100ac: () => 0x8000_0000n | size(SMMU_EVTQ_BASE),
      };
      const mask = at === undefined ? undefined : defined[at]?.();
      if (mask === undefined || typeof c.expected !== "bigint" || typeof c.actual !== "bigint") return false;
      const d = c.expected ^ c.actual;
      return d !== 0n && (d & mask) === 0n;
    },
  },
  {
    id: "smmuv3-fault-record-class-pnu",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "QEMU's F_TRANSLATION / F_PERMISSION records leave CLASS, PnU and InD zero: CLASS reads CD (0b00) where the fault was on the input address (IN, 0b10). (The model writes PnU = 1 for a request without PASID: see the model findings in qemu-differences.md.)",
    specification: "Arm SMMUv3 (IHI 0070), event records F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION: CLASS gives what the faulting access was for (0b00 CD fetch, 0b01 translation-table fetch, 0b10 the input address).",
    qemu: "hw/arm/smmuv3.c smmuv3_translate(): the event it records sets only type, SID, InputAddr and RnW (event.u.f_translation.addr/.rnw); class, pnu and ind stay 0 in smmuv3_record_event().",
    matches: (c) => {
      const r = smmuEventRecords(c);
      if (r === undefined) return false;
      for (let i = 0; i < 8; i++) {
        const diff = dword(r.expected, i) ^ dword(r.actual, i);
        if (diff !== 0 && (i !== 3 || (diff & ~RECORD_ATTRIBUTES) !== 0)) return false;
      }
      return true;
    },
  },
  {
    id: "smmuv3-evtq-full-as-abort",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "An event arriving at a full event queue raises GERROR.EVTQ_ABT_ERR in QEMU instead of toggling EVTQ_PROD.OVFLG (or, with an overflow already unacknowledged, discarding the event and nothing more). The queue is full in the model's answers, or QEMU filled it with its one record per 4-byte access (smmuv3-event-per-access).",
    specification: "Arm SMMUv3 (IHI 0070), event queue overflow: an event that finds the queue full is discarded and SMMU_EVENTQ_PROD.OVFLG is toggled; SMMU_GERROR.EVENTQ_ABT_ERR reports an abort while writing the queue (shared/spec arm-hyperv-virtio.md §1.10 and item 13 of §9).",
    qemu: "hw/arm/smmuv3.c smmuv3_write_eventq() returns MEMTX_ERROR when smmuv3_q_full(); smmuv3_record_event() then raises R_GERROR_EVENTQ_ABT_ERR_MASK; OVFLG is never set.",
    matches: (c) => {
      if ((!smmuEventQueueSeenFull(c) && !perAccessRecordsFillQueue(c)) || eventQueueBaseWrittenWhileEnabled(c)) return false;
      const at = registerRead(c, "smmuv3");
      if (at === SMMU_GERROR) return gerrorBitwise(c, (one) => differsOnlyIn(one, GERROR_EVTQ_ABT) && ((one.actual as bigint) & GERROR_EVTQ_ABT) !== 0n);
      return at === SMMU_EVTQ_PROD && differsOnlyIn(c, PROD_OVFLG) && ((c.expected as bigint) & PROD_OVFLG) !== 0n;
    },
  },
  {
    id: "smmuv3-stale-translation-without-invalidation",
    vendor: "smmuv3",
    classification: "open",
    summary: "A translation the guest removed from its tables but never invalidated (its command queue stopped at an illegal command, or the guest did not submit the commands: no CMD_TLBI ran): QEMU keeps using the IOTLB entry the device's earlier transfer left and the transfer lands; the model's emulated device walks the tables again, blocks it and records F_TRANSLATION. Found by difftest (seed 4000).",
    specification: "Arm SMMUv3 (IHI 0070), 16.2 Caching (an implementation is not required to cache at all) and 4.4 TLB invalidation: a cached translation may be used until a CMD_TLBI_* (completed by a CMD_SYNC) removes it; whether one is cached is the implementation's.",
    qemu: "hw/arm/smmuv3.c smmuv3_translate(): smmu_iotlb_lookup() (hw/arm/smmu-common.c) returns the cached entry before any walk; only the TLBI commands in smmuv3_cmdq_consume() remove it.",
    matches: (c) => {
      const blocked = blockedWithoutInvalidation(c);
      if (blocked.length === 0) return false;
      // The model's EVTQ_PROD ahead of QEMU's by no more records than such transfers.
      if (registerRead(c, "smmuv3") === SMMU_EVTQ_PROD) {
        if (!differsOnlyIn(c, 0x000f_ffffn)) return false;
        const behind = queueIndexAhead({ ...c, expected: c.actual, actual: c.expected }, SMMU_EVTQ_BASE);
        return behind > 0 && behind <= blocked.length;
      }
      // An event-queue slot where the model has the translation fault of such a transfer and QEMU nothing.
      const mem = eventQueueAnswer(c);
      if (mem === undefined || mem.expected.length < 24) return false;
      if (mem.expected[0] !== 0x10 || !mem.actual.every((b) => b === 0)) return false;
      const sid = dword(mem.expected, 1);
      const input = dword(mem.expected, 4) + dword(mem.expected, 5) * 2 ** 32;
      return blocked.some((op) => op.rid === sid && input >= op.iova && input < op.iova + (op.dir === "read" ? op.len : op.data.length));
    },
  },
  {
    id: "smmuv3-walk-outside-ram-answers",
    vendor: "smmuv3",
    classification: "open",
    summary: "A stage-1 walk that reads a table descriptor outside RAM: the model has nothing there, the fetch aborts and F_WALK_EABT names that descriptor's address; on QEMU's virt machine the address may answer (the flash holding the firmware at 0, the PCIe MMIO windows reading all ones), so the walk goes on through the garbage and aborts further on, and QEMU's F_WALK_EABT names another FetchAddr. A difference of the machines, not of the SMMUs. Found by difftest (seed 4000).",
    specification: "Arm SMMUv3 (IHI 0070), 7.3.12 F_WALK_EABT: FetchAddr is the PA of the descriptor fetch that aborted; what answers at a PA outside RAM is the platform's.",
    qemu: "hw/arm/virt.c (base_memmap: VIRT_FLASH at 0, VIRT_HIGH_PCIE_MMIO at 0x80_0000_0000) and hw/pci-host/gpex.c (allow-unmapped-accesses, on since 6.1: unclaimed window reads return all ones); hw/arm/smmu-common.c get_pte() reads the descriptor with dma_memory_read() and takes what it gets.",
    matches: (c) => {
      const fetch = fetchAddresses(c, F_WALK_EABT);
      const ram = c.trace.header.machine.ram;
      const outside = (a: number): boolean => !ram.some((r) => a >= r.base && a < r.base + r.size);
      return fetch !== undefined && fetch.expected !== fetch.actual && outside(fetch.expected) && outside(fetch.actual);
    },
  },
  {
    id: "smmuv3-l2-span-overrun-as-bad-ste",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "A StreamID whose index in its level-2 stream table lies outside the span its L1 descriptor gives (2^(Span-1) STEs), or whose descriptor has a reserved Span (12 to 31) or one above SPLIT + 1: QEMU 7.2 reads an STE there and records C_BAD_STE (whatever SMMU_CR2.RECINVSID says, once per 4-byte access); the model treats the StreamID as invalid, C_BAD_STREAMID, recorded only with RECINVSID set. (QEMU's bound is also one power of two too large: indexes from 2^(Span-1) to 2^Span - 1 read an STE past the table.) Where the STE QEMU reads there aborts quietly (Config 0b000), QEMU records nothing at all. Found by difftest (seed 4000, and case 8797 of its re-run).",
    specification: "Arm SMMUv3 (IHI 0070), 5.1 (level-1 stream table descriptor): Span 12 to 31 is reserved and behaves as 0; StreamIDs selecting a reserved Span, one out of bounds for the split point, or an index outside the level-2 range Span describes are invalid (5.1.1); the transaction is terminated and C_BAD_STREAMID optionally recorded (SMMU_CR2.RECINVSID); 3.3 and 7.3.3 C_BAD_STREAMID.",
    qemu: "hw/arm/smmuv3.c smmu_find_ste(): max_l2_ste = (1 << span) - 1 and an l2_ste_offset above it sets SMMU_EVT_C_BAD_STE, which smmuv3_translate() records without looking at CR2.",
    matches: (c) => {
      // The event queue's producer elsewhere after a transfer of such a StreamID.
      if (registerRead(c, "smmuv3") === SMMU_EVTQ_PROD) {
        return differsOnlyIn(c, 0x000f_ffffn) && c.trace.ops.slice(0, c.index).some((op) => op.op === "dma" && streamIdBeyondL2Span(c, op.rid));
      }
      const mem = eventQueueAnswer(c);
      if (mem === undefined || mem.actual.length < 8 || mem.expected.length < 8) return false;
      if (mem.actual[0] === C_BAD_STE && !(mem.expected[0] === C_BAD_STE && dword(mem.expected, 1) === dword(mem.actual, 1))) return streamIdBeyondL2Span(c, dword(mem.actual, 1));
      // The model's C_BAD_STREAMID where the STE QEMU read there aborted the transaction without a record.
      return mem.expected[0] === C_BAD_STREAMID && mem.actual.every((b) => b === 0) && streamIdBeyondL2Span(c, dword(mem.expected, 1));
    },
  },
  {
    id: "smmuv3-l2ptr-low-bits-used",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "A level-1 stream table descriptor whose L2Ptr has bits set below the level-2 array's size (bit 5, RES0, or bits [5 + (Span - 1):6]): QEMU 7.2 adds them to the STE address (it clears bits [4:0] only); the model treats them as 0, so the array is aligned to its size. Seen where the STE fetch then aborts (F_STE_FETCH names another FetchAddr), or where the two STEs read say different things (the model's C_BAD_CD against QEMU's C_BAD_STE, repeated per access; the model's C_BAD_STE against nothing, QEMU's STE aborting quietly; a transfer the model's STE lets through and QEMU's refuses, with QEMU's per-access records filling its queue). Found by difftest (seed 4000, cases 3495: bit 5, 6136, 7107).",
    specification: "Arm SMMUv3 (IHI 0070), 5.1 L1STD: L2Ptr is bits [55:6] (bit 5 RES0), and bits L2Ptr[N:0], N = 5 + (Span - 1), are treated as 0 (the level-2 array is aligned to its size); 7.3.4 F_STE_FETCH.",
    qemu: "hw/arm/smmuv3-internal.h l1std_l2ptr(): word 0 masked with ~0x1f; hw/arm/smmuv3.c smmu_find_ste() adds l2_ste_offset * sizeof(STE) to it.",
    matches: (c) => {
      const fetch = fetchAddresses(c, F_STE_FETCH);
      if (fetch !== undefined) {
        const lowBits = l2PtrBitsBelowArray(c, fetch.streamId);
        return lowBits !== undefined && lowBits !== 0 && fetch.actual - fetch.expected === lowBits;
      }
      // Otherwise the two read different STEs and record what each found: an event-queue slot where one has a record
      // for such a StreamID and the other another record for it, or none (an STE that aborts without one).
      // After a transfer of such a StreamID: the event queue's producer stands elsewhere, QEMU's per-access records
      // may have filled its queue (GERROR.EVTQ_ABT_ERR), and what the transfer moved differs outside the queue.
      const transferred = c.trace.ops.slice(0, c.index).some((op) => op.op === "dma" && readsAnotherSte(c, op.rid));
      const at = registerRead(c, "smmuv3");
      if (at === SMMU_EVTQ_PROD) return transferred && differsOnlyIn(c, 0x000f_ffffn);
      if (at === SMMU_GERROR) return transferred && gerrorBitwise(c, (one) => differsOnlyIn(one, GERROR_EVTQ_ABT) && ((one.actual as bigint) & GERROR_EVTQ_ABT) !== 0n);
      const mem = eventQueueAnswer(c);
      if (mem === undefined) return transferred && memoryAnswers(c) !== undefined && lastDmaOf(c, (rid) => readsAnotherSte(c, rid));
      if (mem.actual.length < 8 || mem.expected.length < 8) return false;
      const sids = [mem.expected, mem.actual].filter((r) => r.some((b) => b !== 0)).map((r) => dword(r, 1));
      if (sids.length === 0 || sids.some((x) => x !== sids[0])) return false;
      return readsAnotherSte(c, sids[0]!);
    },
  },
  {
    id: "smmuv3-event-queue-base-written-while-enabled",
    vendor: "smmuv3",
    classification: "open",
    summary: "A guest that writes SMMU_EVENTQ_BASE while SMMU_CR0.EVENTQEN is set: the model ignores the write (events go on into the queue as it was); QEMU 7.2 takes the new base, and writes events there (or aborts, EVTQ_ABT_ERR, where nothing answers). Found by difftest (seed 4000, case 3542: a 4-byte write of the upper half).",
    specification: "Arm SMMUv3 (IHI 0070), 6.3.29 SMMU_EVENTQ_BASE: guarded by EVENTQEN, to be modified only while it is 0; a write while EVENTQEN == 1 is CONSTRAINED UNPREDICTABLE in SMMUv3.1 and earlier (the register takes any value, or the write is ignored) and IGNORED from SMMUv3.2.",
    qemu: "hw/arm/smmuv3.c smmu_writel() / smmu_writell(), A_EVENTQ_BASE and A_EVENTQ_BASE + 4: the value is stored whatever CR0 says (QEMU's AIDR reports SMMUv3.1).",
    matches: (c) => {
      if (!eventQueueBaseWrittenWhileEnabled(c)) return false;
      const at = registerRead(c, "smmuv3");
      // QEMU's EVTQ_PROD and GERROR.EVTQ_ABT_ERR follow the queue it moved; the model's records stay in the old one.
      if (at === SMMU_EVTQ_PROD) return differsOnlyIn(c, 0x000f_ffffn);
      if (at === SMMU_GERROR) return gerrorBitwise(c, (one) => differsOnlyIn(one, GERROR_EVTQ_ABT) && ((one.actual as bigint) & GERROR_EVTQ_ABT) !== 0n);
      const mem = eventQueueAnswer(c);
      return mem !== undefined && mem.actual.every((b) => b === 0);
    },
  },
  {
    id: "smmuv3-access-flag-not-checked",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "A stage-1 leaf with AF = 0 under a CD with AFFD = 0 (and no hardware update of the flag): the model blocks the transaction and records F_ACCESS; QEMU 7.2 never looks at AF and translates through the entry (a write then lands). Found by difftest (seed 4000, case 4465: a leaf rewritten as 0x3; re-run case 9711: a write landing).",
    specification: "Arm SMMUv3 (IHI 0070), 5.4 CD.AFFD (0: a translation table descriptor with AF = 0 causes an Access flag fault) and 7.3.15 F_ACCESS; 3.13 for hardware update of AF (HA), which the CD does not ask for.",
    qemu: "hw/arm/smmu-common.c smmu_ptw_64(): a page or block descriptor is checked for permissions only; the AF check against CD.AFFD arrived with the stage-2 work after 7.2.",
    matches: (c) => {
      const records = accessFlagRecords(c);
      if (records === 0) return false;
      if (registerRead(c, "smmuv3") === SMMU_EVTQ_PROD) {
        if (!differsOnlyIn(c, 0x000f_ffffn)) return false;
        const behind = queueIndexAhead({ ...c, expected: c.actual, actual: c.expected }, SMMU_EVTQ_BASE);
        return behind > 0 && behind <= records;
      }
      const mem = eventQueueAnswer(c);
      if (mem !== undefined) return mem.expected[0] === F_ACCESS && mem.actual[0] !== F_ACCESS && blockedTransferOf(c, mem.expected);
      return accessFlagWriteLanded(c);
    },
  },
  {
    id: "smmuv3-s1cdmax-not-ignored",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "A stage-1 STE with S1CDMax != 0 on an SMMU without substreams (SMMU_IDR1.SSIDSIZE = 0, as QEMU's and the model's emulated SMMU report): QEMU 7.2 finds the STE bad (C_BAD_STE); the field is IGNORED there and S1ContextPtr points at one CD, which the model uses (here an invalid CD: C_BAD_CD). The seed-2000 kind \"C_BAD_CD (model) against C_BAD_STE (QEMU)\". Found by difftest (seed 4000, case 5988).",
    specification: "Arm SMMUv3 (IHI 0070), 5.2 STE.S1CDMax: if SMMU_IDR1.SSIDSIZE == 0 the field is IGNORED (and the STE validity pseudocode checks S1CDMax against SSIDSIZE only when SSIDSIZE != 0); STE.S1Fmt, S1DSS likewise IGNORED.",
    qemu: "hw/arm/smmuv3.c decode_ste(): 'if (STE_S1CDMAX(ste) != 0)' logs \"SMMUv3 does not support multiple context descriptors yet\" (LOG_UNIMP) and goes to bad_ste (SMMU_EVT_C_BAD_STE), whatever IDR1.SSIDSIZE says.",
    matches: (c) => {
      const mem = eventQueueAnswer(c);
      if (mem === undefined || mem.actual.length < 8) return false;
      const sid = dword(mem.actual, 1);
      if (mem.actual[0] !== C_BAD_STE || mem.expected[0] === C_BAD_STE) return false;
      const at = steAddressOf(c, sid);
      if (at === undefined) return false;
      const dw0 = traceBytes(c.trace, c.index, at, 8);
      const config = (dw0[0]! >> 1) & 7;
      return (dw0[0]! & 1) === 1 && (config & 0b101) === 0b101 && dw0[7]! >> 3 !== 0 && c.trace.ops.slice(0, c.index).some((op) => op.op === "dma" && op.rid === sid && op.expect?.ok === false);
    },
  },
  {
    id: "smmuv3-fetch-in-qemu-ram-floor",
    vendor: "smmuv3",
    classification: "open",
    summary: "The QEMU target gives the machine at least 128 MiB of RAM, the model only the trace's (64 MiB in difftest's traces): an STE, CD or table descriptor fetched between the two ends aborts in the model (F_STE_FETCH, F_CD_FETCH, F_WALK_EABT) and reads zeros in QEMU, which goes on (a zero STE: C_BAD_STE, once per 4-byte access). A difference of the two machines the harness builds. Found by difftest (seed 4000, case 8095).",
    specification: "Arm SMMUv3 (IHI 0070), 7.3.4 F_STE_FETCH, 7.3.10 F_CD_FETCH, 7.3.12 F_WALK_EABT: a fetch that aborts is recorded with its address; what memory lies where is the platform's.",
    qemu: "packages/qemu/src/qemu-target.ts QemuTarget.start() passes -m max(trace RAM, 128 MiB) to QEMU; hw/arm/virt.c maps that RAM from 0x4000_0000, so QEMU reads zeros where the model's memory ends.",
    matches: (c) => {
      const mem = eventQueueAnswer(c);
      if (mem === undefined || mem.actual.length < 8) return false;
      return fetchAbortsInQemuRamFloor(c).has(dword(mem.actual[0] !== 0 ? mem.actual : mem.expected, 1));
    },
  },
  {
    id: "smmuv3-cd-fetch-address-in-input-address",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "An F_CD_FETCH record (the CD fetch aborted): QEMU 7.2 writes the CD's address into the InputAddr field (bytes 16–23) and leaves FetchAddr (bytes 24–31) zero; the model writes FetchAddr. Found by difftest (seed 4000).",
    specification: "Arm SMMUv3 (IHI 0070), 7.3.10 F_CD_FETCH: FetchAddr (bits [247:195], as in F_STE_FETCH 7.3.4) is the physical address used for the fetch; the record has no InputAddr.",
    qemu: "hw/arm/smmuv3.c smmuv3_record_event(), case SMMU_EVT_F_CD_FETCH: EVT_SET_ADDR() (words 4 and 5) where F_STE_FETCH uses EVT_SET_ADDR2() (words 6 and 7).",
    matches: (c) => {
      const mem = eventQueueAnswer(c);
      if (mem === undefined || mem.expected.length < 32 || mem.actual.length < 32) return false;
      if (mem.expected[0] !== 0x09 || mem.actual[0] !== 0x09) return false;
      for (let i = 0; i < 4; i++) if (dword(mem.expected, i) !== dword(mem.actual, i)) return false;
      // The model's FetchAddr is QEMU's InputAddr, and the other of each pair is zero.
      return dword(mem.expected, 4) === 0 && dword(mem.expected, 5) === 0 && dword(mem.actual, 6) === 0 && dword(mem.actual, 7) === 0 && dword(mem.expected, 6) === dword(mem.actual, 4) && dword(mem.expected, 7) === dword(mem.actual, 5);
    },
  },
];
