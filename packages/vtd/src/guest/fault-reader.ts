import { toHex64, type GuestEvent } from "@viommu/core";
import { faultReason, faultReasonName } from "../format/fault-reasons.js";
import { FaultStatus, Reg, type RegisterWindow } from "./mmio.js";

/**
 * Reads the fault-recording registers as Linux's `dmar_fault` does: starting at FSTS.FRI, each record with F
 * set is read (dword 3 first: F, FR, T1, PP; then the source id; then the page address), cleared by writing F
 * back, and the next index taken, wrapping after the last register; finally PFO, PPF and PRO are cleared.
 * Returns the decoded events and whether PFO (faults lost) was set.
 */
export function readFaultRecords(regs: RegisterWindow, frcdOffset: number, count: number): { events: GuestEvent[]; overflow: boolean } {
  const events: GuestEvent[] = [];
  const fsts = regs.read32(Reg.FSTS);
  const overflow = (fsts & FaultStatus.PFO) !== 0;
  if (fsts & FaultStatus.PPF) {
    let index = (fsts >>> 8) & 0xff;
    if (index >= count) index = 0;
    for (let n = 0; n < count; n++) {
      const at = frcdOffset + index * 16;
      const dw3 = regs.read32(at + 12);
      if (dw3 >>> 31 === 0) break;
      const dw2 = regs.read32(at + 8);
      const lo = regs.read32(at);
      const hi = regs.read32(at + 4);
      const code = dw3 & 0xff;
      const category = faultReason(code)?.category;
      const raw = toHex64(Uint32Array.of(lo, hi, dw2, dw3));
      const rid = dw2 & 0xffff;
      if (category === "interrupt-remapping") {
        events.push({ kind: "interrupt-fault", code, name: faultReasonName(code), rid, raw });
      } else {
        // FI [63:12]: the low half as unsigned (a page at or above 2 GiB has bit 31 set).
        const address = ((lo & 0xffff_f000) >>> 0) + hi * 2 ** 32;
        // T1 = 1 is a read; T2 = 1 (with T1 = 0) a page request.
        const write = ((dw3 >>> 30) & 1) === 0 && ((dw2 >>> 28) & 1) === 0;
        // PP (bit 95) and PV (bits 123:104): the PASID the request carried, or the RID_PASID it was walked for.
        const pasid = (dw2 >>> 31) & 1 ? (dw3 >>> 8) & 0xfffff : undefined;
        events.push({ kind: "dma-fault", code, name: faultReasonName(code), rid, address, write, ...(pasid !== undefined ? { pasid } : {}), raw });
      }
      regs.write32(at + 12, 0x8000_0000);
      index = (index + 1) % count;
    }
  }
  if (fsts & (FaultStatus.PFO | FaultStatus.PPF | FaultStatus.PRO)) regs.write32(Reg.FSTS, FaultStatus.PFO | FaultStatus.PPF | FaultStatus.PRO);
  return { events, overflow };
}
