import { inRam, type DivergenceContext, type TraceOp } from "@viommu/trace";
import { amdWritePlacedByQemu, chunkSpansUnreplicatedSlot, invalidLevelOnPath, reservedBitsOnPath, unindexedBitsSet } from "./amdvi-qemu-walk.js";
import type { QemuDifference } from "./difference.js";
import { differsOnlyIn, dword, following, inRange, lastDeviceOp, lastRegisterWrite, memoryAnswers, registerRead, registerValue, traceBytes } from "./matchers.js";

const AMD_EVENT_LOG_BASE = 0x10;
const AMD_EVENT_TAIL = 0x2018;
const AMD_STATUS = 0x2020;
const AMD_PPR_TAIL = 0x2038;
const STATUS_EVENT_OVERFLOW_INT = 0x3n;
const STATUS_PPR_LOG_RUN = 0x80n;
const STATUS_EVENT_LOG_RUN = 0x8n;

/** The event log the guest programmed: base and bytes (EventLen 2^n entries of 16 bytes). */
function amdEventLog(c: DivergenceContext): { base: number; bytes: number } | undefined {
  const v = lastRegisterWrite(c, "amd-vi", AMD_EVENT_LOG_BASE);
  if (v === undefined) return undefined;
  return { base: Number(v & 0x000f_ffff_ffff_f000n), bytes: 16 * 2 ** Number((v >> 56n) & 0xfn) };
}

type AmdEventKind = "not-present" | "permission" | "interrupt" | "illegal-command" | "illegal-dte" | "other";

/**
 * The kind of a record: IO_PAGE_FAULT (event code 2) by its flags I (bit 19 of dword 1) and PR (bit 20); an
 * interrupt table that could not be read (PAGE_TAB_HARDWARE_ERROR, code 4, with I) is an interrupt's failure too.
 */
function amdEventKind(record: Uint8Array): AmdEventKind {
  const d1 = dword(record, 1);
  if (d1 >>> 28 === 5) return "illegal-command";
  if (d1 >>> 28 === 1) return "illegal-dte";
  if (d1 >>> 28 === 4 && d1 & (1 << 19)) return "interrupt";
  if (d1 >>> 28 !== 2) return "other";
  if (d1 & (1 << 19)) return "interrupt";
  return d1 & (1 << 20) ? "permission" : "not-present";
}

/**
 * Whether the expected bytes of a log read at operation `index` are the guest's own (it wrote them there itself, as
 * a driver clearing a consumed record does), not a record the IOMMU wrote.
 */
function guestWrote(c: DivergenceContext, index: number, addr: number, expect: Uint8Array): boolean {
  const written = traceBytes(c.trace, index, addr, expect.length);
  return written.every((b, i) => b === expect[i]);
}

/**
 * The record the model logged and QEMU did not, for a divergence in the event log: an event-log read that QEMU
 * left zero, or the tail (or overflow status) before the guest reads the records. Reads of bytes the guest wrote
 * into the log itself are not records.
 */
function amdMissingRecord(c: DivergenceContext): Uint8Array | undefined {
  const log = amdEventLog(c);
  if (log === undefined) return undefined;
  const inLog = (addr: number): boolean => addr >= log.base && addr < log.base + log.bytes;
  const mem = memoryAnswers(c);
  if (mem !== undefined) {
    if (!inLog(mem.addr)) return undefined;
    // What the slot holds when no record was written there: zero, or a COMPLETION_WAIT store aimed at the log.
    const untouched = mem.actual.every((b) => b === 0) || amdStoresOnly(c, mem.addr, mem.actual);
    return untouched && mem.expected.some((b, i) => b !== mem.actual[i]) ? mem.expected : undefined;
  }
  const at = registerRead(c, "amd-vi");
  const tailBehind = at === AMD_EVENT_TAIL && typeof c.expected === "bigint" && typeof c.actual === "bigint" && c.actual !== c.expected;
  const overflowMissing = at === AMD_STATUS && differsOnlyIn(c, STATUS_EVENT_OVERFLOW_INT | STATUS_PPR_LOG_RUN) && ((c.expected as bigint) & STATUS_EVENT_OVERFLOW_INT) !== 0n;
  if (!tailBehind && !overflowMissing) return undefined;
  const isRecord = (i: number, op: TraceOp): op is Extract<TraceOp, { op: "mem-read" }> =>
    op.op === "mem-read" && op.expect !== undefined && inLog(op.addr) && op.expect.some((b) => b !== 0) && !guestWrote(c, i, op.addr, op.expect);
  for (const { index, op } of following(c, 64)) if (isRecord(index, op)) return op.expect;
  for (let i = c.index - 1; i >= Math.max(0, c.index - 256); i--) {
    const op = c.trace.ops[i]!;
    if (isRecord(i, op)) return op.expect;
  }
  return undefined;
}

/**
 * The event log tail read ahead of QEMU's where the record behind it is not to be seen (the guest overwrote it
 * after consuming it): the halted-command entries take the halt's own record for it.
 */
function amdTailAheadUnseen(c: DivergenceContext): boolean {
  return registerRead(c, "amd-vi") === AMD_EVENT_TAIL && typeof c.expected === "bigint" && typeof c.actual === "bigint" && c.expected !== c.actual && amdMissingRecord(c) === undefined;
}

/**
 * Whether `bytes` at `addr` are exactly what the COMPLETION_WAIT stores the guest submitted before the divergence
 * (over the trace's own writes) left there, with at least one such store in range: a log slot QEMU wrote no
 * record into, though a store of the guest's landed in it.
 */
function amdStoresOnly(c: DivergenceContext, addr: number, bytes: Uint8Array): boolean {
  const submitted = amdSubmittedCommands(c);
  if (submitted === undefined) return false;
  const baseline = traceBytes(c.trace, c.index, addr, bytes.length);
  let stored = false;
  for (const { content } of submitted.order) {
    if (dword(content, 1) >>> 28 !== 1 || (dword(content, 0) & 1) === 0) continue;
    const at = completionStoreAddress(content) - addr;
    if (at < 0 || at + 8 > bytes.length) continue;
    baseline.set(content.subarray(8, 16), at);
    stored = true;
  }
  return stored && baseline.every((b, i) => b === bytes[i]);
}

/** The kind of event the model logged and QEMU did not (see amdMissingRecord). */
function amdMissingEvent(c: DivergenceContext): AmdEventKind | undefined {
  const record = amdMissingRecord(c);
  return record === undefined ? undefined : amdEventKind(record);
}

/** An event record's code (dword 1 bits 31:28) and 64-bit Address (QW1). */
function recordCode(record: Uint8Array): number {
  return dword(record, 1) >>> 28;
}
function recordAddress(record: Uint8Array): number {
  return dword(record, 2) + dword(record, 3) * 2 ** 32;
}

const AMD_CMD_BASE = 0x08;
const AMD_CMD_HEAD = 0x2000;
const AMD_CMD_TAIL = 0x2008;
const STATUS_CMD_RUN_COMW = 0x14n;

interface SubmittedCommands {
  readonly slots: Uint8Array[];
  readonly order: { slot: number; content: Uint8Array }[];
}

/** Reconstructions per trace and divergence: two entries ask for the same one. */
const submittedMemo = new WeakMap<readonly TraceOp[], Map<number, SubmittedCommands | undefined>>();

/**
 * The command buffer slots the guest submitted before the divergence, each as it was when a tail write first
 * covered it (what the IOMMU met there), by slot index. Only bytes inside a command buffer the guest placed are
 * kept (a trace writes megabytes of tables and fills; a catalogue lookup runs for every divergence).
 */
function amdSubmittedCommands(c: DivergenceContext): SubmittedCommands | undefined {
  let memo = submittedMemo.get(c.trace.ops);
  if (memo === undefined) submittedMemo.set(c.trace.ops, (memo = new Map()));
  if (memo.has(c.index)) return memo.get(c.index);
  const result = reconstructCommands(c);
  memo.set(c.index, result);
  return result;
}

function reconstructCommands(c: DivergenceContext): SubmittedCommands | undefined {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "amd-vi");
  if (block === undefined) return undefined;
  const buffers: { base: number; bytes: Uint8Array }[] = [];
  for (let i = 0; i < c.index; i++) {
    const op = c.trace.ops[i]!;
    if (op.op !== "mmio-write" || op.addr !== block.base + AMD_CMD_BASE) continue;
    const base = Number(op.value & 0x000f_ffff_ffff_f000n);
    const bytes = 16 * 2 ** Number((op.value >> 56n) & 0xfn);
    if (!buffers.some((b) => b.base === base && b.bytes.length >= bytes)) buffers.push({ base, bytes: new Uint8Array(bytes) });
  }
  if (buffers.length === 0) return undefined;
  const slots: Uint8Array[] = [];
  const order: { slot: number; content: Uint8Array }[] = [];
  let current: { base: number; bytes: Uint8Array } | undefined;
  let entries = 0;
  let tail = 0;
  for (let i = 0; i < c.index; i++) {
    const op = c.trace.ops[i]!;
    if (op.op === "mem-write" || op.op === "mem-fill") {
      const len = op.op === "mem-write" ? op.data.length : op.len;
      for (const b of buffers) {
        const from = Math.max(op.addr, b.base);
        const to = Math.min(op.addr + len, b.base + b.bytes.length);
        if (from >= to) continue;
        if (op.op === "mem-write") b.bytes.set(op.data.subarray(from - op.addr, to - op.addr), from - b.base);
        else b.bytes.fill(op.byte, from - b.base, to - b.base);
      }
    } else if (op.op === "mmio-write" && op.addr === block.base + AMD_CMD_BASE) {
      const base = Number(op.value & 0x000f_ffff_ffff_f000n);
      entries = 2 ** Number((op.value >> 56n) & 0xfn);
      current = buffers.find((b) => b.base === base && b.bytes.length >= entries * 16);
    } else if (op.op === "mmio-write" && op.addr === block.base + AMD_CMD_TAIL && current !== undefined) {
      const next = Number(op.value & 0x7fff0n) / 16;
      for (let s = tail, n = 0; s !== next && s < entries && n < 4096; s = (s + 1) % Math.max(entries, 1), n++) {
        const content = current.bytes.slice(s * 16, s * 16 + 16);
        if (slots[s] === undefined) slots[s] = content;
        if (order.length < 8192) order.push({ slot: s, content });
      }
      tail = next;
    }
  }
  return { slots, order };
}

/**
 * Whether the model halted command processing (its head register, read later in the trace, stops short of the
 * tail the guest wrote), and the store addresses of the COMPLETION_WAITs behind the command it halted at.
 */
function amdModelHalted(c: DivergenceContext): { storeAddresses: number[]; definedOpcode: boolean; command: Uint8Array | undefined; invalidationsBehind: boolean } | undefined {
  const submitted = amdSubmittedCommands(c);
  const tail = lastRegisterWrite(c, "amd-vi", AMD_CMD_TAIL);
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "amd-vi");
  if (submitted === undefined || tail === undefined || block === undefined) return undefined;
  const isHead = (op: TraceOp): boolean => op.op === "mmio-read" && op.addr === block.base + AMD_CMD_HEAD && op.expect !== undefined;
  const headRead = c.trace.ops.slice(c.index).find(isHead) ?? c.trace.ops.slice(0, c.index).findLast(isHead);
  let from: number;
  let halted: Uint8Array | undefined;
  const head = headRead !== undefined && headRead.op === "mmio-read" ? Number(headRead.expect! & 0x7fff0n) : undefined;
  if (head !== undefined && head !== Number(tail & 0x7fff0n)) {
    from = submitted.order.findIndex((o) => o.slot === head / 16);
    halted = submitted.slots[head / 16];
  } else {
    // A trace that never reads the head (a minimised one), or one whose last tail is where the model stopped: the
    // first submitted command the model certainly halts at, an undefined opcode or a COMPLETION_WAIT storing where
    // no memory is.
    from = submitted.order.findIndex((o) => {
      const op = dword(o.content, 1) >>> 28;
      if (op < 1 || op > 8 || reservedBitsSet(o.content)) return true;
      return op === 1 && (dword(o.content, 0) & 1) === 1 && !inRam(c.trace.header.machine, completionStoreAddress(o.content), 8);
    });
    if (from < 0) return undefined;
    halted = submitted.order[from]!.content;
  }
  const opcode = halted === undefined ? 0 : dword(halted, 1) >>> 28;
  // Every command submitted after the one the model halted at runs only in QEMU (even one the guest later wrote
  // into the halted slot itself); so does the halted one where QEMU executes it (reserved bits it lets through).
  const ranInQemu = submitted.order.slice(Math.max(from, 0)).map((o) => o.content);
  const behind = ranInQemu.slice(1);
  const storeAddresses = ranInQemu.filter((slot) => dword(slot, 1) >>> 28 === 1 && (dword(slot, 0) & 1) === 1).map(completionStoreAddress);
  // INVALIDATE_DEVTAB_ENTRY (2), INVALIDATE_IOMMU_PAGES (3), INVALIDATE_INTERRUPT_TABLE (5), INVALIDATE_IOMMU_ALL (8).
  const invalidationsBehind = behind.some((slot) => [2, 3, 5, 8].includes(dword(slot, 1) >>> 28));
  return { storeAddresses, definedOpcode: opcode >= 1 && opcode <= 8, command: halted, invalidationsBehind };
}

/**
 * Reserved bits of the commands whose formats are plain (spec x86.md B6, pub. 48882 §2.4), per dword: a command
 * with one set is certainly illegal to the model. COMPLETION_WAIT QW0[59:52]; INVALIDATE_DEVTAB_ENTRY and
 * INVALIDATE_INTERRUPT_TABLE all but DeviceID; INVALIDATE_IOMMU_PAGES QW0[31:20], QW0[59:48], QW1[11:3];
 * INVALIDATE_IOMMU_ALL all. The other opcodes are left to a head read.
 */
const RESERVED_DWORDS: ReadonlyMap<number, readonly number[]> = new Map([
  [1, [0, 0x0ff0_0000, 0, 0]],
  [2, [0xffff_0000, 0x0fff_ffff, 0xffff_ffff, 0xffff_ffff]],
  [3, [0xfff0_0000, 0x0fff_0000, 0x0000_0ff8, 0]],
  [5, [0xffff_0000, 0x0fff_ffff, 0xffff_ffff, 0xffff_ffff]],
  [8, [0xffff_ffff, 0x0fff_ffff, 0xffff_ffff, 0xffff_ffff]],
]);

function reservedBitsSet(command: Uint8Array): boolean {
  const masks = RESERVED_DWORDS.get(dword(command, 1) >>> 28);
  return masks !== undefined && masks.some((m, i) => (dword(command, i) & m) !== 0);
}

/** COMPLETION_WAIT's store address: dword 0 bits 31:3 and dword 1 bits 19:0 (8-byte aligned). */
function completionStoreAddress(command: Uint8Array): number {
  return ((dword(command, 0) & ~7) >>> 0) + (dword(command, 1) & 0xfffff) * 2 ** 32;
}

/** The COMPLETION_WAIT with S the model halted at because its store address reaches no memory, or undefined. */
function amdHaltedAtUnreachableStore(c: DivergenceContext, halted: { command: Uint8Array | undefined }): number | undefined {
  const command = halted.command;
  if (command === undefined || dword(command, 1) >>> 28 !== 1 || (dword(command, 0) & 1) === 0) return undefined;
  const store = completionStoreAddress(command);
  return inRam(c.trace.header.machine, store, 8) ? undefined : store;
}

/**
 * The model halted at a command and QEMU executed the commands behind it: the symptom the AMD-Vi command entries
 * share. Besides the head, Status and the stores behind the halt, a DMA after the halt may differ when
 * invalidations lay behind it: QEMU carried them out (and reads DTEs afresh), the model's passthrough device still
 * has the translation its last executed INVALIDATE_DEVTAB_ENTRY gave it.
 */
function amdRanPastHalt(c: DivergenceContext, halted: { storeAddresses: number[]; invalidationsBehind: boolean }): boolean {
  const at = registerRead(c, "amd-vi");
  if (at === AMD_CMD_HEAD) return true;
  if (at === AMD_STATUS) {
    // EventLogRun too where the guest never programmed the log (amdvi-event-log-never-programmed, same register).
    const logRun = amdWrote(c, AMD_EVENT_LOG_BASE) ? 0n : STATUS_EVENT_LOG_RUN;
    return differsOnlyIn(c, STATUS_CMD_RUN_COMW | STATUS_PPR_LOG_RUN | STATUS_EVENT_OVERFLOW_INT | logRun);
  }
  if (halted.invalidationsBehind && amdDmaAfterHalt(c)) return true;
  const mem = memoryAnswers(c);
  return mem !== undefined && halted.storeAddresses.some((a) => a >= mem.addr - 7 && a < mem.addr + mem.expected.length);
}

/**
 * A DMA outcome that differs, or a memory read after a DMA write (where the write may have landed, whatever DMAs
 * followed it) outside the event log: what a translation the model and QEMU disagree on shows.
 */
function amdDmaAfterHalt(c: DivergenceContext): boolean {
  if (c.op.op === "dma") return true;
  const mem = memoryAnswers(c);
  if (mem === undefined || !c.trace.ops.slice(0, c.index).some((op) => op.op === "dma" && op.dir === "write")) return false;
  const log = amdEventLog(c);
  return log === undefined || mem.addr + mem.expected.length <= log.base || mem.addr >= log.base + log.bytes;
}

/** The device table's base (MMIO 0x0000 bits 51:12; reset 0). */
function amdDeviceTableBase(c: DivergenceContext): number {
  return Number((lastRegisterWrite(c, "amd-vi", 0x00) ?? 0n) & 0x000f_ffff_ffff_f000n);
}

/** CommandBufferHeadPtr / TailPtr, EventLogHeadPtr / TailPtr: bits 18:4 (pub. 48882, MMIO 0x2000–0x2018). */
const RING_POINTER_FIELD = 0x7fff0n;

/** Whether the guest wrote the register at `offset` before the divergence. */
function amdWrote(c: DivergenceContext, offset: number): boolean {
  return lastRegisterWrite(c, "amd-vi", offset) !== undefined;
}

/**
 * A ring pointer register read (command head/tail, event head/tail) where QEMU returns what the guest wrote and the
 * model only the pointer field within its ring: the bits that differ lie outside bits 18:4, or at or beyond the
 * ring's length.
 */
function amdPointerAsWritten(c: DivergenceContext): boolean {
  const at = registerRead(c, "amd-vi");
  if (at === undefined || typeof c.expected !== "bigint" || typeof c.actual !== "bigint" || c.op.op !== "mmio-read") return false;
  // Command buffer (0x2000/0x2008, base 0x0008), event log (0x2010/0x2018, base 0x0010), PPR log (0x2030/0x2038, base 0x0038).
  const ring = at === AMD_CMD_HEAD || at === AMD_CMD_TAIL ? AMD_CMD_BASE : at === 0x2010 || at === AMD_EVENT_TAIL ? AMD_EVENT_LOG_BASE : at === 0x2030 || at === 0x2038 ? 0x38 : undefined;
  if (ring === undefined) return false;
  const written = lastRegisterWrite(c, "amd-vi", at);
  const width = (1n << BigInt(c.op.size * 8)) - 1n;
  if (written === undefined || (written & width) !== c.actual) return false;
  const base = lastRegisterWrite(c, "amd-vi", ring) ?? 0n;
  const ringBytes = 16n << ((base >> 56n) & 0xfn);
  const allowed = ~RING_POINTER_FIELD | (RING_POINTER_FIELD & ~(ringBytes - 1n));
  const d = c.expected ^ c.actual;
  return d !== 0n && (d & ~allowed) === 0n;
}

/** Known differences between the model's AMD-Vi and QEMU 7.2's amd-iommu. */
export const amdViDifferences: readonly QemuDifference[] = [
  {
    id: "amdvi-capability-registers",
    vendor: "amd-vi",
    classification: "open",
    summary: "The Extended Feature Registers report each implementation's features (QEMU 7.2: no guest translation, no PPR log, no GA); the PPR log the model's driver enabled from the model's EFR does not run in QEMU (Status.PPRLogRun), so a write to its tail pointer, which the model's running log ignores, QEMU stores as written (difftest seed 4000, case 6467).",
    specification: "AMD IOMMU specification (pub. 48882), MMIO 0x0030 Extended Feature Register and 0x01A0 EFR2: the features an implementation supports.",
    qemu: "hw/i386/amd_iommu.c amdvi_init(): AMDVI_DEFAULT_EXT_FEATURES; no PPR log.",
    matches: (c) => {
      const at = registerRead(c, "amd-vi");
      if (inRange(at, 0x30, 0x37) || inRange(at, 0x1a0, 0x1a7)) return true;
      if (at === AMD_PPR_TAIL && c.op.op === "mmio-read" && typeof c.actual === "bigint") {
        // Control: IommuEn (bit 0) and PPRLogEn (bit 13) run the model's PPR log, whose tail only the IOMMU moves.
        const control = registerValue(c.trace, c.index, "amd-vi", 0x18);
        const written = lastRegisterWrite(c, "amd-vi", AMD_PPR_TAIL);
        return (control & 0x2001n) === 0x2001n && written !== undefined && (written & ((1n << BigInt(c.op.size * 8)) - 1n)) === c.actual;
      }
      return at === AMD_STATUS && differsOnlyIn(c, STATUS_PPR_LOG_RUN);
    },
  },
  {
    id: "amdvi-command-base-low-dword-ignored",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A 4-byte write to the low dword of the Command Buffer Base Address Register moving the buffer where no memory is: the model fetches commands from the new base, fails, logs COMMAND_HARDWARE_ERROR and halts; QEMU 7.2 keeps reading commands from the old base (its internal base follows only 8-byte writes and writes to the upper dword).",
    specification: "AMD IOMMU specification (pub. 48882), MMIO registers: aligned 4-byte and 8-byte accesses are allowed, so a 64-bit register may be written as two 32-bit halves; MMIO 0x0008 ComBase[51:12] lies partly in the low dword. §2.5.7 COMMAND_HARDWARE_ERROR for a command fetch that gets a bus error.",
    qemu: "hw/i386/amd_iommu.c amdvi_mmio_write(), case AMDVI_MMIO_COMMAND_BASE: amdvi_handle_cmdbase_write() runs only for an 8-byte write or one to offset 0x0C, so s->cmdbuf keeps the old address while the register reads back the new one.",
    matches: (c) => {
      const block = c.trace.header.machine.iommus.find((b) => b.vendor === "amd-vi");
      if (block === undefined) return false;
      let last: TraceOp | undefined;
      for (let i = c.index - 1; i >= 0 && last === undefined; i--) {
        const op = c.trace.ops[i]!;
        if (op.op === "mmio-write" && (op.addr === block.base + AMD_CMD_BASE || op.addr === block.base + AMD_CMD_BASE + 4)) last = op;
      }
      if (last === undefined || last.op !== "mmio-write" || last.size !== 4 || last.addr !== block.base + AMD_CMD_BASE) return false;
      const base = Number(last.value & 0xffff_f000n);
      if (inRam(c.trace.header.machine, base, 16)) return false;
      const record = amdMissingRecord(c);
      if (record !== undefined) return recordCode(record) === 6 && recordAddress(record) >= base && recordAddress(record) < base + 0x8_0000;
      return amdTailAheadUnseen(c) || registerRead(c, "amd-vi") === AMD_CMD_HEAD || (registerRead(c, "amd-vi") === AMD_STATUS && differsOnlyIn(c, STATUS_CMD_RUN_COMW | STATUS_PPR_LOG_RUN | STATUS_EVENT_OVERFLOW_INT));
    },
  },
  {
    id: "amdvi-address-beyond-mode-translated",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A DMA to an IOVA with bits set above the range the DTE's Mode translates (Mode 3: bit 39 and up), or in the bits a level skipped by a PDE would index: the model blocks it (IO_PAGE_FAULT), QEMU 7.2 indexes each level with the address modulo 512 entries and performs the transfer at the address the low bits give. Found by difftest (seed 4000, cases 203, 401, 574 and others).",
    specification: "AMD IOMMU specification (pub. 48882), I/O page tables for host translation: the DTE's Mode sets the levels and so the address bits translated; address bits above them (and those a skipped level would index) must be zero, or the request is aborted with IO_PAGE_FAULT.",
    qemu: "hw/i386/amd_iommu.c amdvi_page_walk(): each level's index is (addr >> (3 + 9 * level)) & 0x1FF and the address bits above the top level are never looked at.",
    matches: (c) => amdWritePlacedByQemu(c)?.some((ch) => unindexedBitsSet(ch.leaf, ch.iova)) === true,
  },
  {
    id: "amdvi-leaf-present-bit-ignored",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A DMA write through a leaf PTE that is not all zero but has PR = 0: the model blocks it (IO_PAGE_FAULT, not present), QEMU 7.2 translates through the entry and the write lands at the address it names (with a Next Level 7 size, over the rest of the access too, where the model wrote the next page through its own slot). Found by difftest (seed 4000, cases 1058, 7715).",
    specification: "AMD IOMMU specification (pub. 48882), I/O page tables: PR (bit 0) = 0 marks an entry not present; a request that meets one is target-aborted and logged as IO_PAGE_FAULT with PR = 0.",
    qemu: "hw/i386/amd_iommu.c amdvi_page_walk(): the present and permission test runs at the top of its loop for the DTE and each PDE it descends through; the entry the loop stops at (Next Level 0 or 7) becomes the translation unchecked, only an all-zero entry ending the walk (amdvi_get_pte_entry() returning 0).",
    matches: (c) => amdWritePlacedByQemu(c)?.some((ch) => (ch.leaf.lo & 1) === 0) === true,
  },
  {
    id: "amdvi-table-entry-reserved-bits-ignored",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A DMA write whose walk meets a reserved bit set in a page-table entry (bits 58:52 of the leaf PTE, 60:52 of a PDE): the model blocks it (IO_PAGE_FAULT with RZ = 1), QEMU 7.2 ignores the bits and the write lands. Found by difftest (seed 4000, cases 1767 and 2159).",
    specification: "AMD IOMMU specification (pub. 48882), I/O page tables: reserved bits of a PDE or PTE must be zero; a request whose walk meets one set is target-aborted and logged as IO_PAGE_FAULT with RZ = 1.",
    qemu: "hw/i386/amd_iommu.c amdvi_page_walk(): no reserved-bit test on any page-table entry; addresses are masked with AMDVI_DEV_PT_ROOT_MASK and used.",
    matches: (c) => amdWritePlacedByQemu(c)?.some((ch) => reservedBitsOnPath(ch.leaf)) === true,
  },
  {
    id: "amdvi-invalid-next-level-followed",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A DMA write whose walk meets a Next Level the format does not allow where it stands (a PDE whose Next Level is not below its own table's level, a Next Level 7 page of a size its table's level cannot map, a page at level 6): the model blocks it (IO_PAGE_FAULT with RZ = 1), QEMU 7.2 follows the entry (descending into the named table at the level it names) and the write lands. Found by difftest (seed 4000, case 3732: a level-2 PDE naming a level-3 table). Where the walk never ends QEMU hangs instead (amdvi-page-walk-next-level-not-lower-hangs).",
    specification: "AMD IOMMU specification (pub. 48882), I/O page tables: a PDE's Next Level is below its table's level (levels may be skipped, not repeated or climbed); a Next Level 7 entry encodes a page at least its table's slot size and smaller than the level above's; an invalid level encoding is reported as IO_PAGE_FAULT with RZ = 1 and the request target-aborted.",
    qemu: "hw/i386/amd_iommu.c amdvi_page_walk(): each entry's Next Level becomes the level unchecked (`level = get_pte_translation_mode(pte)` while 0 < level < 7), and a Next Level 7 leaf's size comes from pte_override_page_mask() whatever the level.",
    matches: (c) => amdWritePlacedByQemu(c)?.some((ch) => invalidLevelOnPath(ch.leaf)) === true,
  },
  {
    id: "amdvi-unreplicated-large-page",
    vendor: "amd-vi",
    classification: "open",
    summary: "A DMA crossing from the 4 KiB page of a Next Level 7 PTE (a page larger than its table's slots, here 8 KiB) into a page of the same large page whose own slot the guest did not fill with the same entry: the model translates each 4 KiB page through its own slot (not present: that part blocked; another page: written there), QEMU 7.2 moves the whole part of the access inside the large page with the first slot's translation (a read too, so edu then writes what QEMU read). Found by difftest (seed 4000, cases 378, 467, 8265, 8563).",
    specification: "AMD IOMMU specification (pub. 48882), I/O page tables, Next Level 7 (page size encoded in the address field): software replicates the PTE in every slot the page spans (Linux's iommu_v1_map_pages() writes PAGE_SIZE_PTE_COUNT copies); which slot an implementation reads, or whether it caches the large page from one, is its own, so slots that disagree give no defined result.",
    qemu: "hw/i386/amd_iommu.c amdvi_page_walk(): the page mask of a Next Level 7 leaf comes from pte_override_page_mask() and becomes the IOMMUTLBEntry's addr_mask; the memory core (address_space_translate_iommu()) then carries the access up to the end of that page with the one translation.",
    matches: (c) => amdWritePlacedByQemu(c)?.some((ch) => chunkSpansUnreplicatedSlot(c.trace, c.index, ch)) === true,
  },
  {
    id: "amdvi-illegal-command-continues",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "An undefined command opcode: QEMU logs no ILLEGAL_COMMAND_ERROR and goes on executing the commands behind it (a COMPLETION_WAIT behind it stores, the head passes it, CmdBufRun stays set); the model logs the error and stops at it.",
    specification: "AMD IOMMU specification (pub. 48882), command buffer: a command the IOMMU cannot execute is logged as ILLEGAL_COMMAND_ERROR and command processing halts at it (Status.CmdBufRun clears, the head register keeps pointing at it) until software restarts the buffer.",
    qemu: "hw/i386/amd_iommu.c amdvi_cmdbuf_exec(): an unknown opcode reaches the default case, which only traces it; amdvi_cmdbuf_run() then advances cmdbuf_head and keeps going (observed on 7.2.22: no event, the head passes the command).",
    matches: (c) => {
      const halted = amdModelHalted(c);
      return halted !== undefined && !halted.definedOpcode && (amdRanPastHalt(c, halted) || amdMissingEvent(c) === "illegal-command" || amdTailAheadUnseen(c));
    },
  },
  {
    id: "amdvi-completion-store-fault-unlogged",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A COMPLETION_WAIT whose store address reaches no memory: the model logs COMMAND_HARDWARE_ERROR with the store address and halts command processing at it; QEMU 7.2 drops the failed store silently and executes the commands behind it.",
    specification: "AMD IOMMU specification (pub. 48882) §2.5.7 COMMAND_HARDWARE_ERROR: logged when the IOMMU gets a bus error (master or target abort, data error) on a command-buffer access, fetching a command or writing a COMPLETION_WAIT store; Address is the system physical address it attempted; command processing halts (MMIO 0x2020 Status.CmdBufRun clears). VirtualBox's DevIommuAmd.cpp (iommuAmdR3ProcessCmd) reads it the same way.",
    qemu: "hw/i386/amd_iommu.c amdvi_completion_wait(): a failed dma_memory_write() of the store only calls trace_amdvi_completion_wait_fail(); amdvi_cmdbuf_run() then advances cmdbuf_head and keeps going.",
    matches: (c) => {
      const halted = amdModelHalted(c);
      const store = halted === undefined ? undefined : amdHaltedAtUnreachableStore(c, halted);
      // A command with reserved bits set is illegal before its store is tried (amdvi-command-reserved-bits-accepted).
      if (halted === undefined || store === undefined || (halted.command !== undefined && reservedBitsSet(halted.command))) return false;
      const record = amdMissingRecord(c);
      if (record !== undefined) return recordCode(record) === 6 && recordAddress(record) === store;
      return amdRanPastHalt(c, halted) || amdTailAheadUnseen(c);
    },
  },
  {
    id: "amdvi-command-reserved-bits-accepted",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A command with a defined opcode but nonzero reserved bits (INVALIDATE_IOMMU_PAGES dword 0 bits 31:20, COMPLETION_WAIT bits 59:52, among others): the model logs ILLEGAL_COMMAND_ERROR and halts at it; QEMU 7.2 executes it (a COMPLETION_WAIT still stores) and the commands behind it.",
    specification: "AMD IOMMU specification (pub. 48882) §2.4 commands (reserved fields are zero) and §2.5.6 ILLEGAL_COMMAND_ERROR: logged for an unsupported opcode or a command with reserved bits set, Address the command's; command processing halts at it (Status.CmdBufRun clears) until software restarts the buffer. Real hardware does log it for stale reserved bits (FreeBSD review D53692, PR 270966); VirtualBox's DevIommuAmd.cpp rejects a COMPLETION_WAIT with reserved bits the same way.",
    qemu: "hw/i386/amd_iommu.c amdvi_cmdbuf_exec() and the per-command handlers (amdvi_completion_wait(), amdvi_inval_pages(), ...): at most a logged event for some reserved fields, never a halt; amdvi_cmdbuf_run() advances cmdbuf_head past the command.",
    matches: (c) => {
      const halted = amdModelHalted(c);
      if (halted === undefined || !halted.definedOpcode) return false;
      // A legal COMPLETION_WAIT storing where no memory is fails at its store instead (amdvi-completion-store-fault-unlogged).
      if (amdHaltedAtUnreachableStore(c, halted) !== undefined && !(halted.command !== undefined && reservedBitsSet(halted.command))) return false;
      return amdRanPastHalt(c, halted) || amdMissingEvent(c) === "illegal-command" || amdTailAheadUnseen(c);
    },
  },
  {
    id: "amdvi-dte-checked-at-invalidation",
    vendor: "amd-vi",
    classification: "open",
    summary: "A DTE with V = 1 and a reserved bit or encoding set, invalidated by the guest with no request from the device: the model's VMM, which must configure the passthrough device's host attachment when the guest invalidates its DTE, blocks it and logs ILLEGAL_DEV_TABLE_ENTRY then (Address = the DTE's); QEMU reads and checks a DTE only when a request uses it, and 7.2.22 logged no record even when a DMA followed (tried with the seed-2000 trace plus a DMA).",
    specification: "AMD IOMMU specification (pub. 48882) §2.5.2 ILLEGAL_DEV_TABLE_ENTRY: logged for a request whose DTE has reserved bits set or illegal values; when the IOMMU reads and checks a DTE (the device table may be cached, INVALIDATE_DEVTAB_ENTRY §2.4.2 bounds it) is the implementation's. A VMM cannot see a passthrough device's requests, so the model reports the DTE when the guest invalidates it (packages/amd-vi/src/vmm/device-entry-handler.ts).",
    qemu: "hw/i386/amd_iommu.c amdvi_get_dte() / amdvi_validate_dte(): the DTE is read and checked on each translation; amdvi_inval_devtab_entry() only traces.",
    matches: (c) => {
      const record = amdMissingRecord(c);
      if (record === undefined || recordCode(record) !== 1) return false;
      const deviceId = dword(record, 0) & 0xffff;
      return recordAddress(record) === amdDeviceTableBase(c) + deviceId * 32;
    },
  },
  {
    id: "amdvi-no-event-for-missing-pte",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A DMA whose walk meets a not-present (all-zero) entry below the table root is blocked without an IO_PAGE_FAULT event.",
    specification: "AMD IOMMU specification (pub. 48882), Event Log: IO_PAGE_FAULT is logged for a request that fails translation (page not present) unless DTE.SA suppresses it.",
    qemu: "hw/i386/amd_iommu.c amdvi_page_walk(): after amdvi_get_pte_entry() 'if (!pte) return;' leaves the walk with no translation and no amdvi_page_fault() call (rewritten around fetch_pte() after 7.2).",
    matches: (c) => amdMissingEvent(c) === "not-present",
  },
  {
    id: "amdvi-no-event-for-leaf-permission",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A DMA write through a read-only leaf entry is blocked without an IO_PAGE_FAULT event: QEMU checks permissions only on entries it descends through, never on the leaf.",
    specification: "AMD IOMMU specification (pub. 48882), Event Log: IO_PAGE_FAULT with PR = 1 (and RW) for a permission violation; the leaf PTE's IR/IW take part in the access check.",
    qemu: "hw/i386/amd_iommu.c amdvi_page_walk(): the present/permission test runs at the top of the loop for the entry being descended through; the leaf's permissions only become ret->perm, so the memory core drops the write silently.",
    matches: (c) => amdMissingEvent(c) === "permission",
  },
  {
    id: "amdvi-no-event-for-interrupt",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "An MSI blocked by interrupt remapping is dropped without an IO_PAGE_FAULT (I = 1) event, or without a PAGE_TAB_HARDWARE_ERROR (I = 1) when its interrupt table lies where no memory is.",
    specification: "AMD IOMMU specification (pub. 48882), interrupt remapping: an interrupt request that fails remapping is target-aborted and logged as IO_PAGE_FAULT with the I flag.",
    qemu: "hw/i386/amd_iommu.c amdvi_mem_ir_write(): a failed amdvi_int_remap_msi() is reported with error_report_once() under '/* TODO: log the event using IOMMU log event interface */' and dropped.",
    matches: (c) => amdMissingEvent(c) === "interrupt",
  },
  {
    id: "amdvi-no-event-for-table-fetch-error",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A DMA whose walk must read a page-table entry where no memory is (a PDE pointing beyond RAM) is blocked without a PAGE_TAB_HARDWARE_ERROR event; the model logs one naming the entry's address.",
    specification: "AMD IOMMU specification (pub. 48882) §2.5.5 PAGE_TAB_HARDWARE_ERROR: logged when the IOMMU gets a bus error (master or target abort, data error) reading a page-table entry for a request, Address the entry's system physical address; the request is target-aborted.",
    qemu: "hw/i386/amd_iommu.c amdvi_get_pte_entry() calls amdvi_log_pagetab_error() on a failed dma_memory_read(), which drops it: amdvi_log_event() returns at once because amdvi_test_mask() ORs where it means AND (always true for EVT_OVF), so 7.2 logs no event at all.",
    matches: (c) => {
      const record = amdMissingRecord(c);
      return record !== undefined && recordCode(record) === 4 && (dword(record, 1) & (1 << 19)) === 0 && !inRam(c.trace.header.machine, recordAddress(record), 8);
    },
  },
  {
    id: "amdvi-no-event-for-devtab-fetch-error",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A request whose DTE lies where no memory is (a device table base moved beyond RAM, e.g. by a 4-byte write to its low dword) is blocked without a DEV_TAB_HARDWARE_ERROR event; the model logs one naming the DTE's address. QEMU 7.2 also keeps its old device table on a 4-byte low-dword write, as it does for the command buffer.",
    specification: "AMD IOMMU specification (pub. 48882) §2.5.4 DEV_TAB_HARDWARE_ERROR: logged when the IOMMU gets a bus error reading a DTE for a request, Address the DTE's system physical address; the request is target-aborted.",
    qemu: "hw/i386/amd_iommu.c amdvi_get_dte() calls amdvi_log_devtab_error() on a failed dma_memory_read(), which amdvi_log_event() drops (amdvi_test_mask() ORs where it means AND); amdvi_mmio_write() runs amdvi_handle_devtab_write() only for an 8-byte write or one to the upper dword.",
    matches: (c) => {
      const record = amdMissingRecord(c);
      return record !== undefined && recordCode(record) === 3 && !inRam(c.trace.header.machine, recordAddress(record), 32);
    },
  },
  {
    id: "amdvi-no-event-for-illegal-dte",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A DMA or MSI through a DTE with V = 1 and a reserved bit or encoding set: the model blocks it and logs ILLEGAL_DEV_TABLE_ENTRY with the request's address; QEMU 7.2 logs no record.",
    specification: "AMD IOMMU specification (pub. 48882) §2.5.2 ILLEGAL_DEV_TABLE_ENTRY: logged for a request whose DTE has reserved bits set or illegal values (DeviceID, the request's address, RW, I, TR), and the request is target-aborted.",
    qemu: "hw/i386/amd_iommu.c amdvi_get_dte() / amdvi_validate_dte() call amdvi_log_illegaldevtab_error() for reserved DTE bits, which amdvi_log_event() drops: amdvi_test_mask() ORs where it means AND, so its overflow test is always true.",
    matches: (c) => {
      const record = amdMissingRecord(c);
      if (record === undefined || recordCode(record) !== 1) return false;
      const deviceId = dword(record, 0) & 0xffff;
      const address = recordAddress(record);
      // The request the model refused: a DMA (its IOVA) or an MSI (its address) of that requester before this.
      return c.trace.ops.slice(0, c.index).some((op) => (op.op === "dma" && op.rid === deviceId && address >= op.iova && address < op.iova + Math.max(op.dir === "read" ? op.len : op.data.length, 1)) || (op.op === "msi" && op.rid === deviceId));
    },
  },
  {
    id: "amdvi-overflow-for-unlogged-event",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "An event the model logs and QEMU 7.2 does not (any of the amdvi-no-event-* entries) arriving when the guest left the event log full: the model sets Status.EventOverflow and drops the record, QEMU sets nothing.",
    specification: "AMD IOMMU specification (pub. 48882) MMIO 0x2020 Status.EventOverflow: set when an event is to be written and the event log is full (the tail would reach the head); the event is lost.",
    qemu: "hw/i386/amd_iommu.c amdvi_log_event() returns before logging or setting an overflow: amdvi_test_mask() ORs where it means AND, so its EVT_OVF test is always true (see the amdvi-no-event-* entries).",
    matches: (c) => {
      if (registerRead(c, "amd-vi") !== AMD_STATUS || !differsOnlyIn(c, STATUS_EVENT_OVERFLOW_INT | STATUS_PPR_LOG_RUN)) return false;
      if (((c.expected as bigint) & 1n) === 0n || ((c.actual as bigint) & 1n) !== 0n) return false;
      // A request that can fault came before, and the guest moved the event log head (a full log is its doing).
      return lastDeviceOp(c) !== undefined && amdWrote(c, 0x2010);
    },
  },
  {
    id: "amdvi-ring-pointer-as-written",
    vendor: "amd-vi",
    classification: "open",
    summary: "A command-buffer, event-log or PPR-log head/tail register the guest wrote with bits outside the pointer field (bits 18:4), or with an offset beyond its ring: QEMU reads back the value as written, the model the pointer field reduced to its ring.",
    specification: "AMD IOMMU specification (pub. 48882), MMIO 0x2000–0x2018 Command Buffer / Event Log and 0x2030–0x2038 PPR Log Head and Tail Pointer Registers: the pointer is bits 18:4, the other bits are reserved; an offset beyond the ring the base register sizes is a software error whose effect is not defined.",
    qemu: "hw/i386/amd_iommu.c amdvi_mmio_write(): amdvi_writeq()/amdvi_writel() store the written value whole (these registers have no read-only mask, amdvi_init()); only the internal copies (cmdbuf_tail, evtlog_head, ...) are masked.",
    matches: amdPointerAsWritten,
  },
  {
    id: "amdvi-event-log-never-programmed",
    vendor: "amd-vi",
    classification: "open",
    summary: "EventLogEn set while the guest never wrote the Event Log Base Address Register: QEMU sets Status.EventLogRun (a log at 0 of EventLen 0), the model does not. EventLen 0 is a reserved length, so neither is wrong; but the model runs the same log once the guest writes the register's reset value 0 (see the model findings).",
    specification: "AMD IOMMU specification (pub. 48882), MMIO 0x0010 Event Log Base Address Register (reset 0; EventLen below 1000b reserved) and MMIO 0x2020 Status.EventLogRun.",
    qemu: "hw/i386/amd_iommu.c amdvi_handle_control_write(): evtlog_enabled = IommuEn && EventLogEn sets AMDVI_MMIO_STATUS_EVT_RUN whatever the log.",
    matches: (c) => {
      if (registerRead(c, "amd-vi") !== AMD_STATUS || amdWrote(c, AMD_EVENT_LOG_BASE)) return false;
      return differsOnlyIn(c, STATUS_EVENT_LOG_RUN | STATUS_EVENT_OVERFLOW_INT | STATUS_PPR_LOG_RUN) && ((c.actual as bigint) & STATUS_EVENT_LOG_RUN) !== 0n && ((c.expected as bigint) & STATUS_EVENT_LOG_RUN) === 0n;
    },
  },
];
