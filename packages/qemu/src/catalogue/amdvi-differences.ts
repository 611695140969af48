import type { DivergenceContext, TraceOp } from "@viommu/trace";
import type { QemuDifference } from "./difference.js";
import { differsOnlyIn, dword, following, inRange, lastRegisterWrite, memoryAnswers, registerRead } from "./matchers.js";

const AMD_EVENT_LOG_BASE = 0x10;
const AMD_EVENT_TAIL = 0x2018;
const AMD_STATUS = 0x2020;
const STATUS_EVENT_OVERFLOW_INT = 0x3n;
const STATUS_PPR_LOG_RUN = 0x80n;

/** The event log the guest programmed: base and bytes (EventLen 2^n entries of 16 bytes). */
function amdEventLog(c: DivergenceContext): { base: number; bytes: number } | undefined {
  const v = lastRegisterWrite(c, "amd-vi", AMD_EVENT_LOG_BASE);
  if (v === undefined) return undefined;
  return { base: Number(v & 0x000f_ffff_ffff_f000n), bytes: 16 * 2 ** Number((v >> 56n) & 0xfn) };
}

type AmdEventKind = "not-present" | "permission" | "interrupt" | "illegal-command" | "illegal-dte" | "other";

/** The kind of an IO_PAGE_FAULT record (event code 2): flags I (bit 19 of dword 1), PR (bit 20). */
function amdEventKind(record: Uint8Array): AmdEventKind {
  const d1 = dword(record, 1);
  if (d1 >>> 28 === 5) return "illegal-command";
  if (d1 >>> 28 === 1) return "illegal-dte";
  if (d1 >>> 28 !== 2) return "other";
  if (d1 & (1 << 19)) return "interrupt";
  return d1 & (1 << 20) ? "permission" : "not-present";
}

/**
 * The kind of event the model logged and QEMU did not, for a divergence in the event log: an event-log read that
 * QEMU left zero, or the tail (or overflow status) before the guest reads the records.
 */
function amdMissingEvent(c: DivergenceContext): AmdEventKind | undefined {
  const log = amdEventLog(c);
  if (log === undefined) return undefined;
  const inLog = (addr: number): boolean => addr >= log.base && addr < log.base + log.bytes;
  const mem = memoryAnswers(c);
  if (mem !== undefined) return inLog(mem.addr) && mem.actual.every((b) => b === 0) && mem.expected.some((b) => b !== 0) ? amdEventKind(mem.expected) : undefined;
  const at = registerRead(c, "amd-vi");
  const tailBehind = at === AMD_EVENT_TAIL && typeof c.expected === "bigint" && typeof c.actual === "bigint" && c.actual !== c.expected;
  const overflowMissing = at === AMD_STATUS && differsOnlyIn(c, STATUS_EVENT_OVERFLOW_INT | STATUS_PPR_LOG_RUN) && ((c.expected as bigint) & STATUS_EVENT_OVERFLOW_INT) !== 0n;
  if (!tailBehind && !overflowMissing) return undefined;
  for (const { op } of following(c, 64)) if (op.op === "mem-read" && op.expect !== undefined && inLog(op.addr) && op.expect.some((b) => b !== 0)) return amdEventKind(op.expect);
  for (let i = c.index - 1; i >= Math.max(0, c.index - 256); i--) {
    const op = c.trace.ops[i]!;
    if (op.op === "mem-read" && op.expect !== undefined && inLog(op.addr) && op.expect.some((b) => b !== 0)) return amdEventKind(op.expect);
  }
  return undefined;
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
function amdModelHalted(c: DivergenceContext): { storeAddresses: number[]; definedOpcode: boolean } | undefined {
  const submitted = amdSubmittedCommands(c);
  const tail = lastRegisterWrite(c, "amd-vi", AMD_CMD_TAIL);
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "amd-vi");
  if (submitted === undefined || tail === undefined || block === undefined) return undefined;
  const isHead = (op: TraceOp): boolean => op.op === "mmio-read" && op.addr === block.base + AMD_CMD_HEAD && op.expect !== undefined;
  const headRead = c.trace.ops.slice(c.index).find(isHead) ?? c.trace.ops.slice(0, c.index).findLast(isHead);
  if (headRead === undefined || headRead.op !== "mmio-read") return undefined;
  const head = Number(headRead.expect! & 0x7fff0n);
  if (head === Number(tail & 0x7fff0n)) return undefined;
  const halted = submitted.slots[head / 16];
  const opcode = halted === undefined ? 0 : dword(halted, 1) >>> 28;
  // Every command submitted after the one the model halted at runs only in QEMU (even one the guest later wrote
  // into the halted slot itself).
  const from = submitted.order.findIndex((o) => o.slot === head / 16);
  const behind = submitted.order.slice(from + 1).map((o) => o.content);
  // COMPLETION_WAIT (opcode 1) with S: the store address is dword 0 bits 31:3 and dword 1 bits 19:0.
  const storeAddresses = behind.filter((slot) => dword(slot, 1) >>> 28 === 1 && (dword(slot, 0) & 1) === 1).map((slot) => (dword(slot, 0) & ~7) + (dword(slot, 1) & 0xfffff) * 2 ** 32);
  return { storeAddresses, definedOpcode: opcode >= 1 && opcode <= 8 };
}

/** The model halted at a command and QEMU executed the commands behind it: the symptom both AMD-Vi entries share. */
function amdRanPastHalt(c: DivergenceContext, halted: { storeAddresses: number[] }): boolean {
  const at = registerRead(c, "amd-vi");
  if (at === AMD_CMD_HEAD) return true;
  if (at === AMD_STATUS) return differsOnlyIn(c, STATUS_CMD_RUN_COMW | STATUS_PPR_LOG_RUN | STATUS_EVENT_OVERFLOW_INT);
  const mem = memoryAnswers(c);
  return mem !== undefined && halted.storeAddresses.some((a) => a >= mem.addr - 7 && a < mem.addr + mem.expected.length);
}

const STATUS_EVENT_LOG_RUN = 0x8n;
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
  const ring = at === AMD_CMD_HEAD || at === AMD_CMD_TAIL ? AMD_CMD_BASE : at === 0x2010 || at === AMD_EVENT_TAIL ? AMD_EVENT_LOG_BASE : undefined;
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
    summary: "The Extended Feature Registers report each implementation's features (QEMU 7.2: no guest translation, no PPR log, no GA); the PPR log the model's driver enabled from the model's EFR does not run in QEMU (Status.PPRLogRun).",
    specification: "AMD IOMMU specification (pub. 48882), MMIO 0x0030 Extended Feature Register and 0x01A0 EFR2: the features an implementation supports.",
    qemu: "hw/i386/amd_iommu.c amdvi_init(): AMDVI_DEFAULT_EXT_FEATURES; no PPR log.",
    matches: (c) => {
      const at = registerRead(c, "amd-vi");
      if (inRange(at, 0x30, 0x37) || inRange(at, 0x1a0, 0x1a7)) return true;
      return at === AMD_STATUS && differsOnlyIn(c, STATUS_PPR_LOG_RUN);
    },
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
      return halted !== undefined && !halted.definedOpcode && (amdRanPastHalt(c, halted) || amdMissingEvent(c) === "illegal-command");
    },
  },
  {
    id: "amdvi-command-reserved-bits-accepted",
    vendor: "amd-vi",
    classification: "open",
    summary: "A command with a defined opcode but nonzero reserved bits (INVALIDATE_IOMMU_PAGES dword 0 bits 31:20, among others): the model logs ILLEGAL_COMMAND_ERROR and halts, QEMU 7.2 executes it and the commands behind it. Unconfirmed classification: whether the IOMMU must reject it is to be checked against pub. 48882.",
    specification: "AMD IOMMU specification (pub. 48882), command formats: reserved fields must be written as zero; ILLEGAL_COMMAND_ERROR covers commands the IOMMU cannot execute. Whether a reserved bit makes a command illegal, or is ignored, is to be confirmed.",
    qemu: "hw/i386/amd_iommu.c amdvi_cmdbuf_exec() and the per-command handlers: which reserved fields each checks (7.2's handling of the INVALIDATE_IOMMU_PAGES dword 0 reserved field lets it through).",
    matches: (c) => {
      const halted = amdModelHalted(c);
      if (halted === undefined || !halted.definedOpcode) return false;
      return amdRanPastHalt(c, halted) || amdMissingEvent(c) === "illegal-command";
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
    summary: "An MSI blocked by interrupt remapping is dropped without an IO_PAGE_FAULT (I = 1) event.",
    specification: "AMD IOMMU specification (pub. 48882), interrupt remapping: an interrupt request that fails remapping is target-aborted and logged as IO_PAGE_FAULT with the I flag.",
    qemu: "hw/i386/amd_iommu.c amdvi_mem_ir_write(): a failed amdvi_int_remap_msi() is reported with error_report_once() under '/* TODO: log the event using IOMMU log event interface */' and dropped.",
    matches: (c) => amdMissingEvent(c) === "interrupt",
  },
  {
    id: "amdvi-ring-pointer-as-written",
    vendor: "amd-vi",
    classification: "open",
    summary: "A command-buffer or event-log head/tail register the guest wrote with bits outside the pointer field (bits 18:4), or with an offset beyond its ring: QEMU reads back the value as written, the model the pointer field reduced to its ring.",
    specification: "AMD IOMMU specification (pub. 48882), MMIO 0x2000–0x2018 Command Buffer / Event Log Head and Tail Pointer Registers: the pointer is bits 18:4, the other bits are reserved; an offset beyond the ring the base register sizes is a software error whose effect is not defined.",
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
