import type { DivergenceContext, TraceOp } from "@viommu/trace";
import type { QemuDifference } from "./difference.js";
import { differsOnlyIn, dword, following, inRange, lastDeviceOp, lastRegisterWrite, memoryAnswers, registerRead, traceBytes } from "./matchers.js";

const VTD_FSTS = 0x34;
const VTD_FRCD0 = 0x220;
const VTD_FRCD_END = 0x2ff;
const FSTS_PPF = 0x2n;
const FSTS_PFO = 0x1n;
const FSTS_FRI = 0xff00n;
/** FRCD dword 3 (bits 127:96): PV is bits 123:104, dword bits 27:8. */
const FRCD_PV = 0x0fff_ff00n;
const FRCD_F = 0x8000_0000n;
const VTD_GCMD = 0x18;
const VTD_GSTS = 0x1c;
const GCMD_CFI = 0x80_0000n;

/** The VT-d register block's base address in the trace's machine. */
function registerBase(c: DivergenceContext): number {
  return c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!.base;
}

/** Whether `addr` is the dword holding F (bit 127) of a fault-recording register after FRCD[0], in `block`. */
function laterFrcdFDword(block: { base: number }, addr: number): boolean {
  return addr > block.base + VTD_FRCD0 + 0xf && addr <= block.base + VTD_FRCD_END && (addr - block.base) % 16 === 0xc;
}

/** Whether the guest, before the divergence, cleared F in a fault-recording register after FRCD[0]. */
function freedLaterRecord(c: DivergenceContext, block: { base: number }): boolean {
  return c.trace.ops.slice(0, c.index).some((op) => op.op === "mmio-write" && laterFrcdFDword(block, op.addr) && (op.value & FRCD_F) !== 0n);
}

/** Whether a VT-d fault-status or fault-record read shows a fault the model recorded and QEMU did not. */
function vtdFaultMissing(c: DivergenceContext): boolean {
  const at = registerRead(c, "vtd");
  if (typeof c.expected !== "bigint" || typeof c.actual !== "bigint") return false;
  if (at === VTD_FSTS) return (c.expected & FSTS_PPF) !== 0n && (c.actual & FSTS_PPF) === 0n;
  return inRange(at, VTD_FRCD0, VTD_FRCD_END) && c.expected !== 0n && c.actual === 0n;
}

/** The FRCD[0] dword QEMU answered holds what the model put in another fault-recording register (read nearby). */
function vtdRecordInAnotherSlot(c: DivergenceContext): boolean {
  const at = registerRead(c, "vtd");
  if (!inRange(at, VTD_FRCD0, VTD_FRCD0 + 0xf) || typeof c.actual !== "bigint" || c.actual === 0n) return false;
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
  const mask = at % 16 === 0xc ? ~FRCD_PV : ~0n;
  const around = [...c.trace.ops.slice(Math.max(0, c.index - 256), c.index).map((op) => ({ op })), ...following(c, 96)];
  return around.some(({ op }) => op.op === "mmio-read" && op.expect !== undefined && op.addr > block.base + VTD_FRCD0 + 0xf && op.addr <= block.base + VTD_FRCD_END && (op.addr - block.base) % 16 === at % 16 && (op.expect & mask) === ((c.actual as bigint) & mask));
}

/** The last guest write clearing FSTS.PFO (RW1C) before the divergence, or -1. */
function lastPfoClear(c: DivergenceContext): number {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
  return c.trace.ops.slice(0, c.index).findLastIndex((op) => op.op === "mmio-write" && op.addr === block.base + VTD_FSTS && (op.value & FSTS_PFO) !== 0n);
}

/**
 * Whether a blocked DMA after operation `after` came from the requester whose fault QEMU's one fault-recording
 * register holds (the first blocked DMA since the guest last freed FRCD[0]): a fault QEMU collapses.
 */
function repeatedFaultAfter(c: DivergenceContext, after: number): boolean {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
  let recorded: number | undefined;
  for (let i = 0; i < c.index; i++) {
    const op = c.trace.ops[i]!;
    if (freesFrcd0(block, op)) recorded = undefined;
    if (op.op === "dma" && op.expect?.ok === false) {
      if (recorded === undefined) recorded = op.rid;
      else if (i > after && op.rid === recorded) return true;
    }
  }
  return false;
}

/** Whether `op` is a guest write clearing F (RW1C) in FRCD[0], the one fault-recording register QEMU has. */
function freesFrcd0(block: { base: number }, op: TraceOp): boolean {
  if (op.op !== "mmio-write") return false;
  if (op.addr === block.base + VTD_FRCD0 + 0xc) return (op.value & FRCD_F) !== 0n;
  return op.addr === block.base + VTD_FRCD0 + 8 && op.size === 8 && (op.value & (FRCD_F << 32n)) !== 0n;
}

/** Two blocked DMAs of different requesters with FRCD[0] not freed between them: QEMU's one register overflows. */
function twoRequestersPending(c: DivergenceContext): boolean {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
  const pending = new Set<number>();
  for (let i = 0; i < c.index; i++) {
    const op = c.trace.ops[i]!;
    if (freesFrcd0(block, op)) pending.clear();
    if (op.op === "dma" && op.expect?.ok === false) {
      pending.add(op.rid);
      if (pending.size >= 2) return true;
    }
  }
  return false;
}

/** The next valid fault record the model answers in the trace after the divergence: its reason and register. */
function vtdExpectedRecord(c: DivergenceContext): { reason: number; register: number } | undefined {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
  // The record's own F dword read just before (a record is read F dword first), else the next record read.
  const before = c.trace.ops.slice(Math.max(0, c.index - 4), c.index).reverse().map((op) => ({ op }));
  for (const { op } of [{ op: c.op }, ...before, ...following(c, 96)]) {
    if (op.op !== "mmio-read" || op.expect === undefined || op.addr < block.base + VTD_FRCD0 || op.addr > block.base + VTD_FRCD_END) continue;
    if ((op.addr - block.base) % 16 === 0xc && (op.expect & FRCD_F) !== 0n) return { reason: Number(op.expect & 0xffn), register: op.addr - 0xc };
  }
  return undefined;
}

/** The fault reason of the next valid fault record the model answers in the trace after the divergence. */
function vtdExpectedReason(c: DivergenceContext): number | undefined {
  return vtdExpectedRecord(c)?.reason;
}

/** Whether the blocked DMA at `index` was to a page its device had used successfully before. */
function blockedAfterUseAt(c: DivergenceContext, index: number, write: boolean | undefined): boolean {
  const dma = c.trace.ops[index];
  if (dma === undefined || dma.op !== "dma" || dma.expect?.ok !== false) return false;
  if (write !== undefined && (dma.dir === "write") !== write) return false;
  const page = Math.floor(dma.iova / 4096);
  return c.trace.ops.slice(0, index).some((op) => {
    if (op.op !== "dma" || op.rid !== dma.rid || op.expect?.ok !== true) return false;
    const len = op.dir === "read" ? op.len : op.data.length;
    return Math.floor(op.iova / 4096) <= page && page <= Math.floor((op.iova + len - 1) / 4096);
  });
}

/** The last DMA before the divergence was blocked on the model, and its device had used that page successfully before. */
function blockedAfterUse(c: DivergenceContext, write: boolean | undefined): boolean {
  const last = lastDeviceOp(c);
  return last !== undefined && blockedAfterUseAt(c, last.index, write);
}

/**
 * Whether the fault record the model shows (its source-id and address, read from the same register in the trace)
 * is that of a DMA blocked after its device had used the page, even if other device operations followed it.
 */
function recordedFaultAfterUse(c: DivergenceContext): boolean {
  const record = vtdExpectedRecord(c);
  if (record === undefined) return false;
  const window = [...c.trace.ops.slice(Math.max(0, c.index - 64), c.index), ...following(c, 96).map(({ op }) => op)];
  const read = (addr: number): bigint | undefined => {
    const op = window.find((o) => o.op === "mmio-read" && o.addr === addr && o.expect !== undefined);
    return op?.op === "mmio-read" ? op.expect : undefined;
  };
  const sid = read(record.register + 8);
  const lo = read(record.register);
  const hi = read(record.register + 4) ?? 0n;
  if (sid === undefined || lo === undefined) return false;
  const page = Math.floor(Number((hi << 32n) | lo) / 4096);
  const index = c.trace.ops.slice(0, c.index).findLastIndex((op) => op.op === "dma" && op.expect?.ok === false && op.rid === Number(sid & 0xffffn) && Math.floor(op.iova / 4096) === page);
  return index >= 0 && blockedAfterUseAt(c, index, undefined);
}

const VTD_IQH = 0x80;
const VTD_IQT = 0x88;
const VTD_IQA = 0x90;
const FSTS_IQE = 0x10n;
const FSTS_ITE = 0x40n;
const FSTS_ICE = 0x20n;

/** The invalidation queue where the model stopped it (IQH short of IQT) and the descriptors in it. */
interface HaltedQueue {
  /** IQH and IQT as byte offsets, and the descriptor size. */
  readonly head: number;
  readonly tail: number;
  readonly size: number;
  /** The first 16 bytes of the descriptor at `offset` as the guest last wrote them before the divergence. */
  descriptor(offset: number): Uint8Array;
  /** The status addresses of the wait descriptors (SW set) from `offset` up to the tail. */
  statusAddresses(offset: number): number[];
}

/**
 * Whether the model stopped the invalidation queue at a descriptor (its IQH, read later in the trace, short of the
 * IQT the guest wrote), and the queue's descriptors.
 */
function vtdModelHaltedQueue(c: DivergenceContext): HaltedQueue | undefined {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd");
  const iqa = lastRegisterWrite(c, "vtd", VTD_IQA);
  const iqt = lastRegisterWrite(c, "vtd", VTD_IQT);
  if (block === undefined || iqa === undefined || iqt === undefined) return undefined;
  const isHead = (op: TraceOp): boolean => op.op === "mmio-read" && op.addr === block.base + VTD_IQH && op.expect !== undefined;
  const headRead = c.trace.ops.slice(c.index).find(isHead) ?? c.trace.ops.slice(0, c.index).findLast(isHead);
  if (headRead === undefined || headRead.op !== "mmio-read") return undefined;
  const size = (iqa & 0x800n) !== 0n ? 32 : 16;
  const base = Number(iqa & 0x000f_ffff_ffff_f000n);
  const head = Number((headRead.expect! >> 4n) & 0x7fffn) * 16;
  const tail = Number((iqt >> 4n) & 0x7fffn) * 16;
  if (head === tail) return undefined;
  const descriptor = (offset: number): Uint8Array => traceBytes(c.trace, c.index, base + offset, 16);
  return {
    head,
    tail,
    size,
    descriptor,
    statusAddresses(offset) {
      const out: number[] = [];
      // Up to the tail, wrapping at the queue's end (IQA.QS: 2^QS 4 KiB pages).
      const bytes = 4096 << Number(iqa & 7n);
      for (let at = offset % bytes, n = 0; at !== tail && n < bytes / size; at = (at + size) % bytes, n++) {
        const d = descriptor(at);
        // Wait descriptor (type 5) with SW (bit 5): the status address is QW1 bits 63:2.
        if ((d[0]! & 0xf) === 5 && (d[0]! & 0x20) !== 0) out.push((dword(d, 2) & ~3) + dword(d, 3) * 2 ** 32);
      }
      return out;
    },
  };
}

/** The wait descriptors the guest wrote into its invalidation queue before the divergence, in the order written. */
export function vtdWaitDescriptors(c: DivergenceContext): { index: number; flags: number; status: number }[] {
  const iqa = lastRegisterWrite(c, "vtd", VTD_IQA);
  if (iqa === undefined) return [];
  const base = Number(iqa & 0x000f_ffff_ffff_f000n);
  const size = (iqa & 0x800n) !== 0n ? 32 : 16;
  const bytes = 4096 << Number(iqa & 7n);
  const out: { index: number; flags: number; status: number }[] = [];
  for (let i = 0; i < c.index; i++) {
    const op = c.trace.ops[i]!;
    if (op.op !== "mem-write" || op.addr < base || op.addr >= base + bytes || op.data.length < 16 || (op.addr - base) % size !== 0) continue;
    for (let at = 0; at + 16 <= op.data.length; at += size) {
      const d = op.data.subarray(at, at + 16);
      // Type 5 (bits 3:0, with the high type bits 11:9 clear); flags IF (4), SW (5), FN (6); status address QW1 63:2.
      if ((d[0]! & 0xf) !== 5 || (d[1]! & 0x0e) !== 0) continue;
      out.push({ index: i, flags: d[0]! & 0x70, status: (dword(d, 2) & ~3) + dword(d, 3) * 2 ** 32 });
    }
  }
  return out;
}

/**
 * Whether QEMU would have stopped the queue at a wait descriptor without SW and IF (with FN set or not, as
 * `fenceOnly` asks) while the model went on: the divergence is FSTS.IQE, IQH, or the status of a later wait.
 */
function vtdBareWaitRejected(c: DivergenceContext, fenceOnly: boolean): boolean {
  const waits = vtdWaitDescriptors(c);
  const bare = waits.find((w) => (w.flags & 0x30) === 0);
  if (bare === undefined || ((bare.flags & 0x40) !== 0) !== fenceOnly) return false;
  const at = registerRead(c, "vtd");
  if (at === VTD_IQH) return true;
  if (at === VTD_FSTS) return ((c.actual as bigint) & FSTS_IQE) !== 0n && ((c.expected as bigint) & FSTS_IQE) === 0n && differsOnlyIn(c, FSTS_IQE | FSTS_PPF | FSTS_FRI);
  const mem = memoryAnswers(c);
  return mem !== undefined && waits.some((w) => w.index >= bare.index && (w.flags & 0x20) !== 0 && w.status >= mem.addr - 3 && w.status < mem.addr + mem.expected.length);
}

/** Known differences between the model's VT-d and QEMU 7.2's intel-iommu. */
/** FSTS_REG's fields: PFO, PPF, AFO, APF, IQE, ICE, ITE, PRO (one bit each) and FRI (15:8). */
const FSTS_FIELDS = [0x1n, 0x2n, 0x4n, 0x8n, 0x10n, 0x20n, 0x40n, 0x80n, 0xff00n];

/**
 * An FSTS read whose fields differ for more than one catalogued reason (FSTS.ITE from a device-TLB time-out and
 * FRI from the number of fault records, say): each differing field, taken alone, must be explained by some entry,
 * one of them by `explains` (this entry). One field alone is left to `explains` itself, so this never recurses.
 */
function fstsByField(c: DivergenceContext, explains: (oneField: DivergenceContext) => boolean): boolean {
  if (registerRead(c, "vtd") !== VTD_FSTS || typeof c.expected !== "bigint" || typeof c.actual !== "bigint") return false;
  const differing = c.expected ^ c.actual;
  const fields = FSTS_FIELDS.filter((m) => (differing & m) !== 0n);
  if (fields.length < 2 || (differing & ~FSTS_FIELDS.reduce((a, m) => a | m, 0n)) !== 0n) return false;
  let own = false;
  for (const m of fields) {
    const alone: DivergenceContext = { ...c, actual: (c.expected & ~m) | (c.actual & m) };
    if (explains(alone)) own = true;
    else if (!vtdDifferences.some((d) => d.matches(alone))) return false;
  }
  return own;
}

export const vtdDifferences: readonly QemuDifference[] = [
  {
    id: "vtd-fence-wait-rejected",
    vendor: "vtd",
    classification: "target-deviates",
    summary: "A wait descriptor with FN set and neither SW nor IF (a pure barrier): QEMU 7.2 takes it as invalid and stops the queue with FSTS.IQE; the model executes it (nothing to do) and the descriptors behind it.",
    specification: "VT-d specification, 7.10 (software steps to drain page requests): a wait descriptor with FN = 1 and neither SW nor IF is valid and serves only as a barrier.",
    qemu: "hw/i386/intel_iommu.c vtd_process_wait_desc() (7.2): neither SW nor IF falls to its invalid-wait-descriptor branch and returns false, so vtd_process_inv_desc() sets IQE.",
    matches: (c) => vtdBareWaitRejected(c, true),
  },
  {
    id: "vtd-empty-wait-rejected",
    vendor: "vtd",
    classification: "open",
    summary: "A wait descriptor with none of SW, IF and FN: QEMU takes it as invalid and stops the queue with FSTS.IQE; the model executes it as a no-op and goes on. The specification lists neither combination among invalid descriptors nor gives it a meaning.",
    specification: "VT-d specification, 6.5.2.8 Invalidation Wait Descriptor (SW, IF, FN each optional) and FSTS_REG.IQE (an invalid descriptor: unsupported type or reserved fields set).",
    qemu: "hw/i386/intel_iommu.c vtd_process_wait_desc(): '(unknown type)' when neither SW nor IF is set, returns false, IQE.",
    matches: (c) => vtdBareWaitRejected(c, false),
  },
  {
    id: "vtd-inv-desc-reserved-bits-accepted",
    vendor: "vtd",
    classification: "target-deviates",
    summary: "An invalidation descriptor with a reserved field set where QEMU does not look (QW1 of a context-cache or IEC descriptor, among others): the model stops the queue with FSTS.IQE, QEMU executes it and the descriptors behind it (a wait behind it writes its status).",
    specification: "VT-d specification, chapter 6 (queued invalidation): hardware that finds an invalid descriptor — an unsupported type or reserved fields not zero — sets FSTS.IQE and stops with IQH at it.",
    qemu: "hw/i386/intel_iommu.c vtd_process_inv_desc() and the per-type handlers: each checks its own reserved mask (VTD_INV_DESC_*_RSVD*), and for several types only QW0's.",
    matches: (c) => {
      const halted = vtdModelHaltedQueue(c);
      if (halted === undefined) return false;
      const at = registerRead(c, "vtd");
      if (at === VTD_IQH) return true;
      if (at === VTD_FSTS) return ((c.expected as bigint) & FSTS_IQE) !== 0n && ((c.actual as bigint) & FSTS_IQE) === 0n;
      const mem = memoryAnswers(c);
      return mem !== undefined && halted.statusAddresses(halted.head + halted.size).some((a) => a >= mem.addr - 3 && a < mem.addr + mem.expected.length);
    },
  },
  {
    id: "vtd-device-tlb-invalidation-without-device",
    vendor: "vtd",
    classification: "open",
    summary: "A device-TLB invalidate descriptor for a source-id with no device behind it: the model waits for the completion that never comes and reports a time-out (FSTS.ITE, ITESID, the queue stopped after it, waits behind it not executed); QEMU 7.2 finds no address space for the source-id and completes the descriptor at once, executing what follows. Found by difftest (seed 3000, cases 4112 and 7641).",
    specification: "VT-d specification, 6.5.2.5 Device-TLB Invalidate Descriptor (the invalidation is a request to the endpoint, completed by its response) and FSTS_REG.ITE / IQERCD_REG.ITESID (a device-TLB invalidation completion time-out); what an invalidation sent to no endpoint does is left to the platform.",
    qemu: "hw/i386/intel_iommu.c vtd_process_device_iotlb_desc(): vtd_get_as_by_sid() finds no address space for the SID and the descriptor is done; invalidations complete synchronously, so ITE is never set.",
    matches: (c) => {
      const halted = vtdModelHaltedQueue(c);
      if (halted === undefined || halted.head < halted.size) return false;
      // The descriptor before IQH: a device-TLB invalidate (type 3, high type bits 11:9 clear), SID in QW0 bits 31:16.
      const timedOut = halted.descriptor(halted.head - halted.size);
      if ((timedOut[0]! & 0xf) !== 3 || (timedOut[1]! & 0x0e) !== 0) return false;
      const sid = dword(timedOut, 0) >>> 16;
      if (c.trace.header.machine.devices.some((d) => d.rid === sid)) return false;
      const at = registerRead(c, "vtd");
      if (at === VTD_IQH) return true;
      if (at === VTD_FSTS) return fstsByField(c, (one) => differsOnlyIn(one, FSTS_ITE) && ((one.expected as bigint) & FSTS_ITE) !== 0n) || (differsOnlyIn(c, FSTS_ITE) && ((c.expected as bigint) & FSTS_ITE) !== 0n);
      const mem = memoryAnswers(c);
      return mem !== undefined && halted.statusAddresses(halted.head).some((a) => a >= mem.addr - 3 && a < mem.addr + mem.expected.length);
    },
  },
  {
    id: "vtd-queue-not-resumed-when-iqe-cleared",
    vendor: "vtd",
    classification: "target-deviates",
    summary: "After an invalidation queue error, the guest clears FSTS.IQE with descriptors still between IQH and IQT: the model resumes fetching at IQH (the descriptors run, waits write their status), QEMU 7.2 fetches nothing until the guest writes IQT again (a tail written while IQE was set is not acted on either). Found by difftest (seed 3000, case 2062).",
    specification: "VT-d specification, 6.5.2.10 (queued invalidation errors, FSTS_REG.IQE): hardware fetches no new descriptors until software clears IQE, and then fetches again from IQH. Linux relies on it: qi_check_fault() (drivers/iommu/intel/dmar.c) overwrites the failed descriptor with its wait descriptor and clears IQE without writing IQT.",
    qemu: "hw/i386/intel_iommu.c vtd_handle_fsts_write(): clearing IQE does not call vtd_fetch_inv_desc() (a FIXME there asks whether it should); vtd_handle_iqt_write() processes only while IQE is clear.",
    matches: (c) => {
      const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
      const ops = c.trace.ops.slice(0, c.index);
      const cleared = ops.findLastIndex((op) => op.op === "mmio-write" && op.addr === block.base + VTD_FSTS && (op.value & FSTS_IQE) !== 0n);
      if (cleared < 0 || ops.slice(cleared + 1).some((op) => op.op === "mmio-write" && op.addr === block.base + VTD_IQT)) return false;
      // The model had IQE set when the guest cleared it.
      const status = ops.slice(0, cleared).findLast((op) => op.op === "mmio-read" && op.addr === block.base + VTD_FSTS && op.expect !== undefined);
      if (status?.op !== "mmio-read" || (status.expect! & FSTS_IQE) === 0n) return false;
      const at = registerRead(c, "vtd");
      if (at === VTD_IQH) return true;
      if (at === VTD_FSTS) return differsOnlyIn(c, FSTS_IQE | FSTS_ITE | FSTS_ICE);
      const mem = memoryAnswers(c);
      return mem !== undefined && vtdWaitDescriptors(c).some((w) => w.index < cleared && (w.flags & 0x20) !== 0 && w.status >= mem.addr - 3 && w.status < mem.addr + mem.expected.length);
    },
  },
  {
    id: "vtd-capability-registers",
    vendor: "vtd",
    classification: "open",
    summary: "VER, CAP and ECAP report each implementation's own choices (version 1.0 vs 3.0, one fault-recording register vs eight, scalable mode, drain, page-request support).",
    specification: "VT-d specification, chapter 10 register descriptions (VER_REG, CAP_REG, ECAP_REG): the fields report what an implementation supports.",
    qemu: "hw/i386/intel_iommu.c vtd_cap_init() / vtd_init(): VER 0x10, CAP.NFR 0 (VTD_FRCD_REG_NR 1), no scalable first-level tables in 7.2.",
    matches: (c) => inRange(registerRead(c, "vtd"), 0x0, 0x17),
  },
  {
    id: "vtd-one-fault-record",
    vendor: "vtd",
    classification: "open",
    summary: "QEMU has one fault-recording register (CAP.NFR = 0), the model eight: FRCD[1..7] read 0 in QEMU, FSTS.FRI differs, and QEMU records in FRCD[0] a fault the model records in a later register.",
    specification: "VT-d specification, chapter 10: CAP_REG.NFR (the number of fault-recording registers is the implementation's), FSTS_REG.FRI (the register the first pending fault went to) and FRCD_REG.",
    qemu: "hw/i386/intel_iommu_internal.h VTD_FRCD_REG_NR (1); hw/i386/intel_iommu.c vtd_report_dmar_fault(): next_frcd_reg wraps at VTD_FRCD_REG_NR.",
    matches: (c) => {
      const at = registerRead(c, "vtd");
      if (inRange(at, VTD_FRCD0 + 0x10, VTD_FRCD_END)) return true;
      if (at === VTD_FSTS) {
        if (differsOnlyIn(c, FSTS_FRI)) return true;
        // The guest freed the record the model used (FRCD[n], n ≥ 1); QEMU's copy of it sits in FRCD[0], still pending.
        const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
        if (freedLaterRecord(c, block) && differsOnlyIn(c, FSTS_FRI | FSTS_PPF) && ((c.actual as bigint) & FSTS_PPF) !== 0n) return true;
        // The model's pending fault sits in FRCD[n ≥ 1] (read later) with FRCD[0] free: QEMU had no register for it.
        if (differsOnlyIn(c, FSTS_FRI | FSTS_PPF | FSTS_PFO) && ((c.expected as bigint) & FSTS_PPF) !== 0n && ((c.actual as bigint) & FSTS_PPF) === 0n) {
          const reads = following(c, 96).map(({ op }) => op);
          const pendingLater = reads.some((op) => op.op === "mmio-read" && op.expect !== undefined && laterFrcdFDword(block, op.addr) && (op.expect & FRCD_F) !== 0n);
          const firstFree = reads.some((op) => op.op === "mmio-read" && op.addr === block.base + VTD_FRCD0 + 0xc && op.expect !== undefined && (op.expect & FRCD_F) === 0n);
          if (pendingLater && firstFree) return true;
        }
        // Faults of two requesters pending at once: the model has a register for the second, QEMU overflows (PFO).
        return differsOnlyIn(c, FSTS_FRI | FSTS_PPF | FSTS_PFO) && ((c.actual as bigint) & FSTS_PFO) !== 0n && ((c.expected as bigint) & FSTS_PFO) === 0n && twoRequestersPending(c);
      }
      if (vtdRecordInAnotherSlot(c)) return true;
      // FRCD[0]'s F dword: QEMU has a pending record there, the model had it in a later register the guest freed.
      if (at === VTD_FRCD0 + 0xc && typeof c.expected === "bigint" && typeof c.actual === "bigint" && (c.expected & FRCD_F) === 0n && (c.actual & FRCD_F) !== 0n) {
        return freedLaterRecord(c, c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!);
      }
      return false;
    },
  },
  {
    id: "vtd-cfi-ignored",
    vendor: "vtd",
    classification: "target-deviates",
    summary: "GCMD.CFI (compatibility-format interrupts) written as 1: the model reports it in GSTS.CFIS; QEMU 7.2 ignores the bit, so CFIS stays 0. Found by difftest (seed 1000, case 544).",
    specification: "VT-d specification, 11.4.4 Global Command Register (CFI, bit 23) and 11.4.5 Global Status Register (CFIS, bit 23): hardware reports the CFI state software set (with extended interrupt mode off).",
    qemu: "hw/i386/intel_iommu.c vtd_handle_gcmd_write() handles TE, SRTP, SIRTP, IRE and QIE; intel_iommu_internal.h defines VTD_GCMD_CFI / VTD_GSTS_CFIS and nothing uses them.",
    matches: (c) => registerRead(c, "vtd") === VTD_GSTS && differsOnlyIn(c, GCMD_CFI) && ((c.expected as bigint) & GCMD_CFI) !== 0n && ((lastRegisterWrite(c, "vtd", VTD_GCMD) ?? 0n) & GCMD_CFI) !== 0n,
  },
  {
    id: "vtd-fault-order-in-an-entry",
    vendor: "vtd",
    classification: "open",
    summary: "A legacy second-level entry that is at once malformed or pointing at an unreadable table (fault reason 0Ch: a reserved bit; 07h: the next table cannot be read) and without the right the request needs (05h write, 06h read): the model reports the entry's form first, QEMU 7.2 the missing right. Found by difftest (seed 1000, cases 178, 298, 328).",
    specification: "VT-d specification, 7.1.3 (fault conditions LSL.1 and LSL.3 against LGN.2 and LGN.3): each condition is listed with its reason code and no order between conditions met by one entry.",
    qemu: "hw/i386/intel_iommu.c vtd_iova_to_slpte(): the access right of each entry is tested before vtd_slpte_nonzero_rsvd() and before descending to the next level.",
    matches: (c) => {
      const at = registerRead(c, "vtd");
      const model = (reason: number): boolean => reason === 0xc || reason === 0x7;
      const qemu = (reason: number): boolean => reason === 0x5 || reason === 0x6;
      // QEMU's one register holds the fault with its reason; the model holds it, with the other reason, in a later register.
      if (at === VTD_FRCD0 + 0xc && typeof c.expected === "bigint" && typeof c.actual === "bigint" && (c.expected & FRCD_F) === 0n && (c.actual & FRCD_F) !== 0n) {
        const record = vtdExpectedRecord(c);
        return record !== undefined && record.register !== registerBase(c) + VTD_FRCD0 && model(record.reason) && qemu(Number(c.actual & 0xffn));
      }
      if (!inRange(at, VTD_FRCD0, VTD_FRCD_END) || at! % 16 !== 0xc || !differsOnlyIn(c, FRCD_PV | 0xffn)) return false;
      return model(Number((c.expected as bigint) & 0xffn)) && qemu(Number((c.actual as bigint) & 0xffn));
    },
  },
  {
    id: "vtd-frcd-pv-without-pp",
    vendor: "vtd",
    classification: "open",
    summary: "For a request without PASID (FRCD.PP = 0) QEMU fills FRCD.PV with 0xFFFF, the model with 0.",
    specification: "VT-d specification, chapter 10, FRCD_REG: PV (bits 123:104) is relevant only when PP (bit 95) is set.",
    qemu: "hw/i386/intel_iommu.c vtd_report_dmar_fault(): VTD_FRCD_PV(pasid) with PCI_NO_PASID cut to 16 bits (VTD_FRCD_PV masks 0xffff).",
    matches: (c) => {
      const at = registerRead(c, "vtd");
      return inRange(at, VTD_FRCD0, VTD_FRCD_END) && at % 16 === 0xc && differsOnlyIn(c, FRCD_PV);
    },
  },
  {
    id: "vtd-fault-collapse",
    vendor: "vtd",
    classification: "open",
    summary: "A second fault from a requester that already has a pending fault record is collapsed (dropped) by QEMU and recorded in the next register by the model, or, with every register taken, reported by the model as an overflow (FSTS.PFO).",
    specification: "VT-d specification, chapter 10, FRCD_REG.F: while F is set, hardware may collapse additional faults from the same source-id.",
    qemu: "hw/i386/intel_iommu.c vtd_report_dmar_fault(): vtd_try_collapse_fault() drops a fault whose SID matches a pending record.",
    matches: (c) => {
      // Every register full: the fault the model could not record set PFO, the one QEMU collapsed did not.
      if (registerRead(c, "vtd") === VTD_FSTS && differsOnlyIn(c, FSTS_PFO | FSTS_FRI) && ((c.expected as bigint) & FSTS_PFO) !== 0n && ((c.actual as bigint) & FSTS_PFO) === 0n) {
        return repeatedFaultAfter(c, lastPfoClear(c));
      }
      if (!vtdFaultMissing(c) && !vtdRecordInAnotherSlot(c)) return false;
      return repeatedFaultAfter(c, -1);
    },
  },
  {
    id: "vtd-frcd-contents-without-f",
    vendor: "vtd",
    classification: "open",
    summary: "A fault-recording register whose F bit is clear: QEMU keeps the last record's fields (FI, SID, FR, T), the model reads 0.",
    specification: "VT-d specification, chapter 10, FRCD_REG: every field but F is relevant only when F is set; software clears F to free the register.",
    qemu: "hw/i386/intel_iommu.c vtd_handle_frcd_write() clears only the F bit (W1C); the other fields keep what vtd_record_frcd() wrote.",
    matches: (c) => {
      const at = registerRead(c, "vtd");
      if (!inRange(at, VTD_FRCD0, VTD_FRCD_END) || typeof c.expected !== "bigint" || typeof c.actual !== "bigint") return false;
      const hi = at - (at % 16) + 0xc;
      if (at === hi) return (c.expected & 0x8000_0000n) === 0n && (c.actual & 0x8000_0000n) === 0n;
      const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
      for (let i = c.index - 1; i >= Math.max(0, c.index - 8); i--) {
        const op = c.trace.ops[i]!;
        if (op.op === "mmio-read" && op.addr === block.base + hi) return op.expect !== undefined && (op.expect & 0x8000_0000n) === 0n;
      }
      return false;
    },
  },
  {
    id: "vtd-readonly-write-cached-no-fault",
    vendor: "vtd",
    classification: "target-deviates",
    summary: "A device write through a read-only second-level mapping whose translation QEMU has cached (the device read through it first) is blocked but no fault is recorded (no FRCD, FSTS.PPF stays 0); before any read QEMU records reason 5 as it should.",
    specification:
      "VT-d specification, chapter 7 (a non-recoverable translation fault is recorded through primary fault logging unless the context entry's FPD is set) and its fault-reason table, 5h (a write request to a page without write permission); chapter 6: translations cached in the IOTLB keep the permissions each request is checked against.",
    qemu: "hw/i386/intel_iommu.c vtd_do_iommu_translate(): on an IOTLB hit it takes the cached access_flags and jumps to out: without comparing them with is_write, so vtd_report_dmar_fault() is never reached; the memory core then drops the write because the entry's perm lacks write.",
    matches: (c) => {
      if (!vtdFaultMissing(c) || !blockedAfterUse(c, true)) return false;
      const reason = vtdExpectedReason(c);
      return reason === undefined || reason === 5;
    },
  },
  {
    id: "vtd-stale-translation-without-invalidation",
    vendor: "vtd",
    classification: "open",
    summary: "A translation the guest changed but never invalidated (no invalidation, or one the queue refused): QEMU keeps using its IOTLB entry, the model's emulated-device path walks the tables again and faults.",
    specification: "VT-d specification, chapter 6 (caching and invalidation): after changing a present entry software must invalidate; until then hardware may use the cached translation or the new entry.",
    qemu: "hw/i386/intel_iommu.c vtd_do_iommu_translate(): an IOTLB hit (vtd_lookup_iotlb) is used until an invalidation descriptor removes it.",
    matches: (c) => {
      if (!vtdFaultMissing(c) || !(blockedAfterUse(c, undefined) || recordedFaultAfterUse(c))) return false;
      const reason = vtdExpectedReason(c);
      return reason !== undefined && reason !== 5;
    },
  },
  {
    id: "vtd-interrupt-fault-not-recorded",
    vendor: "vtd",
    classification: "target-deviates",
    summary: "An MSI blocked by interrupt remapping (a cleared IRTE: reason 22h) is dropped without a fault record.",
    specification: "VT-d specification, chapter 5 (interrupt requests that fail remapping are blocked and reported as faults through primary fault logging) and its fault-reason table, 20h–26h (22h: IRTE not present).",
    qemu: "hw/i386/intel_iommu.c vtd_mem_ir_write(): when vtd_interrupt_remap_msi() fails it returns MEMTX_ERROR under a '/* TODO: report error */' comment; nothing is recorded (QEMU added vtd_report_ir_fault() only after 7.2).",
    matches: (c) => vtdFaultMissing(c) && lastDeviceOp(c)?.op.op === "msi",
  },
];
