import type { Classification, DivergenceContext, KnownDifference } from "@viommu/trace";
import type { QemuVendor } from "../machines/qemu-machine.js";
import { differsOnlyIn, dword, following, lastDeviceOp, lastRegisterWrite, memoryAnswers, registerRead } from "./matchers.js";

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
const FSTS_FRI = 0xff00n;
/** FRCD dword 3 (bits 127:96): PV is bits 123:104, dword bits 27:8. */
const FRCD_PV = 0x0fff_ff00n;

/** Whether a VT-d fault-status or fault-record read shows a fault the model recorded and QEMU did not. */
function vtdFaultMissing(c: DivergenceContext): boolean {
  const at = registerRead(c, "vtd");
  if (typeof c.expected !== "bigint" || typeof c.actual !== "bigint") return false;
  if (at === VTD_FSTS) return (c.expected & FSTS_PPF) !== 0n && (c.actual & FSTS_PPF) === 0n;
  return inRange(at, VTD_FRCD0, VTD_FRCD_END) && c.expected !== 0n && c.actual === 0n;
}

/** The FRCD dword QEMU answered holds what the model put in a later fault-recording register (a few reads on). */
function vtdRecordInAnotherSlot(c: DivergenceContext): boolean {
  const at = registerRead(c, "vtd");
  if (!inRange(at, VTD_FRCD0, VTD_FRCD0 + 0xf) || typeof c.actual !== "bigint" || c.actual === 0n) return false;
  const block = c.trace.header.machine.iommus.find((b) => b.vendor === "vtd")!;
  const mask = at % 16 === 0xc ? ~FRCD_PV : ~0n;
  return following(c, 96).some(({ op }) => op.op === "mmio-read" && op.expect !== undefined && op.addr > block.base + VTD_FRCD0 + 0xf && op.addr <= block.base + VTD_FRCD_END && (op.addr - block.base) % 16 === at % 16 && (op.expect & mask) === ((c.actual as bigint) & mask));
}

const vtd: QemuDifference[] = [
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
      if (at === VTD_FSTS) return differsOnlyIn(c, FSTS_FRI);
      return vtdRecordInAnotherSlot(c);
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
    id: "vtd-readonly-write-cached-no-fault",
    vendor: "vtd",
    classification: "target-deviates",
    summary: "A device write through a read-only second-level mapping whose translation QEMU has cached (the device read through it first) is blocked but no fault is recorded (no FRCD, FSTS.PPF stays 0); before any read QEMU records reason 5 as it should.",
    specification:
      "VT-d specification, chapter 7 (a non-recoverable translation fault is recorded through primary fault logging unless the context entry's FPD is set) and its fault-reason table, 5h (a write request to a page without write permission); chapter 6: translations cached in the IOTLB keep the permissions each request is checked against.",
    qemu: "hw/i386/intel_iommu.c vtd_do_iommu_translate(): on an IOTLB hit it takes the cached access_flags and jumps to out: without comparing them with is_write, so vtd_report_dmar_fault() is never reached; the memory core then drops the write because the entry's perm lacks write.",
    matches: (c) => {
      if (!vtdFaultMissing(c)) return false;
      const last = lastDeviceOp(c);
      if (last === undefined || last.op.op !== "dma" || last.op.dir !== "write" || last.op.expect?.ok !== false) return false;
      const write = last.op;
      const page = Math.floor(write.iova / 4096);
      return c.trace.ops.slice(0, last.index).some((op) => op.op === "dma" && op.dir === "read" && op.rid === write.rid && op.expect?.ok === true && Math.floor(op.iova / 4096) <= page && page <= Math.floor((op.iova + op.len - 1) / 4096));
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

type AmdEventKind = "not-present" | "permission" | "interrupt" | "other";

/** The kind of an IO_PAGE_FAULT record (event code 2): flags I (bit 19 of dword 1), PR (bit 20). */
function amdEventKind(record: Uint8Array): AmdEventKind {
  const d1 = dword(record, 1);
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

/** CLASS (dword 3 bits 9:8), InD (bit 2) and PnU (bit 1) of a fault record. */
const RECORD_ATTRIBUTES = (3 << 8) | (1 << 2) | (1 << 1);

const smmuv3: QemuDifference[] = [
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
    summary: "One faulting DMA transaction produces one event per 4-byte access in QEMU (InputAddr, InputAddr + 4, …) where the model records one: EVTQ_PROD runs ahead and the guest reads QEMU's extra records.",
    specification: "Arm SMMUv3 (IHI 0070), event queue and event records: an event is recorded for a transaction that faults; one transaction is one event (identical events may be merged, never multiplied).",
    qemu: "hw/arm/smmuv3.c smmuv3_translate() records an event on every call; the memory core (softmmu/physmem.c flatview_read_continue()/flatview_write_continue()) retries the failed transfer access by access through the unassigned region, translating each 4-byte piece again.",
    matches: (c) => {
      if (!multiWordFault(c)) return false;
      if (registerRead(c, "smmuv3") === SMMU_EVTQ_PROD) return differsOnlyIn(c, 0x000f_ffffn);
      const r = smmuEventRecords(c);
      if (r === undefined) return false;
      // Same event type and StreamID; the InputAddr is a later 4-byte piece of a page the model's record names.
      const sameSid = dword(r.expected, 1) === dword(r.actual, 1);
      const expAddr = dword(r.expected, 4);
      const actAddr = dword(r.actual, 4);
      return sameSid && actAddr !== expAddr && Math.floor(actAddr / 4096) === Math.floor(expAddr / 4096) && (actAddr - expAddr) % 4 === 0;
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
