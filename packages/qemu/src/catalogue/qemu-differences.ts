import type { Classification, DivergenceContext, KnownDifference, Trace, TraceOp } from "@viommu/trace";
import type { QemuVendor } from "../machines/qemu-machine.js";
import { amdViCommandHangAt } from "./amdvi-command-hang.js";
import { differsOnlyIn, dword, following, lastDeviceOp, lastRegisterWrite, memoryAnswers, registerRead, traceBytes } from "./matchers.js";

/**
 * A known difference between the model and QEMU 7.2, with who is wrong and why. Every entry is also described in
 * qemu-differences.md (same id). A divergence none of these explains fails a difftest run.
 */
export interface QemuDifference extends KnownDifference {
  readonly vendor: QemuVendor;
  readonly classification: Classification;
  /** The specification's word on it (section of the architecture specification). */
  readonly specification: string;
  /** Where QEMU does it (file and function in QEMU's source). */
  readonly qemu: string;
}

const inRange = (x: number | undefined, lo: number, hi: number): x is number => x !== undefined && x >= lo && x <= hi;

// ---- VT-d ----

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

/** Two blocked DMAs of different requesters with no fault record freed between them. */
function twoRequestersPending(c: DivergenceContext): boolean {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
  const pending = new Set<number>();
  for (let i = 0; i < c.index; i++) {
    const op = c.trace.ops[i]!;
    if (op.op === "mmio-write" && op.addr >= block.base + VTD_FRCD0 && op.addr <= block.base + VTD_FRCD_END && (op.value & 0x8000_0000n) !== 0n) pending.clear();
    if (op.op === "dma" && op.expect?.ok === false) {
      pending.add(op.rid);
      if (pending.size >= 2) return true;
    }
  }
  return false;
}

/** The fault reason of the next valid fault record the model answers in the trace after the divergence. */
function vtdExpectedReason(c: DivergenceContext): number | undefined {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
  // The record's own F dword read just before (a record is read F dword first), else the next record read.
  const before = c.trace.ops.slice(Math.max(0, c.index - 4), c.index).reverse().map((op) => ({ op }));
  for (const { op } of [{ op: c.op }, ...before, ...following(c, 96)]) {
    if (op.op !== "mmio-read" || op.expect === undefined || op.addr < block.base + VTD_FRCD0 || op.addr > block.base + VTD_FRCD_END) continue;
    if ((op.addr - block.base) % 16 === 0xc && (op.expect & 0x8000_0000n) !== 0n) return Number(op.expect & 0xffn);
  }
  return undefined;
}

/** The last DMA before the divergence was blocked on the model, and its device had used that page successfully before. */
function blockedAfterUse(c: DivergenceContext, write: boolean | undefined): boolean {
  const last = lastDeviceOp(c);
  if (last === undefined || last.op.op !== "dma" || last.op.expect?.ok !== false) return false;
  if (write !== undefined && (last.op.dir === "write") !== write) return false;
  const dma = last.op;
  const page = Math.floor(dma.iova / 4096);
  return c.trace.ops.slice(0, last.index).some((op) => {
    if (op.op !== "dma" || op.rid !== dma.rid || op.expect?.ok !== true) return false;
    const len = op.dir === "read" ? op.len : op.data.length;
    return Math.floor(op.iova / 4096) <= page && page <= Math.floor((op.iova + len - 1) / 4096);
  });
}

const VTD_IQH = 0x80;
const VTD_IQT = 0x88;
const VTD_IQA = 0x90;
const FSTS_IQE = 0x10n;

/**
 * Whether the model stopped the invalidation queue at a descriptor (its IQH, read later in the trace, short of the
 * IQT the guest wrote, with FSTS.IQE), and the status addresses of the wait descriptors behind it.
 */
function vtdModelHaltedQueue(c: DivergenceContext): { statusAddresses: number[] } | undefined {
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd");
  const iqa = lastRegisterWrite(c, "vtd", VTD_IQA);
  const iqt = lastRegisterWrite(c, "vtd", VTD_IQT);
  if (block === undefined || iqa === undefined || iqt === undefined) return undefined;
  const isHead = (op: TraceOp): boolean => op.op === "mmio-read" && op.addr === block.base + VTD_IQH && op.expect !== undefined;
  const head = c.trace.ops.slice(c.index).find(isHead) ?? c.trace.ops.slice(0, c.index).findLast(isHead);
  if (head === undefined || head.op !== "mmio-read") return undefined;
  const wide = (iqa & 0x800n) !== 0n;
  const size = wide ? 32 : 16;
  const base = Number(iqa & 0x000f_ffff_ffff_f000n);
  const h = Number((head.expect! >> 4n) & 0x7fffn) * 16;
  const t = Number((iqt >> 4n) & 0x7fffn) * 16;
  if (h === t) return undefined;
  // The descriptors the guest wrote between the halted one and the tail: their last contents.
  const statusAddresses: number[] = [];
  for (let at = h + size; at < t; at += size) {
    const addr = base + at;
    const bytes = new Uint8Array(16);
    for (let i = 0; i < c.index; i++) {
      const op = c.trace.ops[i]!;
      if (op.op !== "mem-write") continue;
      for (let b = 0; b < 16; b++) if (addr + b >= op.addr && addr + b < op.addr + op.data.length) bytes[b] = op.data[addr + b - op.addr]!;
    }
    // Wait descriptor (type 5) with SW (bit 5): the status address is QW1 bits 63:2.
    if ((bytes[0]! & 0xf) === 5 && (bytes[0]! & 0x20) !== 0) statusAddresses.push((dword(bytes, 2) & ~3) + dword(bytes, 3) * 2 ** 32);
  }
  return { statusAddresses };
}

/** Whether a wait descriptor the guest wrote into its invalidation queue asks for a status write outside guest RAM. */
function vtdWaitOutsideRam(c: DivergenceContext): boolean {
  const iqa = lastRegisterWrite(c, "vtd", VTD_IQA);
  if (iqa === undefined) return false;
  const base = Number(iqa & 0x000f_ffff_ffff_f000n);
  const bytes = 4096 << Number(iqa & 7n);
  const ram = c.trace.header.machine.ram;
  for (let i = 0; i < c.index; i++) {
    const op = c.trace.ops[i]!;
    if (op.op !== "mem-write" || op.addr < base || op.addr >= base + bytes || op.data.length < 16) continue;
    for (let at = 0; at + 16 <= op.data.length; at += 16) {
      const d = op.data.subarray(at, at + 16);
      if ((d[0]! & 0xf) !== 5 || (d[0]! & 0x20) === 0) continue;
      const status = (dword(d, 2) & ~3) + dword(d, 3) * 2 ** 32;
      if (!ram.some((r) => status >= r.base && status + 4 <= r.base + r.size)) return true;
    }
  }
  return false;
}

/** The wait descriptors the guest wrote into its invalidation queue before the divergence, in the order written. */
function vtdWaitDescriptors(c: DivergenceContext): { index: number; flags: number; status: number }[] {
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

const vtd: QemuDifference[] = [
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
    id: "vtd-wait-status-outside-ram",
    vendor: "vtd",
    classification: "open",
    summary: "A wait descriptor whose status address is outside guest RAM (beyond the address width): QEMU's status write fails and it stops the queue with FSTS.IQE; the model completes the wait without writing. Classification to be confirmed: the specification defines IQE for invalid descriptors and does not say what a status write to a non-existent address does.",
    specification: "VT-d specification, chapter 6 (invalidation wait descriptor: the status write) and FSTS_REG.IQE (an error fetching a descriptor, or an erroneous or invalid descriptor).",
    qemu: "hw/i386/intel_iommu.c vtd_process_wait_desc(): when dma_memory_write() of the status fails it reports the descriptor as failed, and vtd_process_inv_desc() sets IQE.",
    matches: (c) => {
      if (!vtdWaitOutsideRam(c)) return false;
      const at = registerRead(c, "vtd");
      if (at === VTD_FSTS) return ((c.actual as bigint) & FSTS_IQE) !== 0n && ((c.expected as bigint) & FSTS_IQE) === 0n && differsOnlyIn(c, FSTS_IQE | FSTS_PPF | FSTS_FRI);
      return at === VTD_IQH;
    },
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
      return mem !== undefined && halted.statusAddresses.some((a) => a >= mem.addr - 3 && a < mem.addr + mem.expected.length);
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
      if (!inRange(at, VTD_FRCD0, VTD_FRCD_END) || at! % 16 !== 0xc || !differsOnlyIn(c, FRCD_PV | 0xffn)) return false;
      const model = Number((c.expected as bigint) & 0xffn);
      const qemu = Number((c.actual as bigint) & 0xffn);
      return (model === 0xc || model === 0x7) && (qemu === 0x5 || qemu === 0x6);
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
    summary: "A second fault from a requester that already has a pending fault record is collapsed (dropped) by QEMU and recorded in the next register by the model.",
    specification: "VT-d specification, chapter 10, FRCD_REG.F: while F is set, hardware may collapse additional faults from the same source-id.",
    qemu: "hw/i386/intel_iommu.c vtd_report_dmar_fault(): vtd_try_collapse_fault() drops a fault whose SID matches a pending record.",
    matches: (c) => {
      if (!vtdFaultMissing(c) && !vtdRecordInAnotherSlot(c)) return false;
      // Two blocked DMAs of one requester with no fault record freed between them.
      const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
      const pendingSince = new Map<number, number>();
      for (let i = 0; i < c.index; i++) {
        const op = c.trace.ops[i]!;
        if (op.op === "mmio-write" && op.addr >= block.base + VTD_FRCD0 && op.addr <= block.base + VTD_FRCD_END && (op.value & 0x8000_0000n) !== 0n) pendingSince.clear();
        if (op.op === "dma" && op.expect?.ok === false) {
          if (pendingSince.has(op.rid)) return true;
          pendingSince.set(op.rid, i);
        }
      }
      return false;
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
      if (!vtdFaultMissing(c) || !blockedAfterUse(c, undefined)) return false;
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

// ---- AMD-Vi ----

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

const amdVi: QemuDifference[] = [
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

// ---- SMMUv3 ----

const SMMU_GERROR = 0x60;
const SMMU_CMDQ_BASE = 0x90;
const SMMU_EVTQ_BASE = 0xa0;
const SMMU_EVTQ_PROD = 0x100a8;
const GERROR_EVTQ_ABT = 0x4n;
const PROD_OVFLG = 0x8000_0000n;
const CMD_SYNC = 0x46;

function smmuQueue(c: DivergenceContext, baseRegister: number, entryBytes: number): { base: number; bytes: number } | undefined {
  const v = lastRegisterWrite(c, "smmuv3", baseRegister);
  if (v === undefined) return undefined;
  return { base: Number(v & 0x000f_ffff_ffff_ffe0n), bytes: entryBytes * 2 ** Number(v & 0x1fn) };
}

/** An event record read the model and QEMU answered with the same type: the two records. */
function smmuEventRecords(c: DivergenceContext): { expected: Uint8Array; actual: Uint8Array } | undefined {
  const mem = memoryAnswers(c);
  const q = smmuQueue(c, SMMU_EVTQ_BASE, 32);
  if (mem === undefined || q === undefined || mem.addr < q.base || mem.addr >= q.base + q.bytes || mem.expected.length < 16) return undefined;
  if ((mem.expected[0]! & 0xff) !== (mem.actual[0]! & 0xff)) return undefined;
  return mem;
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

/** Command opcodes QEMU 7.2 executes (smmuv3_cmdq_consume(): every other opcode is CERROR_ILL there too). */
const QEMU_EXECUTED_COMMANDS = new Set([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x28, 0x2a, 0x30, 0x46]);
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

/** CLASS (dword 3 bits 9:8), InD (bit 2) and PnU (bit 1) of a fault record. */
const RECORD_ATTRIBUTES = (3 << 8) | (1 << 2) | (1 << 1);

const smmuv3: QemuDifference[] = [
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
    summary: "A command of a defined opcode with a reserved field set or an invalid value (e.g. CMD_CFGI_STE with bit 74 set): the model stops the queue with CMDQ_CONS.ERR = CERROR_ILL and GERROR.CMDQ_ERR at it; QEMU 7.2 executes it and the commands behind it.",
    specification: "Arm SMMUv3 (IHI 0070), 7.1 Command queue errors: CERROR_ILL for a command that cannot be correctly consumed, including a valid command with a Reserved field or an invalid value used.",
    qemu: "hw/arm/smmuv3.c smmuv3_cmdq_consume(): each opcode reads its fields with CMD_* macros and checks none of its reserved bits.",
    matches: (c) => {
      const at = registerRead(c, "smmuv3");
      if (at === 0x9c) {
        if (typeof c.expected !== "bigint" || (c.expected & CONS_ERR) !== CERROR_ILL || typeof c.actual !== "bigint" || (c.actual & CONS_ERR) !== 0n) return false;
      } else if (at === SMMU_GERROR) {
        if (!differsOnlyIn(c, 0x1n) || ((c.expected as bigint) & 0x1n) === 0n) return false;
      } else return false;
      return smmuModelIllegalCommand(c);
    },
  },
  {
    id: "smmuv3-cmd-sync-msi-abort",
    vendor: "smmuv3",
    classification: "open",
    summary: "A CMD_SYNC whose completion MSI address lies outside memory: the model's MSI write aborts and it sets GERROR.MSI_CMDQ_ABT_ERR; QEMU 7.2 has no MSIs (IDR0.MSI = 0) and writes nothing, so nothing aborts.",
    specification: "Arm SMMUv3 (IHI 0070), CMD_SYNC (the completion MSI where SMMU_IDR0.MSI = 1) and SMMU_GERROR.MSI_CMDQ_ABT_ERR (an abort on a CMD_SYNC MSI write).",
    qemu: "hw/arm/smmuv3.c smmuv3_cmdq_consume(), case SMMU_CMD_SYNC: only the wired interrupt for CS = SIG_IRQ, no MSI write.",
    matches: (c) => {
      if (registerRead(c, "smmuv3") !== SMMU_GERROR || !differsOnlyIn(c, 0x10n) || ((c.expected as bigint) & 0x10n) === 0n) return false;
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
    },
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
    summary: "A CMD_SYNC with CS = SIG_IRQ completes without the MSI write (MSIData 0 over the command) the model's driver polls for: QEMU 7.2 has no MSIs (IDR0.MSI = 0), and the driver chose MSI polling from the model's IDR0.",
    specification: "Arm SMMUv3 (IHI 0070), CMD_SYNC: the completion MSI is written only where MSIs are supported (SMMU_IDR0.MSI).",
    qemu: "hw/arm/smmuv3.c smmuv3_cmdq_consume(), case SMMU_CMD_SYNC: with CS = SIG_IRQ it raises the wired CMD_SYNC interrupt; there is no MSI write.",
    matches: (c) => {
      const mem = memoryAnswers(c);
      const q = smmuQueue(c, SMMU_CMDQ_BASE, 16);
      if (mem === undefined || q === undefined || mem.addr < q.base || mem.addr >= q.base + q.bytes) return false;
      const d0 = dword(mem.actual, 0);
      return mem.expected.every((b) => b === 0) && (d0 & 0xff) === CMD_SYNC && ((d0 >>> 12) & 3) === 1;
    },
  },
  {
    id: "smmuv3-event-per-access",
    vendor: "smmuv3",
    classification: "target-deviates",
    summary: "One faulting DMA transaction produces one event per 4-byte access in QEMU (InputAddr, InputAddr + 4, …; a configuration error such as C_BAD_STREAMID repeated as it is) where the model records one: EVTQ_PROD runs ahead and the guest reads QEMU's extra records.",
    specification: "Arm SMMUv3 (IHI 0070), event queue and event records: an event is recorded for a transaction that faults; one transaction is one event (identical events may be merged, never multiplied).",
    qemu: "hw/arm/smmuv3.c smmuv3_translate() records an event on every call; the memory core (softmmu/physmem.c flatview_read_continue()/flatview_write_continue()) retries the failed transfer access by access through the unassigned region, translating each 4-byte piece again.",
    matches: (c) => {
      if (!multiWordFault(c)) return false;
      if (registerRead(c, "smmuv3") === SMMU_EVTQ_PROD) return differsOnlyIn(c, 0x000f_ffffn);
      // An event-queue slot holding one of QEMU's extra records: an F_* record for an address inside an earlier
      // blocked transfer of that StreamID (the model's queue has another record, or none, there).
      const mem = memoryAnswers(c);
      const q = smmuQueue(c, SMMU_EVTQ_BASE, 32);
      if (mem === undefined || q === undefined || mem.addr < q.base || mem.addr >= q.base + q.bytes || mem.actual.length < 32) return false;
      const type = mem.actual[0]!;
      // A record without an input address (C_BAD_STREAMID, C_BAD_STE, ...): QEMU's repeat of a record the model
      // wrote in an earlier slot of the queue, for a StreamID whose transfer was blocked.
      if (type >= 0x01 && type < 0x10) {
        const previous = c.trace.ops.slice(0, c.index).find((op) => op.op === "mem-read" && op.addr >= q.base && op.addr < mem.addr && (op.addr - q.base) % 32 === 0 && op.expect !== undefined && op.expect.length === 32 && op.expect.every((b, i) => b === mem.actual[i]));
        const sid = dword(mem.actual, 1);
        return previous !== undefined && c.trace.ops.slice(0, c.index).some((op) => op.op === "dma" && op.rid === sid && op.expect?.ok === false);
      }
      if (type < 0x10 || type > 0x13) return false;
      const sid = dword(mem.actual, 1);
      const input = dword(mem.actual, 4) + dword(mem.actual, 5) * 2 ** 32;
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
      const mem = memoryAnswers(c);
      const q = smmuQueue(c, SMMU_EVTQ_BASE, 32);
      if (mem === undefined || q === undefined || mem.addr < q.base || mem.addr >= q.base + q.bytes) return false;
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
    summary: "An event arriving at a full event queue raises GERROR.EVTQ_ABT_ERR in QEMU instead of toggling EVTQ_PROD.OVFLG.",
    specification: "Arm SMMUv3 (IHI 0070), event queue overflow: an event that finds the queue full is discarded and SMMU_EVENTQ_PROD.OVFLG is toggled; SMMU_GERROR.EVENTQ_ABT_ERR reports an abort while writing the queue (shared/spec arm-hyperv-virtio.md §1.10 and item 13 of §9).",
    qemu: "hw/arm/smmuv3.c smmuv3_write_eventq() returns MEMTX_ERROR when smmuv3_q_full(); smmuv3_record_event() then raises R_GERROR_EVENTQ_ABT_ERR_MASK; OVFLG is never set.",
    matches: (c) => {
      const at = registerRead(c, "smmuv3");
      if (at === SMMU_GERROR) return differsOnlyIn(c, GERROR_EVTQ_ABT) && ((c.actual as bigint) & GERROR_EVTQ_ABT) !== 0n;
      return at === SMMU_EVTQ_PROD && differsOnlyIn(c, PROD_OVFLG) && ((c.expected as bigint) & PROD_OVFLG) !== 0n;
    },
  },
];

/** Every known difference between the model and QEMU 7.2, for all three vendors. */
export const qemuDifferences: readonly QemuDifference[] = [...vtd, ...amdVi, ...smmuv3];

export function qemuDifferencesFor(vendor: string): QemuDifference[] {
  return qemuDifferences.filter((d) => d.vendor === vendor);
}

/** A known way QEMU fails (hangs, aborts) under a program, with who is wrong. */
export interface QemuFailure {
  readonly id: string;
  readonly vendor: QemuVendor;
  readonly classification: Classification;
  readonly summary: string;
  readonly specification: string;
  readonly qemu: string;
  /**
   * The operation of `trace` QEMU will not come back from, predicted from QEMU's own logic: difftest confirms the
   * prediction once per run on QEMU and then replays only what precedes it (a hang costs a deadline and a restart).
   */
  predict(trace: Trace): number | undefined;
  /** Whether this explains QEMU failing (`reason`) at operation `index` of `trace`. */
  matches(trace: Trace, reason: string, index?: number): boolean;
}

export const qemuFailures: readonly QemuFailure[] = [
  {
    id: "vtd-wait-sw-and-if-aborts",
    vendor: "vtd",
    classification: "target-deviates",
    summary: "An invalidation wait descriptor with both SW and IF set aborts QEMU 7.2 (an assertion: the VM is gone). Found by difftest (seed 1000, cases 647 and 963).",
    specification: "VT-d specification, 6.5.2.8 Invalidation Wait Descriptor: SW (status write) and IF (interrupt) are independent; both set asks for both. No guest input may stop the emulator.",
    qemu: "hw/i386/intel_iommu.c vtd_process_wait_desc(): the SW branch asserts that IF is clear.",
    // An abort is immediate (no deadline to spare), so there is nothing to predict.
    predict: () => undefined,
    matches: (trace, reason) => /vtd_process_wait_desc: Assertion/.test(reason) && vtdWaitDescriptors({ trace, index: trace.ops.length } as DivergenceContext).some((w) => (w.flags & 0x30) === 0x30),
  },
  {
    id: "amdvi-cmd-tail-beyond-buffer-hangs",
    vendor: "amd-vi",
    classification: "target-deviates",
    summary: "A guest write of a CommandBufferTail beyond the command buffer's length hangs QEMU 7.2 for good: the MMIO write never returns (so does a later Control or head write that restarts command processing with such a tail).",
    specification: "AMD IOMMU specification (pub. 48882), Command Buffer Tail Pointer Register: an offset into the buffer the Command Buffer Base Address Register sizes (ComLen); a value outside it is a guest error the IOMMU reports or ignores, not a reason to stop.",
    qemu: "hw/i386/amd_iommu.c amdvi_cmdbuf_run(), called from the tail, head and control writes: 'while (s->cmdbuf_head != s->cmdbuf_tail)' with the head wrapping at the buffer's length, so a tail beyond it is never reached.",
    predict: amdViCommandHangAt,
    matches: (trace, reason, index) => {
      if (!/hung/.test(reason)) return false;
      const at = amdViCommandHangAt(trace);
      return at !== undefined && (index === undefined || index === at);
    },
  },
];

/** The first catalogued failure `trace` will meet on QEMU, and where. */
export function predictedFailure(vendor: string, trace: Trace): { failure: QemuFailure; index: number } | undefined {
  let first: { failure: QemuFailure; index: number } | undefined;
  for (const failure of qemuFailures) {
    if (failure.vendor !== vendor) continue;
    const index = failure.predict(trace);
    if (index !== undefined && (first === undefined || index < first.index)) first = { failure, index };
  }
  return first;
}
