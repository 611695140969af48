import type { GuestMemory, InterruptResult, MsiMessage } from "@viommu/core";
import { faultReason, faultReasonName, VtdFaultReason } from "../format/fault-reasons.js";
import { irteDestination, irteHasReservedBits, irteMode, IrteMode, irteSourceIdValid } from "../format/irte.js";
import { isRemappableMsi, remappableMsiIndex } from "../format/msi.js";
import { irtEntries } from "../format/registers.js";

/** An interrupt-remapping outcome, with whether a fault must be recorded (FPD suppresses qualified ones). */
export interface RemapOutcome {
  readonly result: InterruptResult;
  /** A blocked interrupt whose fault the IRTE's FPD suppresses. */
  readonly suppressed: boolean;
}

/** MSIs with bit 4 of the address clear carry their own destination and vector (Intel SDM §11.11). */
function compatibility(msi: MsiMessage): InterruptResult {
  return {
    ok: true,
    irq: {
      vector: msi.data & 0xff,
      destination: (msi.address >>> 12) & 0xff,
      destinationMode: msi.address & 4 ? "logical" : "physical",
      deliveryMode: (msi.data >>> 8) & 7,
      trigger: msi.data & 0x8000 ? "level" : "edge",
    },
  };
}

/**
 * Interrupt remapping (VT-d §5.1; ../shared/spec/x86.md A9): remappable requests index the IRT latched by
 * SIRTP, through an interrupt-entry cache that only IEC invalidations (or a new table) refresh, as hardware
 * caches IRTEs; compatibility-format requests pass only while GSTS.CFIS is set in xAPIC mode. Faults carry the
 * 0x20–0x26 reasons; the IRTE's FPD suppresses the qualified ones (0x22, 0x24, 0x26).
 */
export class InterruptRemapper {
  /** IRTA as software wrote it. */
  irta = 0n;
  enabled = false;
  compatibilityAllowed = false;
  private table = 0;
  private entries = 0;
  eime = false;
  /** The IRTA value SIRTP last latched (0 before the first). */
  latchedIrta = 0n;
  private readonly cache = new Map<number, Uint32Array>();
  /**
   * The stale-translation audit (VmmDeviceOptions.audit): called on each interrupt-entry-cache hit with what the
   * cached IRTE gave and what the IRTE in guest memory gives now.
   */
  auditHit: ((sid: number, index: number, cached: RemapOutcome, now: RemapOutcome) => void) | undefined;
  private readonly fresh = new Uint32Array(4);

  constructor(private readonly memory: GuestMemory) {}

  /** GCMD.SIRTP: latch IRTA (the cache keeps its entries: software flushes it with an IEC invalidation). */
  latch(eimAllowed: boolean): void {
    this.latchedIrta = this.irta;
    this.table = Number((this.irta & 0x000f_ffff_ffff_f000n) % (1n << 52n));
    this.entries = irtEntries(Number(this.irta & 0xfn));
    this.eime = eimAllowed && ((this.irta >> 11n) & 1n) === 1n;
  }

  /** IEC invalidation: global, or 2^im entries from `index` (aligned down). */
  invalidate(index?: number, im = 0): void {
    if (index === undefined) {
      this.cache.clear();
      return;
    }
    const count = 2 ** Math.min(im, 16);
    const first = index - (index % count);
    if (count > this.cache.size) {
      for (const k of [...this.cache.keys()]) if (k >= first && k < first + count) this.cache.delete(k);
    } else for (let i = first; i < first + count; i++) this.cache.delete(i);
  }

  /** Remaps an interrupt request from requester `sid`. */
  remap(sid: number, msi: MsiMessage): RemapOutcome {
    if (!this.enabled) return { result: compatibility(msi), suppressed: false };
    const lo = msi.address >>> 0;
    const hi = Math.floor(msi.address / 2 ** 32) >>> 0;
    if (!isRemappableMsi(lo)) {
      // x2APIC mode (EIME) blocks compatibility format whatever CFI says.
      if (this.compatibilityAllowed && !this.eime && hi === 0 && lo >>> 20 === 0xfee) return { result: compatibility(msi), suppressed: false };
      return remapFault(VtdFaultReason.IR_REQ_COMPAT, undefined);
    }
    const index = remappableMsiIndex(lo, hi, msi.data >>> 0);
    if (index < 0) return remapFault(VtdFaultReason.IR_REQ_RSVD, undefined);
    if (index >= this.entries) return remapFault(VtdFaultReason.IR_INDEX_OVER, index);
    let irte = this.cache.get(index);
    if (irte !== undefined) {
      const outcome = evaluateIrte(irte, sid, index, this.eime);
      if (this.auditHit !== undefined) {
        const now = this.peek(index, this.fresh) ? evaluateIrte(this.fresh, sid, index, this.eime) : remapFault(VtdFaultReason.IR_ROOT_INVAL, index);
        this.auditHit(sid, index, outcome, now);
      }
      return outcome;
    }
    const at = this.table + index * 16;
    if (!this.memory.hostReadable(at, 16)) return remapFault(VtdFaultReason.IR_ROOT_INVAL, index);
    irte = this.memory.readWords(at, new Uint32Array(4));
    this.cache.set(index, irte);
    return evaluateIrte(irte, sid, index, this.eime);
  }

  /** IRTEs in the latched table (0 before SIRTP latched one). */
  get size(): number {
    return this.entries;
  }

  /**
   * Reads IRTE `index` of the latched table from guest memory into `out` without caching it (the VMM re-deriving
   * what it built from the guest's entries after an invalidation); false when there is none to read.
   */
  peek(index: number, out: Uint32Array): boolean {
    if (!Number.isInteger(index) || index < 0 || index >= this.entries) return false;
    const at = this.table + index * 16;
    if (!this.memory.hostReadable(at, 16)) return false;
    this.memory.readWords(at, out);
    return true;
  }

  /** Entries cached, for tests. */
  get cached(): number {
    return this.cache.size;
  }

  snapshot(): { irta: string; latchedIrta: string; enabled: boolean; cfis: boolean; latched: boolean } {
    return { irta: this.irta.toString(), latchedIrta: this.latchedIrta.toString(), enabled: this.enabled, cfis: this.compatibilityAllowed, latched: this.entries > 0 };
  }

  /** Applies a checked state: the table `latchedIrta` names is latched (if one was), then IRTA takes its value. */
  restore(s: { irta: bigint; latchedIrta: bigint; enabled: boolean; cfis: boolean; latched: boolean }, eimAllowed: boolean): void {
    this.irta = s.latchedIrta;
    if (s.latched) this.latch(eimAllowed);
    else {
      this.latchedIrta = 0n;
      this.table = 0;
      this.entries = 0;
      this.eime = false;
    }
    this.irta = s.irta;
    this.enabled = s.enabled;
    this.compatibilityAllowed = s.cfis;
    this.cache.clear();
  }
}

function remapFault(code: number, index: number | undefined, fpd = false): RemapOutcome {
  return { result: { ok: false, fault: { code, name: faultReasonName(code), index } }, suppressed: fpd && (faultReason(code)?.qualified ?? false) };
}

/** What one IRTE makes of a remappable request from `sid` (VT-d §5.1.4: present, reserved bits, source id). */
function evaluateIrte(irte: Uint32Array, sid: number, index: number, eime: boolean): RemapOutcome {
  const fpd = (irte[0]! & 2) !== 0;
  if ((irte[0]! & 1) === 0) return remapFault(VtdFaultReason.IR_ENTRY_P, index, fpd);
  // The emulated unit has no posted interrupts (CAP.PI = 0): IM = 1 is a reserved value.
  if (irteHasReservedBits(irte, eime) || irteMode(irte[0]!) === IrteMode.POSTED) return remapFault(VtdFaultReason.IR_IRTE_RSVD, index, fpd);
  const svt = (irte[2]! >>> 18) & 3;
  const sq = (irte[2]! >>> 16) & 3;
  if (!irteSourceIdValid(svt, sq, irte[2]! & 0xffff, sid)) return remapFault(VtdFaultReason.IR_SID_ERR, index, fpd);
  const w0 = irte[0]!;
  return {
    result: {
      ok: true,
      irq: {
        vector: (w0 >>> 16) & 0xff,
        destination: irteDestination(irte[1]!, eime),
        destinationMode: w0 & 4 ? "logical" : "physical",
        deliveryMode: (w0 >>> 5) & 7,
        trigger: w0 & 0x10 ? "level" : "edge",
      },
    },
    suppressed: false,
  };
}
