import { toWords64 } from "@viommu/core";
import { faultRecordOffset } from "../format/cap.js";
import { iotlbRegisterBlockOffset } from "../format/ecap.js";
import { registerAt } from "../format/registers.js";
import type { EventInterrupt, FaultRecorder } from "./fault-recorder.js";
import type { InterruptRemapper } from "./interrupt-remapper.js";
import type { InvalidationQueue } from "./invalidation-queue.js";
import type { PageRequestQueue } from "./page-request-queue.js";

/** GCMD / GSTS bits. */
export const Gcmd = { CFI: 1 << 23, SIRTP: 1 << 24, IRE: 1 << 25, QIE: 1 << 26, WBF: 1 << 27, EAFL: 1 << 28, SFL: 1 << 29, SRTP: 1 << 30, TE: 1 << 31 } as const;
export const Gsts = { CFIS: 1 << 23, IRTPS: 1 << 24, IRES: 1 << 25, QIES: 1 << 26, WBFS: 1 << 27, AFLS: 1 << 28, FLS: 1 << 29, RTPS: 1 << 30, TES: 1 << 31 } as const;

/** What register writes make the device do. */
export interface RegisterEffects {
  /** GCMD.SRTP: latch RTADDR. */
  setRootTable(): void;
  /** GCMD.TE changed. */
  translation(enable: boolean): void;
  /** GCMD.QIE changed; false refuses (QI cannot be disabled with descriptors pending). */
  queuedInvalidation(enable: boolean): boolean;
  /** GCMD.IRE changed. */
  interruptRemapping(enable: boolean): void;
  /** GCMD.SIRTP: latch IRTA. */
  setInterruptTable(): void;
  /** IQT written. */
  tailWritten(value: bigint): void;
  /** FSTS bits cleared by software (IQE / ITE restart the queue). */
  statusCleared(bits: number): void;
  /** CCMD written with ICC set: a register-based context-cache invalidation; returns the actual granularity. */
  contextCommand(ccmd: bigint): number;
  /** IOTLB register written with IVT set: a register-based IOTLB invalidation; returns the actual granularity. */
  iotlbCommand(iotlb: bigint, iva: bigint): number;
}

export interface RegisterParts {
  readonly version: number;
  readonly cap: Uint32Array;
  readonly ecap: Uint32Array;
  readonly fro: number;
  readonly iro: number;
  /** ECAP.EIM: FEUADDR/IEUADDR/PEUADDR and IRTA.EIME writable. */
  readonly eim: boolean;
  /** ECAP.SMTS: IQA.DW writable. */
  readonly smts: boolean;
  readonly faults: FaultRecorder;
  readonly queue: InvalidationQueue;
  readonly remapper: InterruptRemapper;
  readonly prq: PageRequestQueue;
  readonly invalidationEvent: EventInterrupt;
}

export const RTADDR_MASK = 0xffff_ffff_ffff_fc00n;
export const IQA_MASK = 0xffff_ffff_ffff_f007n;
export const IQA_DW = 1n << 11n;
export const IRTA_MASK = 0xffff_ffff_ffff_f00fn;
export const IRTA_EIME = 1n << 11n;
export const PQA_MASK = 0xffff_ffff_ffff_f007n;
/** CCMD software-writable bits: ICC, CIRG, FM, SID, DID (CAIG is the hardware's answer). */
const CCMD_MASK = 0xe000_0003_ffff_ffffn;
/** The bits CCMD can hold once a command completed: ICC clear, CAIG [60:59] set by the hardware. */
export const CCMD_HELD = (CCMD_MASK & ~(1n << 63n)) | (3n << 59n);
/** IOTLB software-writable bits: IVT, IIRG, DR, DW, DID. */
const IOTLB_MASK = 0xb003_ffff_0000_0000n;
/** The bits the IOTLB register can hold once a command completed: IVT clear, IAIG [58:57] set by the hardware. */
export const IOTLB_HELD = (IOTLB_MASK & ~(1n << 63n)) | (3n << 57n);
export const IVA_MASK = 0xffff_ffff_ffff_f07fn;
/** Event data registers keep IMD [15:0] (EIMD is reserved since VT-d 3.3). */
export const EVENT_DATA_MASK = 0xffff;
export const EVENT_ADDRESS_MASK = 0xffff_fffc;

/**
 * The guest-visible register page of the emulated unit (VT-d chapter 11; ../shared/spec/x86.md A1): each
 * access is dispatched by offset and size. Read-only registers and bits ignore writes, reserved offsets read 0,
 * RW1C bits clear on 1, GCMD is write-only (reads 0) with SRTP and SIRTP acting on every write of 1 and TE,
 * QIE, IRE and CFI acting when the written bit differs from the status. A 4-byte access to a 64-bit register
 * reads or replaces its half; an 8-byte access to a pair of 32-bit registers is two 4-byte accesses.
 */
export class VtdRegisterFile {
  gsts = 0;
  rtaddr = 0n;
  ccmd = 0n;
  iva = 0n;
  iotlb = 0n;
  ics = 0;
  private readonly capValue: bigint;
  private readonly ecapValue: bigint;
  private readonly frcdBase: number;
  private readonly iotlbBase: number;

  constructor(
    private readonly parts: RegisterParts,
    private readonly effects: RegisterEffects,
  ) {
    this.capValue = toWords64(parts.cap)[0]!;
    this.ecapValue = toWords64(parts.ecap)[0]!;
    this.frcdBase = faultRecordOffset(parts.fro, 0);
    this.iotlbBase = iotlbRegisterBlockOffset(parts.iro);
  }

  read(offset: number, size: 4 | 8): bigint {
    if (size === 8) {
      if (this.is64(offset)) return this.read64(offset);
      return BigInt(this.read32(offset)) | (BigInt(this.read32(offset + 4)) << 32n);
    }
    const base = offset & ~7;
    if (this.is64(base)) {
      const v = this.read64(base);
      return (offset & 4 ? v >> 32n : v) & 0xffff_ffffn;
    }
    return BigInt(this.read32(offset));
  }

  write(offset: number, size: 4 | 8, value: bigint): void {
    if (size === 8) {
      if (this.is64(offset)) this.write64(offset, value & 0xffff_ffff_ffff_ffffn);
      else {
        this.write32(offset, Number(value & 0xffff_ffffn));
        this.write32(offset + 4, Number((value >> 32n) & 0xffff_ffffn));
      }
      return;
    }
    const base = offset & ~7;
    const v = value & 0xffff_ffffn;
    if (this.isFrcd(base)) {
      // F is write-1-to-clear: a dword write must not replay the other half's F bit.
      this.parts.faults.writeRecord(Math.floor((offset - this.frcdBase) / 16), ((offset - this.frcdBase) % 16) / 4, Number(v));
      return;
    }
    if (this.is64(base)) {
      const old = this.read64(base);
      this.write64(base, offset & 4 ? (old & 0xffff_ffffn) | (v << 32n) : (old & ~0xffff_ffffn) | v);
    } else this.write32(offset, Number(v));
  }

  private isFrcd(offset: number): boolean {
    return offset >= this.frcdBase && offset < this.frcdBase + 16 * this.parts.faults.count;
  }

  /** Whether a 64-bit register starts at this 8-byte aligned offset. */
  private is64(offset: number): boolean {
    if (offset % 8 !== 0) return false;
    if (offset === this.iotlbBase || offset === this.iotlbBase + 8 || this.isFrcd(offset)) return true;
    return registerAt(offset)?.width === 64;
  }

  private read64(offset: number): bigint {
    if (this.isFrcd(offset)) {
      const n = Math.floor((offset - this.frcdBase) / 16);
      const dword = ((offset - this.frcdBase) % 16) / 4;
      const f = this.parts.faults;
      return BigInt(f.readRecord(n, dword)) | (BigInt(f.readRecord(n, dword + 1)) << 32n);
    }
    if (offset === this.iotlbBase) return 0n; // IVA is write-only
    if (offset === this.iotlbBase + 8) return this.iotlb;
    const q = this.parts.queue;
    switch (offset) {
      case 0x08:
        return this.capValue;
      case 0x10:
        return this.ecapValue;
      case 0x20:
        return this.rtaddr;
      case 0x28:
        return this.ccmd;
      case 0x80:
        return BigInt(q.head);
      case 0x88:
        return BigInt(q.tail);
      case 0x90:
        return q.iqa;
      case 0xb0:
        return q.iqercd;
      case 0xb8:
        return this.parts.remapper.irta;
      case 0xc0:
        return BigInt(this.parts.prq.head);
      case 0xc8:
        return BigInt(this.parts.prq.tail);
      case 0xd0:
        return this.parts.prq.pqa;
      default:
        return 0n;
    }
  }

  private write64(offset: number, value: bigint): void {
    if (this.isFrcd(offset)) {
      const n = Math.floor((offset - this.frcdBase) / 16);
      const dword = ((offset - this.frcdBase) % 16) / 4;
      this.parts.faults.writeRecord(n, dword, Number(value & 0xffff_ffffn));
      this.parts.faults.writeRecord(n, dword + 1, Number(value >> 32n));
      return;
    }
    if (offset === this.iotlbBase) {
      this.iva = value & IVA_MASK;
      return;
    }
    if (offset === this.iotlbBase + 8) {
      this.iotlb = value & IOTLB_MASK;
      if (this.iotlb >> 63n) {
        const actual = this.effects.iotlbCommand(this.iotlb, this.iva);
        this.iotlb = (this.iotlb & ~(1n << 63n) & ~(3n << 57n)) | (BigInt(actual & 3) << 57n);
      }
      return;
    }
    switch (offset) {
      case 0x20:
        this.rtaddr = value & RTADDR_MASK;
        return;
      case 0x28:
        this.ccmd = value & CCMD_MASK;
        if (this.ccmd >> 63n) {
          const actual = this.effects.contextCommand(this.ccmd);
          this.ccmd = (this.ccmd & ~(1n << 63n) & ~(3n << 59n)) | (BigInt(actual & 3) << 59n);
        }
        return;
      case 0x88:
        this.effects.tailWritten(value);
        return;
      case 0x90:
        this.parts.queue.iqa = value & (this.parts.smts ? IQA_MASK | IQA_DW : IQA_MASK);
        return;
      case 0xb8:
        this.parts.remapper.irta = value & (this.parts.eim ? IRTA_MASK | IRTA_EIME : IRTA_MASK);
        return;
      case 0xc0:
        this.parts.prq.writeHead(value);
        return;
      case 0xc8:
        this.parts.prq.writeTail(value);
        return;
      case 0xd0:
        this.parts.prq.writeAddress(value & PQA_MASK);
        return;
      default:
        return; // CAP, ECAP, IQH, IQERCD and reserved offsets ignore writes
    }
  }

  private read32(offset: number): number {
    if (offset % 4 !== 0) return 0;
    const p = this.parts;
    switch (offset) {
      case 0x00:
        return p.version;
      case 0x18:
        return 0; // GCMD is write-only
      case 0x1c:
        return this.gsts >>> 0;
      case 0x34:
        return p.faults.fsts;
      case 0x38:
        return p.faults.event.control >>> 0;
      case 0x3c:
        return p.faults.event.data;
      case 0x40:
        return p.faults.event.address;
      case 0x44:
        return p.faults.event.upperAddress;
      case 0x9c:
        return this.ics;
      case 0xa0:
        return p.invalidationEvent.control >>> 0;
      case 0xa4:
        return p.invalidationEvent.data;
      case 0xa8:
        return p.invalidationEvent.address;
      case 0xac:
        return p.invalidationEvent.upperAddress;
      case 0xdc:
        return p.prq.prs;
      case 0xe0:
        return p.prq.event.control >>> 0;
      case 0xe4:
        return p.prq.event.data;
      case 0xe8:
        return p.prq.event.address;
      case 0xec:
        return p.prq.event.upperAddress;
      default:
        if (this.is64(offset & ~7)) return Number((this.read64(offset & ~7) >> (offset & 4 ? 32n : 0n)) & 0xffff_ffffn);
        return 0;
    }
  }

  private write32(offset: number, value: number): void {
    if (offset % 4 !== 0) return;
    const p = this.parts;
    const upperMask = p.eim ? 0xffff_ffff : 0;
    switch (offset) {
      case 0x18:
        this.writeGcmd(value >>> 0);
        return;
      case 0x34: {
        const cleared = p.faults.writeFsts(value);
        if (cleared) this.effects.statusCleared(cleared);
        return;
      }
      case 0x38:
        p.faults.event.writeControl(value);
        return;
      case 0x3c:
        p.faults.event.data = value & EVENT_DATA_MASK;
        return;
      case 0x40:
        p.faults.event.address = (value & EVENT_ADDRESS_MASK) >>> 0;
        return;
      case 0x44:
        p.faults.event.upperAddress = (value & upperMask) >>> 0;
        return;
      case 0x9c:
        // ICS.IWC is RW1C; with it clear, the completion interrupt is no longer pending.
        if (value & 1) {
          this.ics = 0;
          p.invalidationEvent.clearPending();
        }
        return;
      case 0xa0:
        p.invalidationEvent.writeControl(value);
        return;
      case 0xa4:
        p.invalidationEvent.data = value & EVENT_DATA_MASK;
        return;
      case 0xa8:
        p.invalidationEvent.address = (value & EVENT_ADDRESS_MASK) >>> 0;
        return;
      case 0xac:
        p.invalidationEvent.upperAddress = (value & upperMask) >>> 0;
        return;
      case 0xdc:
        p.prq.writePrs(value);
        return;
      case 0xe0:
        p.prq.event.writeControl(value);
        return;
      case 0xe4:
        p.prq.event.data = value & EVENT_DATA_MASK;
        return;
      case 0xe8:
        p.prq.event.address = (value & EVENT_ADDRESS_MASK) >>> 0;
        return;
      case 0xec:
        p.prq.event.upperAddress = (value & upperMask) >>> 0;
        return;
      default:
        if (this.is64(offset & ~7)) {
          const base = offset & ~7;
          const old = this.read64(base);
          const v = BigInt(value >>> 0);
          this.write64(base, offset & 4 ? (old & 0xffff_ffffn) | (v << 32n) : (old & ~0xffff_ffffn) | v);
        }
        return;
    }
  }

  /**
   * GCMD: software writes the status it wants with at most one command changed. SRTP and SIRTP act on every
   * write of 1; TE, QIE, IRE and CFI act when they differ from GSTS. WBF completes at once (CAP.RWBF = 0); SFL
   * and EAFL do nothing (no advanced fault logging, CAP.AFL = 0).
   */
  private writeGcmd(value: number): void {
    if (value & Gcmd.SRTP) {
      this.effects.setRootTable();
      this.gsts |= Gsts.RTPS;
    }
    if (value & Gcmd.SIRTP) {
      this.effects.setInterruptTable();
      this.gsts |= Gsts.IRTPS;
    }
    const want = (bit: number): boolean => (value & bit) !== 0;
    const has = (bit: number): boolean => (this.gsts & bit) !== 0;
    if (want(Gcmd.QIE) !== has(Gsts.QIES)) {
      if (this.effects.queuedInvalidation(want(Gcmd.QIE))) this.gsts ^= Gsts.QIES;
    }
    if (want(Gcmd.IRE) !== has(Gsts.IRES)) {
      this.gsts ^= Gsts.IRES;
      this.effects.interruptRemapping(want(Gcmd.IRE));
    }
    if (want(Gcmd.CFI) !== has(Gsts.CFIS)) {
      this.gsts ^= Gsts.CFIS;
      this.parts.remapper.compatibilityAllowed = want(Gcmd.CFI);
    }
    if (want(Gcmd.TE) !== has(Gsts.TES)) {
      this.gsts ^= Gsts.TES;
      this.effects.translation(want(Gcmd.TE));
    }
    this.gsts >>>= 0;
  }
}
