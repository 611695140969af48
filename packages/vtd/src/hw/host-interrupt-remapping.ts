import { err, HOST_OWNER, ok, type HostMemory, type InterruptResult, type MsiMessage, type Result } from "@viommu/core";
import { faultReasonName, VtdFaultReason } from "../format/fault-reasons.js";
import { encodeIrtePosted, irteHasReservedBits, irteMode, IrteMode, irteSourceIdValid, SourceValidationType } from "../format/irte.js";
import { encodeRemappableMsi, isRemappableMsi, remappableMsiIndex } from "../format/msi.js";
import { PI_DESC_BYTES, PI_DESC_ON, PI_DESC_SN, PiDescOffset } from "../format/posted-interrupt-descriptor.js";
import type { HostCpus } from "./host-cpus.js";

/** Entries of the host's interrupt remapping table (IRTA.S = 11): enough for the model's passthrough MSIs. */
export const HOST_IRT_ENTRIES = 4096;

/** What a posted IRTE says (Linux `struct irte` posted fields, set by `intel_ir_set_vcpu_affinity`). */
export interface PostedInterrupt {
  /** The requester id the IRTE verifies (SVT 01b, SQ 0). */
  readonly sid: number;
  /** The guest vector (VV). */
  readonly vector: number;
  /** Host physical address of the posted-interrupt descriptor (PDA, 64-byte aligned). */
  readonly descriptor: number;
  /** URG: notify even while SN suppresses notifications. */
  readonly urgent: boolean;
}

/** Control dword bits that are reserved ([15:2] and [31:24]) and the reserved dwords at the end (bytes 40–63). */
const PI_CONTROL_RESERVED = 0xff00_fffc;
const PI_FIRST_RESERVED_DWORD = 40;

/**
 * The host driver's interrupt remapping on a VT-d unit (drivers/iommu/intel/irq_remapping.c): a table in host
 * memory with x2APIC destinations, IRTEs the host programs for its passthrough devices, and the unit's remapping
 * of their MSIs. A posted IRTE (IM = 1, needs CAP.PI) makes the unit post the interrupt (VT-d §5.2.3): set the
 * vector's PIR bit in the descriptor at PDA; then, unless SN suppresses a non-urgent one, set ON and, if ON was
 * clear, send the notification event (NV to NDST). The host driver flushes the interrupt entry cache with every
 * IRTE it changes (`modify_irte` → `qi_flush_iec`), so entries are read from the table each time.
 */
export class HostInterruptRemapping {
  private table = 0;
  private readonly used = new Set<number>();
  private readonly raw = new Uint32Array(4);

  constructor(
    private readonly memory: HostMemory,
    private readonly cpus: HostCpus,
  ) {}

  /** Programs a posted IRTE (a new index) and returns the remappable MSI the device is to send (handle, SHV, sub-handle 0). */
  post(interrupt: PostedInterrupt): Result<MsiMessage> {
    if (interrupt.descriptor % PI_DESC_BYTES !== 0 || this.memory.ownerOf(interrupt.descriptor) !== HOST_OWNER) return err("EINVAL", "posted-interrupt descriptor not in host memory or not 64-byte aligned");
    if (this.table === 0) {
      const t = this.memory.allocate(HOST_OWNER, (HOST_IRT_ENTRIES * 16) / 4096);
      if (t === undefined) return err("ENOMEM", "no host memory for the interrupt remapping table");
      this.table = t;
    }
    let index = 0;
    while (index < HOST_IRT_ENTRIES && this.used.has(index)) index++;
    if (index >= HOST_IRT_ENTRIES) return err("ENOSPC", "the host interrupt remapping table is full");
    this.used.add(index);
    const irte = encodeIrtePosted({ P: 1, URG: interrupt.urgent ? 1 : 0, VV: interrupt.vector & 0xff, SVT: SourceValidationType.VERIFY_SID, SQ: 0, SID: interrupt.sid & 0xffff, pda: BigInt(interrupt.descriptor) });
    this.write(index, irte);
    const msi = encodeRemappableMsi(index, 0);
    return ok({ address: msi.addressLo + msi.addressHi * 2 ** 32, data: msi.data });
  }

  /** Clears the IRTE behind a message `post` returned (an MSI through it is then blocked). */
  release(msi: MsiMessage): void {
    const index = remappableMsiIndex(msi.address >>> 0, Math.floor(msi.address / 2 ** 32), msi.data >>> 0);
    if (index < 0 || !this.used.delete(index)) return;
    this.write(index, new Uint32Array(4));
  }

  /** IRTEs in use. */
  get entries(): number {
    return this.used.size;
  }

  private write(index: number, irte: Uint32Array): void {
    const at = this.table + index * 16;
    this.memory.write64Halves(at, irte[0]!, irte[1]!);
    this.memory.write64Halves(at + 8, irte[2]!, irte[3]!);
  }

  /** The unit's remapping of an MSI from requester `requesterId`; posts it when the IRTE says so. */
  remap(requesterId: number, msi: MsiMessage): InterruptResult {
    const lo = msi.address >>> 0;
    const hi = Math.floor(msi.address / 2 ** 32) >>> 0;
    // The host runs x2APIC with compatibility format blocked (Linux leaves GCMD.CFI clear).
    if (!isRemappableMsi(lo)) return fault(VtdFaultReason.IR_REQ_COMPAT, undefined);
    const index = remappableMsiIndex(lo, hi, msi.data >>> 0);
    if (index < 0) return fault(VtdFaultReason.IR_REQ_RSVD, undefined);
    if (index >= HOST_IRT_ENTRIES || this.table === 0) return fault(VtdFaultReason.IR_INDEX_OVER, index);
    const irte = this.raw;
    const at = this.table + index * 16;
    this.memory.read64Halves(at, irte);
    this.memory.read64Halves(at + 8, irte.subarray(2));
    if ((irte[0]! & 1) === 0) return fault(VtdFaultReason.IR_ENTRY_P, index);
    if (irteHasReservedBits(irte, true)) return fault(VtdFaultReason.IR_IRTE_RSVD, index);
    if (!irteSourceIdValid((irte[2]! >>> 18) & 3, (irte[2]! >>> 16) & 3, irte[2]! & 0xffff, requesterId)) return fault(VtdFaultReason.IR_SID_ERR, index);
    const vector = (irte[0]! >>> 16) & 0xff;
    if (irteMode(irte[0]!) !== IrteMode.POSTED) {
      const w0 = irte[0]!;
      return { ok: true, irq: { vector, destination: irte[1]! >>> 0, destinationMode: w0 & 4 ? "logical" : "physical", deliveryMode: (w0 >>> 5) & 7, trigger: w0 & 0x10 ? "level" : "edge" } };
    }
    // PDA[31:6] in IRTE bits [63:38] (the high dword's [31:6]), PDA[63:32] in bits [127:96].
    const pda = ((irte[1]! & 0xffff_ffc0) >>> 0) + irte[3]! * 2 ** 32;
    const urgent = (irte[0]! & (1 << 14)) !== 0;
    return this.postTo(pda, vector, urgent, index);
  }

  private postTo(pda: number, vector: number, urgent: boolean, index: number): InterruptResult {
    const m = this.memory;
    if (m.ownerOf(pda) !== HOST_OWNER || !m.isAllocated(pda)) return fault(VtdFaultReason.IR_PID_READ_ERR, index);
    const control = m.read32(pda + PiDescOffset.CONTROL);
    let reserved = control & PI_CONTROL_RESERVED;
    for (let off = PI_FIRST_RESERVED_DWORD; off < PI_DESC_BYTES; off += 4) reserved |= m.read32(pda + off);
    if (reserved !== 0) return fault(VtdFaultReason.IR_PID_RSVD, index);
    const pir = pda + PiDescOffset.PIR + (vector >>> 5) * 4;
    m.write32(pir, (m.read32(pir) | (1 << (vector & 31))) >>> 0);
    const nv = (control >>> 16) & 0xff;
    const ndst = m.read32(pda + PiDescOffset.NDST) >>> 0;
    if ((urgent || (control & PI_DESC_SN) === 0) && (control & PI_DESC_ON) === 0) {
      m.write32(pda + PiDescOffset.CONTROL, (control | PI_DESC_ON) >>> 0);
      this.cpus.interrupt(ndst, nv);
    }
    return { ok: true, irq: { vector, destination: ndst, destinationMode: "physical", deliveryMode: 0, trigger: "edge", posted: { descriptor: pda, urgent } } };
  }
}

function fault(code: number, index: number | undefined): InterruptResult {
  return { ok: false, fault: { code, name: faultReasonName(code), index } };
}
